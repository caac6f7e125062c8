"""The model menus the widgets share: bundled presets, trained models of the library, files, and one signal.

``models_changed`` is emitted when a training run saved a model; the Segment and Classify
widgets connect to it and refresh their menus, so a new model is there at once (no restart).

:data:`WORKFLOWS` are menu entries of the Segment widget that are not one segmentation model but a
workflow of several (``skeletal``: mouse X-rays); they are listed after the presets when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from psygnal import Signal
from qtpy.QtCore import Qt


class _Events:
    models_changed = Signal()


EVENTS = _Events()

BROWSE = "__browse__"


@dataclass(frozen=True)
class Workflow:
    """A Segment menu entry that runs a whole workflow (several models) instead of one segmentation model."""

    name: str
    description: str
    installed: Callable[[], bool]


def _skeletal_installed() -> bool:
    from ..skeletal.models import installed

    return installed()


WORKFLOWS: dict[str, Workflow] = {
    "skeletal": Workflow(
        "skeletal",
        "Mouse X-rays (dorso-ventral or lateral): orientation, skeletal regions, vertebrae and ribs counted per region and side, "
        "sex, normal/abnormal and the IMPC parameter table; starter models trained on synthetic phantoms only",
        _skeletal_installed,
    ),
}
"""Workflow entries of the Segment menu, by the name the menu carries as its data (not in ``presets.PRESETS``)."""


def fill_model_combo(combo, *, task: str, level: str | None = None, presets: bool = True, workflows: bool = False,
                     browse: str | None = "Checkpoint file…") -> None:
    """Fill ``combo`` with models for ``task`` (``instance-segmentation`` or ``classification``; ``level`` image/object
    filters classifiers): presets, then (``workflows``) the installed :data:`WORKFLOWS`, then the library's trained
    models, then a browse entry. Keeps the current choice."""
    from ..presets import PRESETS
    from ..training.library import trained_models

    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for p in PRESETS.values() if presets else ():
        if not p.installed or (task == "classification" and (p.classifier is None or level == "image")):
            continue  # classifiers: the presets that classify objects, listed by the preset's name
        combo.addItem(p.name, p.name)
        combo.setItemData(combo.count() - 1, p.description, Qt.ItemDataRole.ToolTipRole)
    for w in WORKFLOWS.values() if workflows else ():
        if w.installed():
            combo.addItem(w.name, w.name)
            combo.setItemData(combo.count() - 1, w.description, Qt.ItemDataRole.ToolTipRole)
    for m in trained_models():
        if m.task != task or (level and m.level != level):
            continue
        label = f"{m.name} (trained" + (f", {m.level}: {', '.join(m.classes)}" if m.classes else "") + ")"
        combo.addItem(label, str(m.folder))
        combo.setItemData(combo.count() - 1, f"{m.description}\n{m.folder}", Qt.ItemDataRole.ToolTipRole)
    if current and current != BROWSE and combo.findData(current) < 0 and Path(str(current)).exists():
        combo.addItem(Path(str(current)).name, current)
    if browse:
        combo.addItem(browse, BROWSE)
    idx = combo.findData(current)
    combo.setCurrentIndex(idx if idx >= 0 else 0)
    combo.blockSignals(False)
