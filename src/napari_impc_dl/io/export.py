"""Exporting results: label masks (TIFF, OME-Zarr with a multiscale pyramid), objects / counts tables.

Also the on-disk scratch space the napari widget segments large images into (:class:`Scratch`)
and the pyramid builder both use (:func:`build_pyramid`), so a 16384 x 16384 label image is
never held in memory, neither while it is written nor while napari shows it.

Tables have the same columns as the CLI's ``segment`` outputs:

- ``objects.csv``: ``image``, the per-object measurements, ``model_name``, ``model_hash``;
- ``counts.csv``: one row per image (``SegmentationResult.counts_row``: image, n_objects,
  median / mean area, n_planes, model name and hash, run parameters).

Everything goes through a staging folder (:class:`~napari_impc_dl.io.outputs.Staging`): a run that
fails or is cancelled leaves nothing behind, and an output that would replace one of the inputs is
refused before anything is written. This module imports no napari and no torch.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CancelToken, InputError

Progress = Callable[[int, int, str], None]

#: label planes above this many pixels are streamed tile by tile (TIFF) instead of read whole
STREAM_PIXELS = 64 * 2**20
#: tables are only measured from labels without a table up to this many pixels (all planes)
MEASURE_LIMIT = 64 * 2**20
#: mask formats :func:`export_results` writes
MASK_FORMATS = ("tif", "ome-zarr", "none")
_CHUNK = 1024


# ----------------------------------------------------------------------------- pyramids


def pyramid_shapes(shape: tuple[int, ...], min_side: int = 1024) -> list[tuple[int, ...]]:
    """Shapes of a 2x pyramid over the last two axes, level 0 first, down to a largest side <= ``min_side``."""
    shapes = [tuple(int(s) for s in shape)]
    while max(shapes[-1][-2:]) > min_side:
        *stack, h, w = shapes[-1]
        shapes.append((*stack, -(-h // 2), -(-w // 2)))
    return shapes


def _windows(shape: tuple[int, ...], chunk: int):
    """``(plane, ys, xs)`` windows of ``chunk`` x ``chunk`` covering every plane of ``shape``."""
    *stack, h, w = shape
    for plane in itertools.product(*(range(n) for n in stack)):
        for y in range(0, h, chunk):
            for x in range(0, w, chunk):
                yield plane, slice(y, min(h, y + chunk)), slice(x, min(x + chunk, w))


def build_pyramid(
    level0,
    create: Callable[[int, tuple[int, ...]], Any],
    *,
    min_side: int = 1024,
    chunk: int = _CHUNK,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> list:
    """Levels 1.. of a nearest-neighbour (every 2nd pixel) pyramid of ``level0``, written window by window.

    ``create(k, shape)`` returns a writable array for level ``k``. Nearest neighbour keeps label ids
    intact (no averaging of ids). Returns ``[level0, level1, ...]``; memory stays at a few windows.
    """
    shapes = pyramid_shapes(tuple(level0.shape), min_side)
    levels = [level0]
    total = sum(math.prod(s[:-2]) * -(-s[-2] // chunk) * -(-s[-1] // chunk) for s in shapes[1:])
    done = 0
    for k, shape in enumerate(shapes[1:], start=1):
        src, dst = levels[-1], create(k, shape)
        for plane, ys, xs in _windows(shape, chunk):
            if cancel is not None:
                cancel.raise_if_cancelled()
            window = np.asarray(src[plane + (slice(2 * ys.start, 2 * ys.stop), slice(2 * xs.start, 2 * xs.stop))])
            dst[plane + (ys, xs)] = window[..., ::2, ::2]
            done += 1
            if progress is not None:
                progress(done, total)
        levels.append(dst)
    return levels


class Scratch:
    """A temporary folder of zarr arrays backing one result shown in napari (labels, probabilities, pyramids).

    Arrays are created on demand and removed with :meth:`remove` or all at once with
    :meth:`cleanup` (also safe to call twice).
    """

    def __init__(self, prefix: str = "napari-impc-dl-", dir: str | os.PathLike | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
        self._n = itertools.count()

    def array(self, shape: tuple[int, ...], dtype, *, name: str = "array", chunk: int = _CHUNK):
        """A new zero-filled zarr array; chunks are ``chunk`` x ``chunk`` in Y/X and 1 along other axes."""
        from .outputs import create_zarr

        chunks = (1,) * (len(shape) - 2) + (min(chunk, shape[-2]), min(chunk, shape[-1]))
        return create_zarr(self.dir / f"{name}-{next(self._n)}.zarr", tuple(shape), dtype, chunks)

    def pyramid(self, level0, *, min_side: int = 1024, progress=None, cancel: CancelToken | None = None) -> list:
        """``[level0, level1, ...]`` of ``level0`` (a label image), the coarser levels written here."""
        return build_pyramid(
            level0, lambda k, shape: self.array(shape, level0.dtype, name=f"level{k}"), min_side=min_side, progress=progress, cancel=cancel
        )

    @staticmethod
    def remove(arrays: Sequence) -> None:
        """Delete zarr arrays created here (non-zarr arrays are ignored)."""
        for a in arrays:
            root = getattr(getattr(a, "store", None), "root", None)
            if root is not None and Path(root).name.endswith(".zarr"):
                shutil.rmtree(root, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- masks


def _planes(shape):
    return itertools.product(*(range(n) for n in shape[:-2]))


def write_labels_tif(path: Path, labels, *, tile: int = 512, progress=None, cancel: CancelToken | None = None) -> Path:
    """Write a label image (numpy, zarr or dask; any number of leading stack axes) as a zlib TIFF.

    Up to :data:`STREAM_PIXELS` pixels it is written whole; beyond, it is streamed as a tiled
    (Big)TIFF, one tile at a time, so memory stays flat. Not atomic by itself: write into a
    staging folder (as :func:`export_results` does).
    """
    import tifffile

    shape, dtype = tuple(labels.shape), np.dtype(labels.dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(len(shape))
    meta = {"axes": axes} if axes else None
    if math.prod(shape) <= STREAM_PIXELS:
        tifffile.imwrite(path, np.asarray(labels).astype(dtype, copy=False), compression="zlib", metadata=meta)
        return path
    total = math.prod(shape[:-2]) * -(-shape[-2] // tile) * -(-shape[-1] // tile)

    def tiles():
        for i, (plane, ys, xs) in enumerate(_windows(shape, tile)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield np.asarray(labels[plane + (ys, xs)]).astype(dtype, copy=False)
            if progress is not None:
                progress(i + 1, total)

    big = math.prod(shape) * dtype.itemsize > 2**32 - 2**25
    tifffile.imwrite(path, tiles(), shape=shape, dtype=dtype, tile=(tile, tile), compression="zlib", bigtiff=big, metadata=meta)
    return path


def _ome_axes(ndim: int, stack_axes: str) -> list[dict]:
    stack = (stack_axes if len(stack_axes) == ndim - 2 else "TZ"[-(ndim - 2):] if ndim > 2 else "").lower()
    kinds = {"t": "time", "z": "space", "c": "channel"}
    return [{"name": a, "type": kinds.get(a, "space")} for a in stack] + [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]


def write_labels_ome_zarr(
    path: Path,
    labels,
    *,
    name: str = "labels",
    stack_axes: str = "",
    min_side: int = 1024,
    chunk: int = _CHUNK,
    progress=None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write a label image as an OME-Zarr 0.5 (zarr v3) multiscale *label image* with a 2x pyramid.

    The root group carries ``ome.multiscales`` (levels ``0``, ``1``, ... with scale transforms) and
    ``ome.image-label``; levels are written window by window (flat memory). Not atomic by itself.
    """
    import zarr

    shape = tuple(int(s) for s in labels.shape)
    if len(shape) > 5:
        raise InputError(f"Labels '{name}' have {len(shape)} dimensions; OME-Zarr holds at most 5", "Export fewer dimensions")
    dtype = np.dtype(np.uint8) if np.dtype(labels.dtype).kind == "b" else np.dtype(labels.dtype)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    chunks = lambda s: (1,) * (len(s) - 2) + (min(chunk, s[-2]), min(chunk, s[-1]))  # noqa: E731
    n_windows = sum(1 for _ in _windows(shape, chunk))
    level0 = root.create_array("0", shape=shape, dtype=dtype, chunks=chunks(shape), fill_value=0)
    for i, (plane, ys, xs) in enumerate(_windows(shape, chunk)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        level0[plane + (ys, xs)] = np.asarray(labels[plane + (ys, xs)]).astype(dtype, copy=False)
        if progress is not None:
            progress(i + 1, n_windows)
    levels = build_pyramid(
        level0, lambda k, s: root.create_array(str(k), shape=s, dtype=dtype, chunks=chunks(s), fill_value=0), min_side=min_side, chunk=chunk, cancel=cancel
    )
    datasets = []
    for k, lv in enumerate(levels):
        factor = [1.0] * (len(shape) - 2) + [float(2**k)] * 2
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": factor}]})
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"name": name, "axes": _ome_axes(len(shape), stack_axes), "datasets": datasets}],
        "image-label": {"version": "0.5"},
    }
    return path


