"""napari writers (File > Save Selected Layers): labels as TIFF or OME-Zarr, a labels layer's table as CSV.

Each writes to a temporary name next to the target and renames it into place when complete, so
an interrupted save never leaves a half-written file under the chosen name. Large labels are
streamed (tiled TIFF, chunked OME-Zarr with a multiscale pyramid) and never read whole. The CSV
is ``layer.features`` with the CLI's provenance columns (``image`` first, ``model_name`` and
``model_hash`` last); a labels layer without a table is measured on the way.

This module imports neither napari nor Qt.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .io import export as _export

META_KEY = "napari_impc_dl"  # same key as napari_impc_dl._qt._layers.META_KEY


def _level0(data: Any, meta: dict) -> Any:
    return data[0] if meta.get("multiscale") or isinstance(data, (list, tuple)) else data


def _record(meta: dict) -> dict:
    rec = (meta.get("metadata") or {}).get(META_KEY)
    return rec if isinstance(rec, dict) else {}


def _replace(tmp: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _tmp(target: Path) -> Path:
    return target.with_name(f".{target.name}.part")


def write_labels_tif(path: str, data: Any, meta: dict) -> list[str]:
    """Write a labels layer as a zlib-compressed TIFF (tiled and streamed when large)."""
    target = Path(path)
    if target.suffix.lower() not in (".tif", ".tiff"):
        target = target.with_name(target.name + ".tif")
    tmp = _tmp(target)
    try:
        _export.write_labels_tif(tmp, _level0(data, meta))
        _replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return [str(target)]


def write_labels_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """Write a labels layer as an OME-Zarr 0.5 label image with a multiscale pyramid."""
    target = Path(path)
    if not target.name.lower().endswith(".zarr"):
        target = target.with_name(target.name + ".ome.zarr")
    tmp = _tmp(target)
    try:
        _export.write_labels_ome_zarr(tmp, _level0(data, meta), name=meta.get("name") or target.stem, stack_axes=_record(meta).get("stack_axes", ""))
        _replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [str(target)]


def write_features_csv(path: str, data: Any, meta: dict) -> list[str]:
    """Write a labels layer's per-object table (``layer.features``) as CSV, with image and model columns."""
    from .api import SegmentationResult
    from .io.outputs import write_csv_atomic

    target = Path(path)
    if target.suffix.lower() != ".csv":
        target = target.with_name(target.name + ".csv")
    rec = _record(meta)
    features = meta.get("features")
    name = rec.get("image") or meta.get("name") or target.stem
    model = rec.get("model") or {"name": "", "hash": ""}
    if features is not None and len(features):
        import pandas as pd

        objects, n = pd.DataFrame(features), len(features)
    else:
        objects, n = _export.measure_labels(_level0(data, meta), stack_axes=rec.get("stack_axes", ""))
    result = SegmentationResult(name, None, None, objects, n, model, rec.get("params") or {})
    write_csv_atomic(target, _export.objects_frame(result))
    return [str(target)]
