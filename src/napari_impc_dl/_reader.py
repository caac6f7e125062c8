"""napari reader for ``.zarr`` folders (plain, OME-Zarr with its pyramid and labels) and TIFF files, lazily.

Nothing is read at open time: layers get zarr arrays (or ``np.memmap`` for uncompressed TIFFs),
and napari reads only the chunks it shows. napari reads the whole visible 2D plane of a
non-multiscale layer, so a large plane without a stored pyramid gets coarser levels made of
strided views (dask): napari then shows the coarse level when zoomed out and reads full-resolution
chunks only where it is zoomed in.

- OME-Zarr (0.4 / 0.5, also bioformats2raw): every stored resolution level; label images under
  ``labels/`` and OME-Zarr label images (``image-label``) become Labels layers.
- Label files written by napari-impc-dl (``*_labels.zarr``, ``*_labels.tif``) become Labels layers.
- TIFF: the first series through :func:`napari_impc_dl.io.image.open_image` (memory map or
  tifffile's zarr store); pyramidal (OME-)TIFFs with all their levels.

This module imports neither napari nor Qt; it returns napari's layer-data tuples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

#: planes with a side above this get strided coarser levels when the file stores none
PYRAMID_SIDE = 4096
_LABEL_SUFFIXES = ("_labels.zarr", "_labels.ome.zarr", "_labels.tif", "_labels.tiff", "_masks.tif", "_masks.tiff", "_mask.tif")


def get_reader(path: str | list[str]):
    """npe2 reader hook: our reader function for a ``.zarr`` folder or a TIFF file, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith(".zarr") and p.is_dir():
        return read
    if name.endswith((".tif", ".tiff", ".svs", ".ndpi")) and p.is_file():
        return read
    from .io._dicom import looks_like_dicom

    if p.is_file() and looks_like_dicom(p):
        return read
    return None


def read(path: str | list[str]) -> list[tuple[Any, dict, str]]:
    """Layer-data tuples for one ``.zarr`` folder or TIFF file (see the module docstring)."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    p = Path(path)
    if p.name.lower().endswith(".zarr"):
        return _read_zarr(p)
    from .io._dicom import looks_like_dicom

    if not p.name.lower().endswith((".tif", ".tiff", ".svs", ".ndpi")) and looks_like_dicom(p):
        return _read_dicom(p)
    return _read_tiff(p)


def _read_dicom(p: Path) -> list:
    """A DICOM radiograph as an image layer; its pixel spacing as the layer's scale, in mm (the skeletal
    workflow reads it back from the layer's units)."""
    from .io.image import open_image

    src = open_image(p)
    extra = {}
    if src.slide and src.slide.get("pixel_size_um"):
        mm = src.slide["pixel_size_um"] / 1000.0
        extra = {"scale": [mm, mm], "units": ["mm", "mm"]}
    return [_layer([src.lazy_array], src.name, "image", src.axes, extra)]


# ----------------------------------------------------------------------------- helpers


def _stem(p: Path) -> str:
    from .io.image import image_name

    return image_name(p)


def _is_labels_file(p: Path, dtype) -> bool:
    return p.name.lower().endswith(_LABEL_SUFFIXES) and np.dtype(dtype).kind in "iub"


