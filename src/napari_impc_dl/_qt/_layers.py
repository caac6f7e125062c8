"""Small helpers shared by the widgets: where our results keep their provenance, and layer data access."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: key of ``layer.metadata`` under which a Labels layer made by the Segment widget keeps its provenance:
#: ``image``, ``image_path``, ``model`` (name, hash, source), ``params``, ``n_objects``, ``timings``, ``stack_axes``, ``semantic`` (a class map: classes, background, areas; else None)
META_KEY = "napari_impc_dl"


def unwrap(obj: Any) -> Any:
    """The object behind napari's plugin proxy (``PublicOnlyProxy``): what weak references and identity need."""
    return getattr(obj, "__wrapped__", obj)


def find_layer(viewer, layer) -> Any:
    """``layer`` as the viewer holds it (compared by identity behind proxies), or None when it was removed."""
    target = unwrap(layer)
    return next((lyr for lyr in viewer.layers if unwrap(lyr) is target), None)


def level0(layer) -> Any:
    """Full-resolution data of a layer (level 0 of a multiscale layer); never reads it."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def channels_first(layer):
    """An image layer's full-resolution data as a numpy array with channels first (RGB layers keep them last)."""
    import numpy as np

    x = np.asarray(level0(layer))
    return np.moveaxis(x, -1, 0) if getattr(layer, "rgb", False) else x


def provenance(layer) -> dict | None:
    """The Segment widget's record on a layer, or None for layers made elsewhere."""
    meta = getattr(layer, "metadata", None) or {}
    rec = meta.get(META_KEY)
    return rec if isinstance(rec, dict) else None


def input_paths(viewer) -> list[Path]:
    """Files and folders the viewer's layers were read from or are backed by: exports must never overwrite them."""
    found: list[Path] = []
    for layer in viewer.layers:
        src = getattr(getattr(layer, "source", None), "path", None)
        if src:
            found.append(Path(src))
        rec = provenance(layer)
        if rec and rec.get("image_path"):
            found.append(Path(rec["image_path"]))
        data = layer.data if isinstance(layer.data, (list, tuple)) else [layer.data]
        for arr in data:
            root = getattr(getattr(arr, "store", None), "root", None)
            if root is not None:
                found.append(Path(root))
    return found


def features_with_index(objects) -> Any:
    """A per-object table as napari Labels features: an ``index`` column holding the label ids."""
    frame = objects.copy()
    if "label" in frame.columns:
        frame["index"] = frame["label"].astype("int64")
    return frame
