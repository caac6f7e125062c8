"""Semantic models: class probabilities -> class map, and the area of each class.

A semantic model (card ``task: semantic``, e.g. the ``fibrosis`` preset) gives one softmax map per
class; the engine stores them as ``(K, H, W)`` uint8 like any other model's outputs. Here each
pixel takes the class of its highest probability (the first class on a tie), written into the
labels store as the class index, and the pixels of each class are counted on the way. The work
goes in strips of rows, so a whole-slide plane (zarr-backed) never needs more than one strip in
memory: the memory stays flat at any size.

The table columns come from :mod:`napari_impc_dl.measure.areas`.
"""

from __future__ import annotations

import numpy as np

from ..errors import CancelToken


def semantic_spec(model) -> dict | None:
    """``{"classes": [...], "background": [...]}`` of a semantic Runnable, or None for any other model."""
    return (getattr(getattr(model, "info", None), "extra", None) or {}).get("semantic")


def class_map(probs, out, *, rows: int = 1024, progress=None, cancel: CancelToken | None = None) -> np.ndarray:
    """Write the argmax class of ``probs`` ``(K, H, W)`` into ``out`` ``(H, W)``; return the pixels per class (int64, K)."""
    K, H = int(probs.shape[0]), int(probs.shape[-2])
    areas = np.zeros(K, np.int64)
    steps = max(1, -(-H // rows))
    for i, y0 in enumerate(range(0, H, rows)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        y1 = min(H, y0 + rows)
        strip = np.asarray(probs[:, y0:y1])
        idx = strip.argmax(0)
        out[y0:y1] = idx.astype(out.dtype, copy=False)
        areas += np.bincount(idx.ravel(), minlength=K)[:K]
        if progress is not None:
            progress(i + 1, steps)
    return areas


def class_table(areas: np.ndarray, spec: dict, pixel_size_um: float | None = None):
    """``objects.csv`` of a semantic result: one row per class (``label`` = its value in the class map)."""
    import pandas as pd

    classes, background = spec["classes"], set(spec["background"])
    tissue = int(sum(int(a) for c, a in zip(classes, areas) if c not in background))
    rows = []
    for k, (c, a) in enumerate(zip(classes, areas)):
        row = {"label": k, "class": c, "area": int(a), "fraction": (round(int(a) / tissue, 6) if tissue else 0.0) if c not in background else np.nan, "background": c in background}
        if pixel_size_um:
            row["area_um2"] = round(int(a) * float(pixel_size_um) ** 2, 3)
        rows.append(row)
    return pd.DataFrame(rows)
