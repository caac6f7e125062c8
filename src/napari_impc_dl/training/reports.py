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


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def plot_curves(out: Path, history: list[dict], metrics: list[str], title: str = "") -> Path:
    """``curves.png``: losses on the left, the validation ``metrics`` (0..1) on the right."""
    fig = _figure(9, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [r["epoch"] for r in history]
    ax1.plot(ep, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    ax1.plot(ep, [r["val_loss"] for r in history], "o-", ms=3, label="validation")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(), ax1.grid(alpha=0.3)
    for m in metrics:
        ax2.plot(ep, [r.get(f"val_{m}", np.nan) for r in history], "o-", ms=3, label=m.replace("_", " "))
    ax2.set_ylim(0, 1.02), ax2.set_xlabel("epoch"), ax2.set_ylabel("validation"), ax2.legend(), ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = out / "curves.png"
    _atomic(path, lambda t: fig.savefig(t, format="png"))
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
    K = len(classes)
    fig = _figure(1.6 + 0.7 * K, 1.3 + 0.6 * K)
    ax = fig.subplots()
    norm = cm / np.maximum(1, cm.sum(1, keepdims=True))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(K), classes, rotation=30, ha="right"), ax.set_yticks(range(K), classes)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    ax.set_title(f"accuracy {metrics['accuracy']:.3f}, balanced {metrics['balanced_accuracy']:.3f}", fontsize=9)
    fig.tight_layout()
    _atomic(out / "confusion.png", lambda t: fig.savefig(t, format="png"))
    return [out / "confusion.csv", out / "confusion.png", out / "per_class.csv"]
