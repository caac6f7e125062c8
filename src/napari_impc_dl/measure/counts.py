"""Per-image class counts for ``counts.csv``: ``n_<class>`` for every class, and the columns a preset adds.

    add_counts(row, classes, objects)  row + n_<class> (+ count_is_46 / mitotic_index, see presets.derived_counts)
    classes_of(objects)                the class vocabulary of a classified objects table

Pure pandas: used by ``segment --classifier``, ``classify`` and Export alike, so the three write the
same columns.
"""

from __future__ import annotations

from typing import Sequence

from ..presets import derived_counts


def classes_of(objects) -> list[str]:
    """Classes of a classified objects table: its ``p_<class>`` columns (all the classifier knows, in order),
    else the class names present (sorted)."""
    probs = [c[2:] for c in objects.columns if c.startswith("p_")]
    if probs:
        return probs
    return sorted({str(v) for v in objects["class"] if str(v)}) if "class" in objects.columns else []


def add_counts(row: dict, classes: Sequence[str], objects) -> dict:
    """``row`` with ``n_<class>`` for every class (objects of this image assigned to it), then the
    preset columns those classes imply."""
    vc = objects["class"].value_counts() if len(objects) and "class" in objects.columns else {}
    return derived_counts({**row, **{f"n_{c}": int(vc.get(c, 0)) for c in classes}}, classes)
