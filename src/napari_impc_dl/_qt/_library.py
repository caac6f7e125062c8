"""The model menus the widgets share: bundled presets, trained models of the library, files, and one signal.

``models_changed`` is emitted when a training run saved a model; the Segment and Classify
widgets connect to it and refresh their menus, so a new model is there at once (no restart).
"""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal
from qtpy.QtCore import Qt


class _Events:
    models_changed = Signal()


EVENTS = _Events()

BROWSE = "__browse__"


def fill_model_combo(combo, *, task: str, level: str | None = None, presets: bool = True, browse: str | None = "Checkpoint file…") -> None:
    """Fill ``combo`` with models for ``task`` (``instance-segmentation`` or ``classification``; ``level`` image/object
    filters classifiers): presets, then the library's trained models, then a browse entry. Keeps the current choice."""
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