def _with_pyramid(levels: list) -> list:
    """Add strided (dask) coarser levels to a single large level; otherwise return ``levels`` as they are."""
    if len(levels) > 1 or max(levels[0].shape[-2:]) <= PYRAMID_SIDE:
        return levels
    import dask.array as da

    base = levels[0]
    chunks = getattr(base, "chunks", None)
    arr = da.from_array(base, chunks=chunks if isinstance(chunks, tuple) and len(chunks) == base.ndim else "auto", asarray=True, fancy=False)
    out, k = [base], 1
    while max(-(-s // 2**k) for s in base.shape[-2:]) > 512:
        k += 1
    for j in range(1, k + 1):
        step = 2**j
        out.append(arr[(Ellipsis, slice(None, None, step), slice(None, None, step))])
    return out


def _layer(levels: list, name: str, kind: str, axes: str | None, extra: dict | None = None) -> tuple[Any, dict, str]:
    levels = _with_pyramid(levels)
    meta: dict[str, Any] = {"name": name, "metadata": {"axes": axes or ""}}
    if len(levels) > 1:
        meta["multiscale"] = True
    if kind == "image" and axes and "C" in axes:
        c = axes.index("C")
        n = levels[0].shape[c]
        if c == len(axes) - 1 and n in (3, 4) and np.dtype(levels[0].dtype) == np.uint8:
            meta["rgb"] = True
        elif n > 1:
            meta["channel_axis"] = c
        elif len(levels) == 1:
            levels = [levels[0][(slice(None),) * c + (0,)]]
            meta["metadata"]["axes"] = axes.replace("C", "")
    meta.update(extra or {})
    data = levels if len(levels) > 1 else levels[0]
    return data, meta, kind


# ----------------------------------------------------------------------------- zarr


def _ome(attrs: dict) -> dict:
    return attrs["ome"] if isinstance(attrs.get("ome"), dict) else attrs


def _read_zarr(p: Path) -> list:
    import zarr

    from .io._formats import _axes_from_names

    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise InputError(f"Cannot read '{p}': not a valid zarr store ({exc})", "Re-copy or re-export the folder") from exc
    stem = _stem(p)
    if isinstance(node, zarr.Array):
        dims = node.attrs.get("_ARRAY_DIMENSIONS")
        axes = _axes_from_names(dims) if isinstance(dims, list) else None
        kind = "labels" if _is_labels_file(p, node.dtype) else "image"
        return [_layer([node], stem, kind, axes)]
    ome = _ome(dict(node.attrs))
    if not ome.get("multiscales") and "0" in dict(node.groups()):  # bioformats2raw layout
        node = node["0"]
        ome = _ome(dict(node.attrs))
    if not ome.get("multiscales"):
        names = sorted(node.array_keys())
        if len(names) == 1:
            arr = node[names[0]]
            return [_layer([arr], stem, "labels" if _is_labels_file(p, arr.dtype) else "image", None)]
        from .io.image import open_image

        open_image(p)  # raises the same clear error the CLI gives (plate, several arrays, ...)
        raise InputError(f"'{p}' holds no image napari-impc-dl can show", "Open an OME-Zarr image or a single zarr array")
    layers = [_multiscale(node, ome, stem, p)]
    labels_group = dict(node.groups()).get("labels")
    if labels_group is not None:
        for label_name in _ome(dict(labels_group.attrs)).get("labels", []):
            try:
                sub = labels_group[label_name]
            except KeyError:
                continue
            layers.append(_multiscale(sub, _ome(dict(sub.attrs)), f"{stem} {label_name}", p, force="labels"))
    return layers


def _multiscale(node, ome: dict, name: str, p: Path, force: str | None = None):
    from .io._formats import _axes_from_names

    image = ome["multiscales"][0]
    levels = [node[d["path"]] for d in image["datasets"]]
    axes = _axes_from_names(image["axes"]) if image.get("axes") else None
    is_label = force == "labels" or "image-label" in ome or _is_labels_file(p, levels[0].dtype) and force is None
    kind = "labels" if is_label and np.dtype(levels[0].dtype).kind in "iub" else "image"
    scale = None
    transforms = image["datasets"][0].get("coordinateTransformations") or []
    for t in transforms:
        if t.get("type") == "scale":
            scale = [float(v) for v in t["scale"]]
    extra = {}
    if scale is not None and axes and len(scale) == len(axes):
        keep = [v for a, v in zip(axes, scale) if not (kind == "image" and a == "C")]
        if any(v != 1.0 for v in keep):
            extra["scale"] = keep
    return _layer(levels, name, kind, axes, extra)


# ----------------------------------------------------------------------------- TIFF


def _read_tiff(p: Path) -> list:
    import tifffile

    from .io.image import open_image

    with tifffile.TiffFile(p) as tif:
        n_levels = len(tif.series[0].levels) if tif.series else 1
    if n_levels > 1:
        import zarr

        tif = tifffile.TiffFile(p)  # kept open: the layer reads through it
        series = tif.series[0]
        group = zarr.open(series.aszarr(), mode="r", zarr_format=2)
        levels = [group[str(i)] for i in range(n_levels)]
        axes = "".join({"S": "C"}.get(a, a) if a in "TZCYXS" else "?" for a in series.axes)
        kind = "labels" if _is_labels_file(p, series.dtype) else "image"
        return [_layer(levels, _stem(p), kind, axes)]
    src = open_image(p)  # lazy; stays open while the layer lives
    kind = "labels" if _is_labels_file(p, src.dtype) and "C" not in src.axes else "image"
    return [_layer([src.lazy_array], src.name, kind, src.axes)]
