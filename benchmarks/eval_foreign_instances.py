"""Instances from foreign-shaped models: F1@0.5 of our nuclei starter as shipped (foreground + distance head)
against the same network exported as a foreground-only package and as a foreground + boundary package
(tests/zoo_packages.py: build_starter_variant), each through `segment` with the instance method and the
diameter it picks itself, on held-out synthetic nuclei: dense, sparse, small and large.

    .venv/bin/python benchmarks/eval_foreign_instances.py [--n 8] [--size 320]

Prints a table and, last, one JSON object: per set the mean F1 of each model and the gap to the two-head
model, plus the estimated diameters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the package builders the tests use

SETS = {
    "dense": {"density": 0.45},
    "sparse": {"density": 0.08},
    "small": {"density": 0.3, "scale": 0.8},
    "large": {"density": 0.3, "scale": 1.25},
}


def main() -> None:
    import numpy as np

    from napari_impc_dl import api
    from napari_impc_dl.inference.loading import load_model
    from napari_impc_dl.measure.matching import match_instances
    from napari_impc_dl.synthetic.nuclei import make_nuclei_image
    from napari_impc_dl.zoo.adapter import load_package
    from zoo_packages import build_starter_variant

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="images per set")
    ap.add_argument("--size", type=int, default=320, help="image side")
    a = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        variants = {v: build_starter_variant(Path(tmp), v) for v in ("foreground", "boundary")}
        models = {"two-head": load_model("nuclei", device="cpu"), **{v: load_package(p) for v, p in variants.items()}}
        result = {}
        print(f"{'set':8s} {'two-head':>9s} {'foreground':>11s} {'boundary':>9s}  diameters (estimated)")
        for name, kw in SETS.items():
            f1 = {k: [] for k in models}
            diam = []
            for i in range(a.n):
                img, gt = make_nuclei_image((a.size, a.size), seed=90_000 + 100 * list(SETS).index(name) + i, **kw)
                for k, m in models.items():
                    res = api.segment_image(img, m)
                    f1[k].append(match_instances(res.labels, gt).f1)
                    if k == "foreground":
                        diam.append(res.params["diameter"])
            mean = {k: round(float(np.mean(v)), 4) for k, v in f1.items()}
            result[name] = {**mean, "gap_foreground": round(mean["two-head"] - mean["foreground"], 4), "gap_boundary": round(mean["two-head"] - mean["boundary"], 4), "diameter_median": float(np.median(diam))}
            print(f"{name:8s} {mean['two-head']:9.3f} {mean['foreground']:11.3f} {mean['boundary']:9.3f}  {np.round(diam, 1).tolist()}")
    worst = max(max(r["gap_foreground"], r["gap_boundary"]) for r in result.values())
    print(json.dumps({"sets": result, "images_per_set": a.n, "size": a.size, "worst_gap": round(worst, 4), "within_0.05": worst <= 0.05, "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
