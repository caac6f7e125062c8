"""Object classes on a Labels layer: assignments in ``layer.features["class"]``, colours, undo, CSV in and out.

:class:`Annotator` is what the Classify widget's Annotate section drives: the user picks a class
and clicks objects; each click assigns the class to the object under the cursor (Alt-click or
the "unassigned" entry clears it), Ctrl+Z undoes, keys 1-9 pick the first classes. The layer is
recoloured by class (unassigned objects dim grey), so the state is always visible. Assignments are
plain feature columns, so napari's CSV writer (and ours) saves them and ``load_csv`` reads an
``image,label,class`` or ``label,class`` table back.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..io.shape_exports import PALETTE  # noqa: E402  (class colours, in order: the exports use the same)
UNASSIGNED = (0.55, 0.55, 0.55, 0.55)


def colour_of(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _rgba(hex_colour: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    h = hex_colour.lstrip("#")
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, alpha)


def ensure_features(layer) -> None:
    """Give ``layer`` one feature row per object (``index`` = label id) with a ``class`` column (empty = unassigned)."""
    import pandas as pd

    feats = layer.features
    if "index" not in feats.columns or not len(feats):
        ids = np.unique(np.asarray(layer.data[0] if getattr(layer, "multiscale", False) else layer.data))
        ids = ids[ids > 0]
        base = feats if len(feats) == len(ids) and len(feats) else pd.DataFrame({"label": ids})
        base = base.copy()
        base["index"] = ids if "label" not in base.columns else base["label"].astype("int64")
        feats = base
    if "class" not in feats.columns:
        feats = feats.copy()
        feats["class"] = ""
    feats["class"] = feats["class"].fillna("").astype(str)
    layer.features = feats


def recolour(layer, classes: list[str], column: str = "class") -> None:
    """Colour every object by its class in ``column`` (unassigned: dim grey); the background stays clear."""
    from napari.utils.colormaps import DirectLabelColormap

    colour = {c: _rgba(colour_of(k)) for k, c in enumerate(classes)}
    feats = layer.features
    mapping: dict = {None: UNASSIGNED, 0: (0, 0, 0, 0)}
    if column in feats.columns and "index" in feats.columns:
        for label, cls in zip(feats["index"].to_numpy(), feats[column].astype(str).to_numpy()):
            if cls in colour:
                mapping[int(label)] = colour[cls]
    layer.colormap = DirectLabelColormap(color_dict=mapping)


class Annotator:
    """Assign classes to the objects of one Labels layer by clicking; undo; recolour."""

    def __init__(self, layer, classes: Callable[[], list[str]], current: Callable[[], str], on_change: Callable[[], None] | None = None) -> None:
        self.layer = layer
        self._classes, self._current, self._on_change = classes, current, on_change
        self.undo_stack: list[tuple[int, str]] = []
        self.active = False
        ensure_features(layer)

    # ------------------------------------------------------------------ assignments

    def classes_of(self) -> dict[int, str]:
        f = self.layer.features
        return {int(i): c for i, c in zip(f["index"], f["class"]) if c}

    def assign(self, label: int, cls: str, *, record: bool = True) -> bool:
        """Set ``label``'s class (``""`` clears it); returns False for the background or an unknown object."""
        feats = self.layer.features
        rows = np.flatnonzero(feats["index"].to_numpy() == int(label))
        if label <= 0 or not rows.size:
            return False
        old = str(feats["class"].iloc[rows[0]])
        if old == cls:
            return True
        feats = feats.copy()
        feats.loc[feats.index[rows[0]], "class"] = cls
        self.layer.features = feats
        if record:
            self.undo_stack.append((int(label), old))
        self.refresh()
        return True

    def undo(self) -> bool:
        if not self.undo_stack:
            return False
        label, old = self.undo_stack.pop()
        return self.assign(label, old, record=False)

    def refresh(self) -> None:
        recolour(self.layer, self._classes())
        if self._on_change is not None:
            self._on_change()

    def rename(self, old: str, new: str) -> None:
        feats = self.layer.features.copy()
        feats.loc[feats["class"] == old, "class"] = new
        self.layer.features = feats
        self.undo_stack = [(lab, new if c == old else c) for lab, c in self.undo_stack]
        self.refresh()

    def load_csv(self, path) -> int:
        """Read ``label,class`` (or ``image,label,class``: rows of this layer's image) and assign; returns how many."""
        import pandas as pd

        from ..errors import InputError

        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df.columns = [c.strip().lower() for c in df.columns]
        if not {"label", "class"} <= set(df.columns):
            raise InputError(f"'{path}' has no label and class columns", "Give a CSV with a header row label,class (or image,label,class)")
        if "image" in df.columns:
            from pathlib import Path

            name = self.layer.metadata.get("napari_impc_dl", {}).get("image", "") if isinstance(self.layer.metadata, dict) else ""
            mine = df[[Path(i).stem in (name, self.layer.name.removesuffix(" labels")) for i in df["image"]]]
            df = mine if len(mine) else df
        n = 0
        for lab, cls in zip(df["label"], df["class"]):
            n += bool(lab.strip().isdigit() and self.assign(int(lab), cls.strip()))
        return n

    # ------------------------------------------------------------------ clicking

    def on_click(self, layer, event):
        """napari mouse callback: assign (or, with Alt, clear) the class of the object under the cursor."""
        if not self.active or event.type != "mouse_press":
            return
        label = layer.get_value(event.position, view_direction=event.view_direction, dims_displayed=event.dims_displayed, world=True)
        if isinstance(label, tuple):  # multiscale layers: (level, value)
            label = label[1]
        if label is None or int(label) <= 0:
            return
        clear = "Alt" in {str(m) for m in event.modifiers} or event.button == 2
        self.assign(int(label), "" if clear else self._current())

    def start(self) -> None:
        if not self.active:
            self.active = True
            self.layer.mouse_drag_callbacks.append(self.on_click)
            self.layer.mode = "pan_zoom"
        self.refresh()

    def stop(self) -> None:
        if self.active:
            self.active = False
            if self.on_click in self.layer.mouse_drag_callbacks:
                self.layer.mouse_drag_callbacks.remove(self.on_click)
