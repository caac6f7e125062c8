"""Score class predictions against known classes: accuracy, balanced accuracy, per class, confusion.

    evaluate_classes(pred_csv, truth_csv) -> summary dict

Tables are matched on the columns they share among ``image`` / ``t`` / ``z`` / ``label`` (object
level: an ``objects.csv`` of ``classify`` or ``segment --classifier`` against an ``image,label,class``
CSV) or on ``image`` alone (image level: ``predictions.csv`` against a ``path,class`` CSV, the path's
file stem being the image name).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError


def _read(path: Path, role: str):
    import pandas as pd

    if not path.is_file():
        raise InputError(f"The {role} table '{path}' does not exist", "Give a CSV file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"Cannot read the {role} table '{path}' ({type(exc).__name__})", "Give a CSV file") from None
    df.columns = [c.strip().lower() for c in df.columns]
    if "class" not in df.columns:
        raise InputError(f"The {role} table '{path}' has no 'class' column", "Give a table with a class column")
    return df


def evaluate_classes(pred_csv: str | os.PathLike, truth_csv: str | os.PathLike) -> dict:
    """Compare predicted and true classes; unmatched true rows count as errors (and are reported)."""
    import numpy as np

    from ..io.image import image_name
    from ..training.tasks import classification_metrics

    pred, truth = _read(Path(pred_csv), "predicted"), _read(Path(truth_csv), "true")
    if "image" not in truth.columns and "path" in truth.columns:
        truth["image"] = [image_name(Path(p)) for p in truth["path"]]
    if "image" in truth.columns:
        truth["image"] = [image_name(Path(p)) for p in truth["image"]]
    keys = [c for c in ("image", "t", "z", "label") if c in pred.columns and c in truth.columns]
    if "image" not in keys:
        raise InputError("The tables share no 'image' column to match rows on", "Give a predictions.csv / objects.csv and a CSV with image (or path) and class")
    merged = truth[keys + ["class"]].merge(pred[keys + ["class"]], on=keys, how="left", suffixes=("_true", "_pred"))
    merged["class_pred"] = merged["class_pred"].fillna("")
    classes = sorted(set(merged["class_true"]) | (set(merged["class_pred"]) - {""}))
    idx = {c: k for k, c in enumerate(classes)}
    seen = merged["class_pred"] != ""
    y_true = np.array([idx[c] for c in merged["class_true"][seen]], np.int64)
    y_pred = np.array([idx[c] for c in merged["class_pred"][seen]], np.int64)
    m = classification_metrics(y_true, y_pred, classes)
    n_missing = int((~seen).sum())
    m["accuracy"] = float((y_true == y_pred).sum() / max(1, len(merged)))  # a row without a prediction is an error
    return {"n": int(len(merged)), "n_unmatched": n_missing, "classes": classes, **m}