# ----------------------------------------------------------------------------- tables


def objects_frame(result):
    """The ``objects.csv`` rows of one result: ``image``, measurements, ``model_name``, ``model_hash`` (CLI columns)."""
    return with_provenance(result.objects, result.name, result.model)


def with_provenance(objects, image: str, model: dict):
    """A copy of an objects table with the ``objects.csv`` columns around it: ``image`` first, the model's name and hash last."""
    frame = objects.copy()
    if "index" in frame.columns:  # napari's label -> row key, not a measurement
        frame = frame.drop(columns="index")
    frame.insert(0, "image", image)
    frame["model_name"], frame["model_hash"] = model.get("name", ""), model.get("hash", "")
    return frame


def measure_labels(labels, intensity=None, *, stack_axes: str = "", channel_names: list[str] | None = None):
    """Measure every object of a label image that has no table yet; returns ``(objects DataFrame, n_objects)``.

    ``intensity`` (optional) is the image, ``(*stack, Y, X)`` or ``(*stack, C, Y, X)``; its
    intensity columns are added when its shape fits. Ids need not be consecutive. Labels above
    :data:`MEASURE_LIMIT` pixels are refused (their table comes from segmentation, block by block).
    """
    import pandas as pd

    from ..measure.regions import measure_objects

    shape = tuple(labels.shape)
    if math.prod(shape) > MEASURE_LIMIT:
        raise InputError(
            f"These labels ({' x '.join(map(str, shape))}) are too large to measure in one piece and carry no table",
            "Segment the image with napari-impc-dl (its labels come with a table), or export masks only",
        )
    if np.dtype(labels.dtype).kind not in "biu":
        raise InputError(f"Labels of dtype {labels.dtype} cannot be measured", "Use an integer label image")
    frames, n = [], 0
    stack = (stack_axes if len(stack_axes) == len(shape) - 2 else "TZ"[-(len(shape) - 2):] if len(shape) > 2 else "").lower()
    for plane in _planes(shape):
        lab = np.asarray(labels[plane]).astype(np.int64)
        if lab.min(initial=0) < 0:
            raise InputError("Labels contain negative ids", "Use non-negative label ids (0 = background)")
        top = int(lab.max(initial=0))
        inten = None
        if intensity is not None:
            x = np.asarray(intensity[plane]) if intensity.ndim > lab.ndim else np.asarray(intensity)
            if x.shape == lab.shape:
                x = x[None]
            if x.ndim == 3 and x.shape[1:] == lab.shape:
                inten = x
        names = channel_names or ([f"c{c}" for c in range(inten.shape[0])] if inten is not None else None)
        cols = measure_objects(lab, 1, max(top, 0), inten, names) if top else {}
        frame = pd.DataFrame(cols)
        if len(frame):
            frame = frame[frame["area"] > 0].reset_index(drop=True)
        for ax, idx in zip(stack, plane):
            frame.insert(0, ax, idx)
        frames.append(frame)
        n += len(frame)
    objects = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["label"])
    if not len(objects):
        objects = pd.DataFrame(columns=["label", "area"])
    return objects, n


