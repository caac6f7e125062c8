"""Accuracy of the bundled presets on held-out synthetic sets (seeds 5000+, never used in training).

    python benchmarks/eval_presets.py [chromosomes] [cells] [fibrosis] [skeletal] [--n 40] [--out DIR] [--timing]

For each preset, four sets are made with ``api.synth``: ``fresh`` (the generator's defaults, a new
seed) and three with its parameters moved a little: ``dense`` (density x1.3), ``faint`` (contrast
x0.7) and ``larger`` (every length x1.15). Each set is run through ``api.segment(model=preset)``
(segmentation, then the preset's classifier, then its counts), exactly as the CLI does, and scored
against the set's ``truth.csv`` / ``objects_truth.csv`` / ``masks/``:

* chromosomes: chromosome count per spread (exact rate, within-one rate, mean absolute error),
  the ``count_is_46`` flag's accuracy, object F1 at IoU 0.5, and the class (chromosome / nucleus /
  debris; a ``chromosome_pair`` or ``chromosome_piece`` is chromosome) of every matched object:
  accuracy and macro-F1; the classifier alone on the true masks too;
* cells: cell F1 at IoU 0.5, phase accuracy, macro-F1 and recall of every phase over matched cells
  (and on the true masks), the confusion matrix written as ``<out>/<preset>_<set>_confusion.csv``;
* fibrosis (sets: ``dense`` = more fibrosis, ``faint`` = paler stain, ``larger`` = magnification
  x1.15): the share of images whose ``fraction_fibrosis`` is within 3 percentage points of the
  truth (the acceptance figure), its mean and largest error, pixel accuracy and IoU per class.

``skeletal`` (mouse X-rays) runs :mod:`eval_skeletal` (its own sets and figures, ``--n`` mice per set; see
that script) and prints its last line.

``--timing`` adds, on one 2048 x 2048 image, the seconds of segmenting alone and of segmenting and
classifying (median of 3), and their ratio. Prints one JSON line per preset (the acceptance figures
of the issue under ``"sets"``), nothing timed is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_impc_dl import api  # noqa: E402
from napari_impc_dl.measure.evaluate import read_labels  # noqa: E402
from napari_impc_dl.measure.matching import match_instances  # noqa: E402
from napari_impc_dl.presets import PHASES  # noqa: E402

SETS = {"fresh": {}, "dense": {"density": 1.3}, "faint": {"contrast": 0.7}, "larger": {"scale": 1.15}}
CLASSES = {"chromosomes": ["chromosome", "nucleus", "debris"], "cells": list(PHASES)}
SEED0 = {"chromosomes": 5000, "cells": 6000, "fibrosis": 7000}


def _kind(cls: str) -> str:
    """The truth's class of a predicted one: a merged pair or a piece of a cut chromosome is chromosome material
    (they change the count, scored apart, not the class)."""
    return "chromosome" if cls.startswith("chromosome") else cls


def _metrics(y_true: list[str], y_pred: list[str], classes: list[str]) -> dict:
    K = len(classes)
    idx = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((K, K), int)
    for t, p in zip(y_true, y_pred):
        if p in idx:
            cm[idx[t], idx[p]] += 1
        else:  # an object the classifier did not see counts as wrong
            cm[idx[t], (idx[t] + 1) % K] += 1
    tp = np.diag(cm).astype(float)
    sup, pred = cm.sum(1), cm.sum(0)
    rec = np.divide(tp, sup, out=np.zeros(K), where=sup > 0)
    prec = np.divide(tp, pred, out=np.zeros(K), where=pred > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(K), where=(prec + rec) > 0)
    present = sup > 0
    return {
        "accuracy": round(float(tp.sum() / max(1, cm.sum())), 4),
        "macro_f1": round(float(f1[present].mean()), 4) if present.any() else 0.0,
        "recall": {c: round(float(rec[i]), 4) for i, c in enumerate(classes) if present[i]},
        "confusion": cm,
    }


def _score_fibrosis(folder: Path, out: Path) -> dict:
    """The fibrosis preset: its fraction against the truth per image, and the pixel classes."""
    import pandas as pd

    from napari_impc_dl.training.semantic import semantic_metrics

    images = sorted((folder / "images").glob("*.tif"))
    api.segment(images, out, model="fibrosis")
    counts = pd.read_csv(out / "counts.csv").set_index("image")
    truth = pd.read_csv(folder / "truth.csv").set_index("image")
    err = (counts.loc[truth.index, "fraction_fibrosis"] - truth["fraction_fibrosis"]).abs()
    classes = ["background", "tissue", "fibrosis"]
    cm = np.zeros((3, 3), np.int64)
    for img in images:
        pred, true = read_labels(out / f"{img.stem}_labels.tif"), read_labels(folder / "masks" / img.name)
        cm += np.bincount(true.ravel().astype(np.int64) * 3 + pred.ravel(), minlength=9).reshape(3, 3)
    m = semantic_metrics(cm, classes, np.zeros(0), [])
    return {
        "images": len(images), "within_3pp": round(float((err <= 0.03).mean()), 4), "fraction_mae_pp": round(100 * float(err.mean()), 2),
        "fraction_max_error_pp": round(100 * float(err.max()), 2), "true_fraction_range": [round(float(truth["fraction_fibrosis"].min()), 3), round(float(truth["fraction_fibrosis"].max()), 3)],
        "pixel_accuracy": round(m["accuracy"], 4), "miou": round(m["miou"], 4), **{f"iou_{c}": round(m[f"iou_{c}"], 4) for c in classes},
    }


def _score_set(preset: str, folder: Path, out: Path) -> dict:
    import pandas as pd

    if preset == "fibrosis":
        return _score_fibrosis(folder, out)
    images = sorted((folder / "images").glob("*.tif"))
    api.segment(images, out, model=preset)
    counts = pd.read_csv(out / "counts.csv").set_index("image")
    truth = pd.read_csv(folder / "truth.csv").set_index("image")
    objects = pd.read_csv(out / "objects.csv")
    true_obj = pd.read_csv(folder / "objects_truth.csv")
    tp = n_true = n_pred = 0
    y_true, y_pred = [], []
    for img in images:
        pred_lab, true_lab = read_labels(out / f"{img.stem}_labels.tif"), read_labels(folder / "masks" / img.name)
        m = match_instances(pred_lab, true_lab)
        tp, n_true, n_pred = tp + m.tp, n_true + m.n_true, n_pred + m.n_pred
        pc = objects[objects.image == img.stem].set_index("label")["class"].to_dict()
        tc = true_obj[true_obj.image == img.stem].set_index("label")["class"].to_dict()
        for t_id, p_id, _ in m.matched:
            y_true.append(tc[int(t_id)])
            y_pred.append(_kind(str(pc.get(int(p_id), ""))))
    f1 = 2 * tp / max(1, n_true + n_pred)
    classes = CLASSES[preset]
    on_matched = _metrics(y_true, y_pred, classes)
    # the classifier alone, on the true masks
    cls_out = out.parent / f"{out.name}-true-masks"
    api.classify(images, cls_out, model=preset, labels=[folder / "masks" / p.name for p in images])
    alone = pd.read_csv(cls_out / "objects.csv").merge(true_obj, on=["image", "label"], suffixes=("", "_true"))
    on_truth = _metrics(list(alone["class_true"]), [_kind(str(v)) for v in alone["class"].fillna("")], classes)
    row = {"images": len(images), "objects_true": int(n_true), "object_f1": round(f1, 4)}
    if preset == "chromosomes":
        err = (counts.loc[truth.index, "n_chromosome"] - truth["n_chromosome"]).abs()
        row |= {
            "count_exact": round(float((err == 0).mean()), 4), "count_within_one": round(float((err <= 1).mean()), 4),
            "count_mae": round(float(err.mean()), 3),
            "flag_accuracy": round(float((counts.loc[truth.index, "count_is_46"].astype(bool) == truth["count_is_46"].astype(bool)).mean()), 4),
            "class_accuracy": on_matched["accuracy"], "class_macro_f1": on_matched["macro_f1"],
            "class_accuracy_true_masks": on_truth["accuracy"], "class_macro_f1_true_masks": on_truth["macro_f1"],
        }
    else:
        row |= {
            "phase_accuracy": on_matched["accuracy"], "phase_macro_f1": on_matched["macro_f1"], "phase_recall": on_matched["recall"],
            "phase_accuracy_true_masks": on_truth["accuracy"], "phase_macro_f1_true_masks": on_truth["macro_f1"], "phase_recall_true_masks": on_truth["recall"],
            "mitotic_index_mae": round(float((counts.loc[truth.index, "mitotic_index"] - truth["mitotic_index"]).abs().mean()), 4),
        }
        cm = pd.DataFrame(on_matched["confusion"], index=[f"true_{c}" for c in classes], columns=[f"pred_{c}" for c in classes])
        cm.to_csv(out.parent / f"{preset}_{out.name}_confusion.csv")
    return row


def _timing(preset: str, work: Path) -> dict:
    img = api.synth(preset, 1, work / "timing", size=2048, seed=SEED0[preset] + 99)[0]
    secs = {}
    for what, clf in (("segment", "none"), ("segment_classify", None)):
        runs = []
        for k in range(3):
            t0 = time.perf_counter()
            api.segment([img], work / f"t-{what}-{k}", model=preset, classifier=clf)
            runs.append(time.perf_counter() - t0)
        secs[what] = round(statistics.median(runs), 2)
    return {"image": "2048x2048", "seconds_segment": secs["segment"], "seconds_segment_classify": secs["segment_classify"], "ratio": round(secs["segment_classify"] / secs["segment"], 2)}


def _passes(preset: str, sets: dict) -> dict:
    if preset == "fibrosis":
        return {name: bool(s["within_3pp"] >= 0.9) for name, s in sets.items()}
    if preset == "chromosomes":
        return {name: bool(s["count_within_one"] >= 0.9 and s["count_exact"] >= 0.6 and s["object_f1"] >= 0.9 and s["class_accuracy"] >= 0.95) for name, s in sets.items()}
    return {name: bool(s["object_f1"] >= 0.85 and s["phase_accuracy"] >= 0.85 and s["phase_macro_f1"] >= 0.75 and min(s["phase_recall"].values()) >= 0.6) for name, s in sets.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("presets", nargs="*", default=["chromosomes", "cells", "fibrosis", "skeletal"], choices=["chromosomes", "cells", "fibrosis", "skeletal"])
    ap.add_argument("--n", type=int, default=40, help="images per set (default 40)")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--out", type=Path, default=None, help="keep the sets, outputs and confusion matrices here")
    ap.add_argument("--timing", action="store_true", help="also time segment vs segment + classify on a 2048^2 image")
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="eval-presets-"))
    for preset in args.presets:
        t0 = time.time()
        if preset == "skeletal":
            sys.path.insert(0, str(Path(__file__).parent))
            import eval_skeletal

            sets = {name: eval_skeletal.run_set(name, args.n, work / "skeletal") for name in eval_skeletal.SETS}
            print(json.dumps({"preset": "skeletal", "sets": sets, "seconds": round(time.time() - t0, 1)}), flush=True)
            continue
        sets = {}
        for k, name in enumerate(args.sets):
            folder = work / preset / f"{name}-data"
            if not (folder / "truth.csv").is_file():
                api.synth(preset, args.n, folder, seed=SEED0[preset] + k, **SETS[name])
            sets[name] = _score_set(preset, folder, work / preset / name)
        line = {"preset": preset, "sets": sets, "passes": _passes(preset, sets), "seconds": round(time.time() - t0, 1)}
        if args.timing and preset != "fibrosis":
            line["timing"] = _timing(preset, work / preset)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
