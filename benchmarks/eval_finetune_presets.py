"""Fine-tuning a preset's starters on a few annotated images of a new domain: the gain it buys.

    python benchmarks/eval_finetune_presets.py [chromosomes] [cells] [--n-train 16] [--minutes 3]

The "user's own images" are a synthetic domain moved away from the one the starters were trained
on (``scale`` x1.3: a higher magnification, ``contrast`` x0.6: fainter staining, ``density``
x1.2), seeds 7000+ (never used in training). The starter pair is scored on a held-out set of that
domain, then both models are fine-tuned from the preset with the project's ``train`` verb
(``--from <preset>``, a few minutes each on the CPU) on ``--n-train`` annotated images, exactly as
the user guide shows, and the fine-tuned pair is scored on the same held-out set. Prints one JSON
line per preset: object F1 at IoU 0.5 and class accuracy / macro-F1 of matched objects, before and
after, and the minutes spent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from napari_impc_dl import api  # noqa: E402
from eval_presets import CLASSES, _metrics  # noqa: E402

SHIFT = {"scale": 1.3, "contrast": 0.6, "density": 1.2}
SEEDS = {"chromosomes": (7000, 7100), "cells": (7200, 7300)}


def _score(folder: Path, out: Path, model, classifier, preset: str) -> dict:
    import pandas as pd

    from napari_impc_dl.measure.evaluate import read_labels
    from napari_impc_dl.measure.matching import match_instances

    images = sorted((folder / "images").glob("*.tif"))
    api.segment(images, out, model=model, classifier=classifier)
    objects, truth = pd.read_csv(out / "objects.csv"), pd.read_csv(folder / "objects_truth.csv")
    tp = n = 0
    yt, yp = [], []
    for img in images:
        m = match_instances(read_labels(out / f"{img.stem}_labels.tif"), read_labels(folder / "masks" / img.name))
        tp, n = tp + m.tp, n + m.n_true + m.n_pred
        pc = objects[objects.image == img.stem].set_index("label")["class"].to_dict()
        tc = truth[truth.image == img.stem].set_index("label")["class"].to_dict()
        yt += [tc[int(t)] for t, _, _ in m.matched]
        yp += [str(pc.get(int(p), "")) for _, p, _ in m.matched]
    cls = _metrics(yt, yp, CLASSES[preset])
    return {"object_f1": round(2 * tp / max(1, n), 4), "class_accuracy": cls["accuracy"], "class_macro_f1": cls["macro_f1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("presets", nargs="*", default=["chromosomes", "cells"], choices=["chromosomes", "cells"])
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--n-test", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=3.0, help="fine-tuning budget of each model (default 3)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="finetune-presets-"))
    for preset in args.presets:
        s_train, s_test = SEEDS[preset]
        own, test = work / preset / "own", work / preset / "test"
        api.synth(preset, args.n_train, own, seed=s_train, **SHIFT)
        api.synth(preset, args.n_test, test, seed=s_test, **SHIFT)
        before = _score(test, work / preset / "before", preset, None, preset)
        t0 = time.time()
        seg = api.train_segmentation(work / preset / "seg", images=own / "images", masks=own / "masks", from_model=preset, epochs=8, time_limit_min=args.minutes, patch=256, lr=1e-3, seed=0, contact_weight=5.0)
        cls = api.train_classification(work / preset / "cls", data=own / "objects_truth.csv", images=own / "images", labels=own / "masks", level="object",
                                       from_model=preset, epochs=15, time_limit_min=args.minutes, lr=5e-4, seed=0)
        minutes = (time.time() - t0) / 60
        after = _score(test, work / preset / "after", seg.model, cls.model, preset)
        print(json.dumps({"preset": preset, "domain": SHIFT, "n_train": args.n_train, "n_test": args.n_test, "before": before, "after": after, "fine_tune_minutes": round(minutes, 1)}), flush=True)


if __name__ == "__main__":
    main()