# ----------------------------------------------------------------------------- export


def safe_stem(name: str) -> str:
    """A file-name-safe version of a layer or image name."""
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", name.strip()).strip("._") or "labels"
    return stem[:120]


@dataclass
class ExportReport:
    """What :func:`export_results` wrote."""

    out_dir: Path
    objects_csv: Path | None
    counts_csv: Path | None
    masks: list[Path] = field(default_factory=list)
    n_objects: int = 0
    extra: list[Path] = field(default_factory=list)
    """Other files written with the export (the widget's ``predictions.csv``)."""

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.objects_csv, self.counts_csv) if p is not None] + list(self.masks) + list(self.extra)


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside ``b``."""
    return a == b or b in a.parents


def export_results(
    results: Sequence,
    out_dir: str | os.PathLike,
    *,
    masks: str = "tif",
    tables: bool = True,
    shapes: Sequence[str] = (),
    colours: dict[str, str] | None = None,
    protect: Sequence[str | os.PathLike] = (),
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> ExportReport:
    """Write ``objects.csv`` / ``counts.csv`` (``tables``) and one mask per result (``masks``: tif, ome-zarr, none).

    ``shapes`` adds the formats of :mod:`.shape_exports`: ``roi`` (``<name>_rois.zip``, a Fiji ROI set),
    ``geojson`` (``<name>.geojson``, QuPath detections with classes and measurements; ``colours`` maps
    class names to ``#rrggbb``, default the class palette) and ``rle`` (one ``masks.csv`` of run-length
    encoded masks for all results). 2D label images only.

    ``results`` are :class:`~napari_impc_dl.api.SegmentationResult` objects (``name`` is the
    ``image`` column and the file stem: ``<name>_labels.tif`` / ``<name>_labels.ome.zarr``).
    ``protect`` lists input files or folders that must never be overwritten (the image and label
    files shown in napari); an output that would replace one is refused before writing anything.
    Everything is staged and moved into place at the end; a failure or cancel leaves nothing.
    """
    import pandas as pd

    from .outputs import Staging, ensure_writable_dir, write_csv_atomic

    masks = (masks or "none").lower().replace("_", "-")
    if masks not in MASK_FORMATS:
        raise InputError(f"Unknown mask format '{masks}'", f"Use one of: {', '.join(MASK_FORMATS)}")
    if not results:
        raise InputError("Nothing to export: no labels were chosen", "Choose at least one labels layer")
    from .shape_exports import SHAPE_FORMATS

    shapes = [str(x).lower() for x in (shapes or ())]
    unknown = [x for x in shapes if x not in SHAPE_FORMATS]
    if unknown:
        raise InputError(f"Unknown export format '{unknown[0]}'", f"Use any of: {', '.join(SHAPE_FORMATS)}")
    if not tables and masks == "none" and not shapes:
        raise InputError("Nothing to export: tables and masks are both switched off", "Switch on tables or choose a mask format")
    for r in results:
        if shapes and len(r.labels.shape) != 2:
            raise InputError(
                f"'{r.name}' has {len(r.labels.shape) - 2} stack axis/axes ({r.stack_axes or 'planes'}): ROI sets, GeoJSON and masks CSV are written for 2D label images",
                "Export its planes one by one, or use TIFF / OME-Zarr masks",
            )
    names = [r.name for r in results]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"Two results share the name '{dupes[0]}', so their files and table rows would collide", "Rename one of the layers")
    out = Path(out_dir).expanduser()
    suffix = {"tif": "_labels.tif", "ome-zarr": "_labels.ome.zarr", "none": None}[masks]
    shape_suffix = {"roi": "_rois.zip", "geojson": ".geojson"}
    planned = (
        (["objects.csv", "counts.csv"] if tables else [])
        + ([safe_stem(n) + suffix for n in names] if suffix else [])
        + [safe_stem(n) + shape_suffix[x] for n in names for x in shapes if x in shape_suffix]
        + (["masks.csv"] if "rle" in shapes else [])
    )
    guarded = [Path(p).expanduser().resolve() for p in protect if p]
    for name in planned:
        target = (out / name).resolve()
        for g in guarded:
            if _inside(g, target) or _inside(target, g):
                raise InputError(f"Exporting to '{out / name}' would overwrite an input ('{g}')", "Choose another output folder")
    out = ensure_writable_dir(out)
    staging = Staging(out)
    report = ExportReport(out, None, None)
    steps = len(results) * (1 + (1 if suffix else 0) + len(shapes))
    step = 0

    def stage_progress(label):
        if progress is None:
            return None
        return lambda d, t: progress(step * 1000 + int(1000 * d / max(t, 1)), steps * 1000, label)

    from .shape_exports import write_image_shapes, write_masks_csv

    rle: list[list] = []
    try:
        frames, rows = [], []
        for r in results:
            if cancel is not None:
                cancel.raise_if_cancelled()
            if tables:
                frames.append(objects_frame(r))
                rows.append(r.counts_row())
            report.n_objects += int(r.n_objects)
            step += 1
            if progress is not None:
                progress(step * 1000, steps * 1000, f"tables: {r.name}")
            if suffix:
                target = staging.path(safe_stem(r.name) + suffix)
                if masks == "tif":
                    write_labels_tif(target, r.labels, progress=stage_progress(f"mask: {r.name}"), cancel=cancel)
                else:
                    write_labels_ome_zarr(target, r.labels, name=r.name, stack_axes=r.stack_axes, progress=stage_progress(f"mask: {r.name}"), cancel=cancel)
                report.masks.append(out / target.name)
                step += 1
            if shapes:
                files, rows = write_image_shapes(shapes, r.name, r.labels, r.objects, staging.path, colours=colours, scale=(r.params or {}).get("downsample") or 1.0, cancel=cancel)
                report.extra += [out / p.name for p in files]
                rle.extend(rows)
                step += len(shapes)
                if progress is not None:
                    progress(step * 1000, steps * 1000, f"outlines: {r.name}")
        if "rle" in shapes:
            write_masks_csv(staging.path("masks.csv"), rle)
            report.extra.append(out / "masks.csv")
        if tables:
            write_csv_atomic(staging.path("objects.csv"), pd.concat(frames, ignore_index=True))
            write_csv_atomic(staging.path("counts.csv"), pd.DataFrame(rows))
            report.objects_csv, report.counts_csv = out / "objects.csv", out / "counts.csv"
        staging.commit()
    except BaseException:
        staging.abort()
        raise
    return report
