"""Area and area fraction of every class of a semantic class map: the ``counts.csv`` columns of a
semantic model (e.g. the ``fibrosis`` preset).

A class map holds, per pixel, the index of its class (``classes[k]`` for value ``k``). The
*tissue* is every pixel whose class is not a background class; fractions are of the tissue, so a
slide with more glass around the section does not change its fibrosis fraction. Columns, for
classes ``background, tissue, fibrosis`` with background ``background``:

* ``tissue_area_px``: pixels of the tissue (all non-background classes);
* ``area_<class>_px``: pixels of each class, background included;
* ``fraction_<class>``: each non-background class's pixels / ``tissue_area_px`` (0 without tissue);
* ``area_<class>_um2`` and ``tissue_area_um2`` as well, when the pixel size is known.

The synthetic generator writes its ``truth.csv`` with :func:`area_counts` too, so truth and
predictions have the same columns by construction. This module imports no torch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def class_areas(class_map: np.ndarray, n_classes: int) -> np.ndarray:
    """Pixels of each class ``0..n_classes-1`` in ``class_map`` (int64, length ``n_classes``)."""
    return np.bincount(np.asarray(class_map).ravel(), minlength=n_classes)[:n_classes].astype(np.int64)


def area_counts(areas: Sequence[int], classes: Sequence[str], background: Sequence[str], pixel_size_um: float | None = None) -> dict:
    """The ``counts.csv`` columns of one image from its per-class pixel counts (see the module docstring)."""
    classes = list(classes)
    areas = [int(a) for a in areas]
    if len(areas) != len(classes):
        raise ValueError(f"{len(areas)} areas for {len(classes)} classes")
    tissue = sum(a for c, a in zip(classes, areas) if c not in background)
    row: dict = {"tissue_area_px": tissue}
    row.update({f"area_{c}_px": a for c, a in zip(classes, areas)})
    row.update({f"fraction_{c}": round(a / tissue, 6) if tissue else 0.0 for c, a in zip(classes, areas) if c not in background})
    if pixel_size_um:
        px = float(pixel_size_um) ** 2
        row["tissue_area_um2"] = round(tissue * px, 3)
        row.update({f"area_{c}_um2": round(a * px, 3) for c, a in zip(classes, areas)})
    return row
