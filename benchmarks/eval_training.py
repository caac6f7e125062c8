"""Accuracy of training on the CPU, end to end through the facade the CLI and the widgets call.

    python benchmarks/eval_training.py scratch    # synth nuclei 64 x 256^2 -> train <= 10 min -> F1 on 20 unseen images
    python benchmarks/eval_training.py finetune   # the bundled starter on nuclei 2x larger and 4x dimmer: F1 before / after <= 5 min
    python benchmarks/eval_training.py objects    # rods / nuclei / debris from scratch <= 10 min -> accuracy on 30 unseen images
    python benchmarks/eval_training.py images     # X-ray-like dorsoventral vs lateral views <= 10 min -> accuracy on 100 unseen images
    python benchmarks/eval_training.py all [--work DIR] [--minutes M]

Each experiment's training set and held-out set come from different seeds (never the seeds the
starter model or the tests use). ``--minutes`` is the training time limit (default: 9, and 4.5 for
``finetune``), wall clock, the final validation included in the run but not in the limit. The
last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from napari_impc_dl import api  # noqa: E402


def _log(rec: dict) -> None:
    if rec.get("kind") == "epoch":
        figs = " ".join(f"{k[4:]}={v:.3f}" for k, v in rec.items() if k in ("val_loss", "val_f1", "val_accuracy"))
        print(f"  epoch {rec['epoch']}: train_loss={rec['train_loss']:.3f} {figs} ({rec['seconds']:.1f}s)", file=sys.stderr, flush=True)


def _seg_f1(model, images: Path, masks: Path, out: Path) -> float:
    paths = sorted(images.glob("*.tif"))
    api.segment(paths, out, model=model, device="cpu")
    return api.evaluate(out, masks, out_csv=out / "evaluation.csv")["f1_mean"]


def scratch(work: Path, minutes: float) -> dict:
    api.synth("nuclei", 64, work / "train", size=256, seed=11)
    api.synth("nuclei", 20, work / "test", size=256, seed=12)
    t0 = time.perf_counter()
    r = api.train_segmentation(work / "model", images=work / "train/images", masks=work / "train/masks", time_limit_min=minutes, device="cpu", progress=_log)
    train_s = time.perf_counter() - t0
    f1 = _seg_f1(work / "model", work / "test/images", work / "test/masks", work / "pred")
    return {"scratch_f1_mean": round(f1, 4), "scratch_train_s": round(train_s, 1), "scratch_epochs": len(r.history), "scratch_stopped": r.stopped, "scratch_val_f1": round(r.metrics["f1"], 4)}


def _shifted(out: Path, n: int, seed: int) -> None:
    """Nuclei twice as large (``scale=2``) and four times dimmer over the same camera offset, more read noise."""
    import tifffile

    from napari_impc_dl.synthetic import dataset_image_seed, make_nuclei_image

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = dataset_image_seed(seed, i)
        img, lab = make_nuclei_image((256, 256), s, scale=2.0)
        rng = np.random.default_rng(s % 2**32)
        base = float(np.percentile(img, 1))
        dim = base + (img.astype(np.float32) - base) / 4 + rng.normal(0, 3, img.shape)
        tifffile.imwrite(out / "images" / f"big_{seed}_{i:04d}.tif", np.clip(np.rint(dim), 0, 65535).astype(np.uint16))
        tifffile.imwrite(out / "masks" / f"big_{seed}_{i:04d}.tif", lab, compression="zlib")


def finetune(work: Path, minutes: float) -> dict:
    _shifted(work / "train", 32, 21)
    _shifted(work / "test", 20, 22)
    before = _seg_f1("nuclei", work / "test/images", work / "test/masks", work / "pred_before")
    t0 = time.perf_counter()
    r = api.train_segmentation(work / "model", images=work / "train/images", masks=work / "train/masks", from_model="nuclei", time_limit_min=minutes, device="cpu", progress=_log)
    train_s = time.perf_counter() - t0
    after = _seg_f1(work / "model", work / "test/images", work / "test/masks", work / "pred_after")
    return {"finetune_f1_before": round(before, 4), "finetune_f1_after": round(after, 4), "finetune_train_s": round(train_s, 1), "finetune_epochs": len(r.history)}


def objects(work: Path, minutes: float) -> dict:
    api.synth("shapes", 80, work / "train", size=256, seed=31)
    api.synth("shapes", 30, work / "test", size=256, seed=32)
    t0 = time.perf_counter()
    r = api.train_classification(work / "model", data=work / "train/classes.csv", images=work / "train/images", labels=work / "train/labels", level="object", time_limit_min=minutes, device="cpu", progress=_log)
    train_s = time.perf_counter() - t0
    api.classify(sorted((work / "test/images").glob("*.tif")), work / "pred", model=work / "model", labels=work / "test/labels", device="cpu")
    s = api.evaluate(work / "pred/objects.csv", work / "test/classes.csv")
    return {"objects_accuracy": round(s["accuracy"], 4), "objects_balanced_accuracy": round(s["balanced_accuracy"], 4), "objects_n": s["n"], "objects_confusion": s["confusion"], "objects_classes": s["classes"], "objects_train_s": round(train_s, 1), "objects_epochs": len(r.history)}


def images(work: Path, minutes: float) -> dict:
    api.synth("views", 60, work / "train", size=128, seed=41)
    paths = api.synth("views", 50, work / "test", size=128, seed=42)
    t0 = time.perf_counter()
    r = api.train_classification(work / "model", data=work / "train", level="image", size=128, time_limit_min=minutes, device="cpu", progress=_log)
    train_s = time.perf_counter() - t0
    api.classify(paths, work / "pred", model=work / "model", device="cpu")
    truth = work / "truth.csv"
    truth.write_text("path,class\n" + "".join(f"{p.name},{p.parent.name}\n" for p in paths))
    s = api.evaluate(work / "pred/predictions.csv", truth)
    return {"images_accuracy": round(s["accuracy"], 4), "images_n": s["n"], "images_confusion": s["confusion"], "images_train_s": round(train_s, 1), "images_epochs": len(r.history)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=["scratch", "finetune", "objects", "images", "all"])
    ap.add_argument("--work", type=Path, default=None, help="keep data and models here (default: a temporary folder, removed)")
    ap.add_argument("--minutes", type=float, default=None)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="impc-eval-"))
    todo = ["scratch", "finetune", "objects", "images"] if a.experiment == "all" else [a.experiment]
    figures: dict = {}
    try:
        for name in todo:
            minutes = a.minutes or (4.5 if name == "finetune" else 9.0)
            print(f"{name}: training for at most {minutes} min", file=sys.stderr, flush=True)
            figures.update(globals()[name](work / name, minutes))
            print(json.dumps(figures), file=sys.stderr, flush=True)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
