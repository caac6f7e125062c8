"""Reports written beside a trained model, for people and for the model card.

    history.csv     one row per epoch: train / validation loss and metrics, learning rate, seconds
    curves.png      loss (train, validation) and the validation metrics per epoch
    confusion.csv   classifiers: counts, rows = true class, columns = predicted class
    confusion.png   the same as a picture (counts and row-normalised shading)
    per_class.csv   classifiers: precision, recall, F1 and support per class
    report.json     the final validation figures of the best model, how training stopped, speed

Every file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_history(out: Path, history: list[dict]) -> Path:
    import pandas as pd

    path = out / "history.csv"
    _atomic(path, lambda t: pd.DataFrame(history).to_csv(t, index=False, float_format="%.6g"))
    return path


def write_json(path: Path, obj: dict) -> Path:
    def w(t):
        with open(t, "w") as f:
            json.dump(obj, f, indent=2, default=float)
            f.write("\n")

    _atomic(path, w)
    return path


def plot_curves(out: Path, history: list[dict], metrics: list[str], title: str = "") -> Path:
    """``curves.png``: losses on the left, the validation ``metrics`` (0..1) on the right."""
    from ._png import line_panels

    ep = [r["epoch"] for r in history]
    img = line_panels([
        {"title": "loss", "x": ep, "series": [("train", [r["train_loss"] for r in history]), ("validation", [r["val_loss"] for r in history])]},
        {"title": "validation", "x": ep, "series": [(m.replace("_", " "), [r.get(f"val_{m}", np.nan) for r in history]) for m in metrics], "ylim": (0.0, 1.0)},
    ], title=title)
    path = out / "curves.png"
    _atomic(path, lambda t: img.save(t, format="PNG"))
    return path


def write_confusion(out: Path, cm: np.ndarray, classes: list[str], metrics: dict) -> list[Path]:
    """``confusion.csv``, ``confusion.png`` and ``per_class.csv`` of a classifier's validation."""
    import pandas as pd

    cm = np.asarray(cm, np.int64)
    frame = pd.DataFrame(cm, index=pd.Index(classes, name="true \\ predicted"), columns=classes)
    _atomic(out / "confusion.csv", lambda t: frame.to_csv(t))
    per = pd.DataFrame({
        "class": classes,
        "precision": [metrics[f"precision_{c}"] for c in classes],
        "recall": [metrics[f"recall_{c}"] for c in classes],
        "f1": [metrics[f"f1_{c}"] for c in classes],
        "support": cm.sum(1),
    })
    _atomic(out / "per_class.csv", lambda t: per.to_csv(t, index=False, float_format="%.4f"))
    from ._png import confusion_image

    img = confusion_image(cm, classes, f"accuracy {metrics['accuracy']:.3f}, balanced {metrics['balanced_accuracy']:.3f}")
    _atomic(out / "confusion.png", lambda t: img.save(t, format="PNG"))
    return [out / "confusion.csv", out / "confusion.png", out / "per_class.csv"]
