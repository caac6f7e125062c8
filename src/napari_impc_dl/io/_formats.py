"""One opener per file format; each returns the array lazily, the axes its metadata gives, and a closer.

Openers never read pixel data of TIFF, zarr or ``.npy`` files (PNG/JPEG/BMP are small and read
whole). Every library failure is turned into an :class:`InputError` naming the file.

- TIFF: a contiguous uncompressed series is memory-mapped (``np.memmap``, what
  ``tifffile.memmap`` does); anything else (compressed, tiled, strips scattered in the file) goes
  through tifffile's zarr-3 store ``series.aszarr(level=0)`` opened with ``zarr.open(...,
  zarr_format=2)``, so each read decodes only the tiles/strips it touches. A compressed plane
  stored as one single strip is one chunk: any window of it decodes the whole plane (re-save such
  files tiled). The store holds the open TiffFile, so it cannot be pickled (no dask.distributed).
- zarr: plain array, group holding one array, OME-Zarr v0.4 (``multiscales`` attribute) or v0.5
  (``ome.multiscales``), also the bioformats2raw layout (image in group ``0``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError

#: Suffixes we open, longest first (matched case-insensitively at the end of the file name).
SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".svs", ".ndpi", ".zarr", ".png", ".jpg", ".jpeg", ".bmp", ".npy", ".dcm", ".dicom")

#: TIFF series below this size may be read into memory when tifffile cannot serve them lazily.
EAGER_TIFF_BYTES = 256 * 2**20

_RECOPY = "Re-export or re-copy the file; if it is still being copied, wait until the copy has finished"


class Opened(NamedTuple):
    """What an opener hands back to :func:`open_image`."""

    array: Any  # numpy / np.memmap / zarr.Array
    known_axes: str | None  # axes from metadata, "?" for unnamed ones; None when there is no metadata
    close: Callable[[], None]
    slide: dict | None = None  # pyramidal TIFFs: {"level", "n_levels", "downsample", "pixel_size_um"} (see open_tiff)


def _nothing() -> None:
    pass


def check_dtype(dtype: np.dtype, label: str) -> None:
    """Accept real numbers and bool (read as uint8); reject complex, structured, text, objects."""
    if np.dtype(dtype).kind not in "biuf":
        raise InputError(
            f"{label} holds {np.dtype(dtype)} data, which cannot be segmented",
            "Convert it to an integer or floating-point image (uint8, uint16, float32, ...)",
        )


def _reason(exc: BaseException) -> str:
    """The library's error message, on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def open_by_suffix(path: Path, label: str, *, level: int | None = None, pixel_size_um: float | None = None) -> Opened:
    """Dispatch on the (case-insensitive) suffix of ``path``."""
    name = path.name.lower()
    if name.endswith(".zarr"):
        if not path.is_dir():
            raise InputError(f"{label} is not a folder, but a .zarr image must be a folder", _RECOPY)
        return open_zarr(path, label)
    if path.is_dir():
        raise InputError(
            f"{label} is a folder, not an image file",
            f"Pass an image file or a .zarr folder; supported: {', '.join(SUFFIXES)}",
        )
    if name.endswith((".tif", ".tiff", ".svs", ".ndpi")):
        return open_tiff(path, label, level=level, pixel_size_um=pixel_size_um)
    if name.endswith(".npy"):
        return open_npy(path, label)
    if name.endswith((".png", ".jpg", ".jpeg", ".bmp")):
        return open_picture(path, label)
    from ._dicom import looks_like_dicom

    if looks_like_dicom(path):
        return open_dicom(path, label)
    raise InputError(
        f"{label} has an unsupported file type '{path.suffix or path.name}'",
        f"Convert it to one of: {', '.join(SUFFIXES)}",
    )


def open_dicom(path: Path, label: str) -> Opened:
    """A DICOM radiograph, read whole (X-rays are small); its pixel spacing as a one-level ``slide`` (microns)."""
    from ._dicom import read_dicom

    arr, mm = read_dicom(path, label)
    axes = "YX" if arr.ndim == 2 else "ZYX" if arr.ndim == 3 and arr.shape[-1] not in (3, 4) else None
    slide = {"level": 0, "n_levels": 1, "downsample": 1.0, "pixel_size_um": round(mm * 1000.0, 6)} if mm else None
    return Opened(arr, axes, _nothing, slide)


# --------------------------------------------------------------------------- TIFF

_TIFF_LETTERS = {"S": "C", "C": "C", "Z": "Z", "T": "T", "Y": "Y", "X": "X"}


def open_tiff(path: Path, label: str, *, level: int | None = None, pixel_size_um: float | None = None) -> Opened:
    """Open the first series of a TIFF / OME-TIFF / ImageJ TIFF / Aperio SVS / NDPI lazily (memmap or tifffile zarr store).

    Pyramidal files (whole-slide scans, OME-TIFF pyramids): ``level`` picks a level (0 = full
    resolution), or ``pixel_size_um`` the coarsest level whose pixels are no larger than that (with
    5 % slack), from the microns per pixel in the metadata (:func:`slide_pixel_size`).
    """
    import tifffile

    damage: list[str] = []
    with _tiff_damage_reports(damage):
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise InputError(
                f"Cannot read {label}: the file is not a valid TIFF (it may be truncated or still copying): "
                f"{_reason(exc)}",
                _RECOPY,
            ) from exc
        try:
            series = tif.series[0] if tif.series else None
            if damage:
                raise InputError(f"Cannot read {label}: the file is truncated or damaged ({damage[0]})", _RECOPY)
            if series is None:
                raise InputError(f"{label} contains no image", _RECOPY)
            slide = None
            levels = list(series.levels)
            if len(levels) > 1 or level or pixel_size_um:
                slide = _pick_level(tif, series, levels, label, level, pixel_size_um)
                series = levels[slide["level"]]
            known = "".join(_TIFF_LETTERS.get(a, "?") for a in series.axes)
            check_dtype(series.dtype, label)
            _check_tiff_complete(series, path, label)
            if slide is not None and slide["level"] > 0:
                array, close = _tiff_level_array(tif, tif.series[0], slide["level"])
            else:
                array, close = _tiff_array(tif, series, path)
            return Opened(array, known, close, slide)
        except InputError:
            tif.close()
            raise
        except Exception as exc:
            tif.close()
            raise InputError(
                f"Cannot read {label}: the TIFF is damaged or uses a layout that cannot be read: {_reason(exc)}",
                _RECOPY,
            ) from exc


def slide_pixel_size(tif: Any) -> float | None:
    """Microns per pixel of a TIFF's full-resolution level: Aperio ``MPP``, OME ``PhysicalSizeX``, or the
    resolution tags in centimetres / inches; ``None`` when the file does not say."""
    import re

    desc = tif.pages.first.description or ""
    m = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", desc)
    if m:
        return float(m.group(1))
    m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', desc)
    if m:
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', desc)
        factor = {"nm": 1e-3, "mm": 1e3, "m": 1e6}.get(unit.group(1) if unit else "µm", 1.0)
        return float(m.group(1)) * factor
    tags = tif.pages.first.tags
    res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if res is not None and unit is not None and int(unit.value) in (2, 3):
        num, den = res.value
        if num:
            per_unit = num / den  # pixels per inch (2) or per centimetre (3)
            return (25_400.0 if int(unit.value) == 2 else 10_000.0) / per_unit
    return None


def _pick_level(tif: Any, series: Any, levels: list, label: str, level: int | None, pixel_size_um: float | None) -> dict:
    base_w = levels[0].shape[levels[0].axes.index("X")]
    down = [base_w / lv.shape[lv.axes.index("X")] for lv in levels]
    mpp = slide_pixel_size(tif)
    if level is None and pixel_size_um is not None:
        if mpp is None:
            raise InputError(f"{label} does not say its pixel size, so a level cannot be chosen by resolution", f"Give --level N instead (0..{len(levels) - 1})")
        fine_enough = [i for i, d in enumerate(down) if mpp * d <= pixel_size_um * 1.05]
        level = fine_enough[-1] if fine_enough else 0
    level = level or 0
    if not 0 <= level < len(levels):
        raise InputError(f"{label} has {len(levels)} resolution level(s), so level {level} does not exist", f"Use --level 0..{len(levels) - 1}")
    return {"level": level, "n_levels": len(levels), "downsample": round(down[level], 6), "pixel_size_um": None if mpp is None else mpp * down[level]}


def _tiff_level_array(tif: Any, series: Any, level: int) -> tuple[Any, Callable[[], None]]:
    import zarr

    store = series.aszarr(level=level)
    array = zarr.open(store, mode="r", zarr_format=2)

    def close() -> None:
        store.close()
        tif.close()

    return array, close


@contextlib.contextmanager
def _tiff_damage_reports(found: list[str]) -> Iterator[None]:
    """Collect (and silence) tifffile's log messages that mean the file is cut short or corrupt.

    tifffile does not raise on a broken page chain: it logs an error and returns the pages it
    could read, so a truncated multi-page file would otherwise open as a smaller image.
    """
    logger = logging.getLogger("tifffile")

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(signal in message for signal in _DAMAGE_SIGNALS):
            found.append(message.split("> ", 1)[-1][:120])
            return False
        return True

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


_DAMAGE_SIGNALS = ("invalid page offset", "invalid offset to page", "corrupted tag list", "failed to reshape")


def _tiff_array(tif: Any, series: Any, path: Path) -> tuple[Any, Callable[[], None]]:
    offset = series.dataoffset
    if offset is not None:  # contiguous, uncompressed: the fastest lazy read there is
        dtype = np.dtype(tif.byteorder + series.dtype.char)
        array = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=series.shape, order="C")
        return array, tif.close
    import zarr

    try:
        store = series.aszarr(level=0)
    except Exception:
        if series.nbytes > EAGER_TIFF_BYTES:
            raise
        array = series.asarray()  # small and unusual layout: just read it
        array.flags.writeable = False
        return array, tif.close
    array = zarr.open(store, mode="r", zarr_format=2)

    def close() -> None:
        store.close()
        tif.close()

    return array, close


def _check_tiff_complete(series: Any, path: Path, label: str) -> None:
    """Catch truncated files at open time: the first and last pages' data must lie inside the file."""
    size = os.path.getsize(path)
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
        pages = []
    else:
        end = 0
        pages = [series[0], series[len(series) - 1]] if len(series) else []
    for page in pages:
        if page is not None and len(page.dataoffsets):
            end = max(end, max(int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)))
    if end > size:
        raise InputError(
            f"Cannot read {label}: the file is truncated ({size} bytes, but its image data runs to byte {end})",
            _RECOPY,
        )


# --------------------------------------------------------------------------- zarr

_OME_LETTERS = {"t": "T", "z": "Z", "c": "C", "y": "Y", "x": "X"}
_OME_TYPES = {"channel": "C", "time": "T"}


def open_zarr(path: Path, label: str) -> Opened:
    """Open a .zarr folder read-only: plain array, single-array group, or OME-Zarr full resolution."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
        array, known = _pick_zarr_array(node, label)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"Cannot read {label}: the folder is not a valid zarr store: {_reason(exc)}",
            _RECOPY,
        ) from exc
    return Opened(array, known, _nothing)


def _pick_zarr_array(node: Any, label: str, depth: int = 0) -> tuple[Any, str | None]:
    import zarr

    attrs = dict(node.attrs)
    if isinstance(node, zarr.Array):
        dims = attrs.get("_ARRAY_DIMENSIONS")  # xarray / tifffile convention
        return node, _axes_from_names(dims) if isinstance(dims, list) else None
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    multiscales = ome.get("multiscales")
    if multiscales:
        image = multiscales[0]
        array = node[image["datasets"][0]["path"]]
        axes = image.get("axes")
        return array, _axes_from_names(axes) if axes else None
    if "plate" in ome or "well" in ome:
        raise InputError(
            f"{label} is an OME-Zarr plate/well, not a single image",
            "Open one image of the plate, e.g. the folder <plate>.zarr/<row>/<col>/<field>",
        )
    groups = dict(node.groups())
    if depth == 0 and "0" in groups:  # bioformats2raw layout: the image lives in group "0"
        return _pick_zarr_array(groups["0"], label, depth + 1)
    names = sorted(node.array_keys())
    if len(names) == 1:
        return _pick_zarr_array(node[names[0]], label, depth + 1)
    raise InputError(
        f"{label} is a zarr group with {len(names)} arrays ({', '.join(names[:5]) or 'none'}) and no OME metadata",
        "Pass the folder of the one array to open, e.g. 'image.zarr/<name>'",
    )


def _axes_from_names(entries: list[Any]) -> str:
    """OME-Zarr ``axes`` (v0.3 strings or v0.4+ {name, type} dicts) to our letters, ``?`` if unknown."""
    letters = []
    for entry in entries:
        name, kind = (entry.get("name", ""), entry.get("type", "")) if isinstance(entry, dict) else (entry, "")
        letters.append(_OME_LETTERS.get(str(name).lower()) or _OME_TYPES.get(str(kind).lower(), "?"))
    return "".join(letters)


# --------------------------------------------------------------------------- npy, pictures


def open_npy(path: Path, label: str) -> Opened:
    """Memory-map a ``.npy`` file (never loads it); no axes metadata."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(
            f"Cannot read {label}: the file is not a valid .npy array (it may be truncated): {_reason(exc)}",
            _RECOPY,
        ) from exc
    if not isinstance(array, np.ndarray):
        raise InputError(f"Cannot read {label}: it holds no single array", "Save one array with numpy.save")
    return Opened(array, None, _nothing)


def open_picture(path: Path, label: str) -> Opened:
    """Read a PNG / JPEG / BMP whole. RGB(A) becomes axes ``YXC``; an alpha channel that is fully
    opaque everywhere (the dtype's maximum, 255 for 8-bit) carries no information and is dropped."""
    import imageio.v3 as iio

    try:
        array = np.asarray(iio.imread(path))
    except Exception as exc:
        raise InputError(
            f"Cannot read {label}: the file is not a valid image (it may be truncated or still copying): "
            f"{_reason(exc)}",
            _RECOPY,
        ) from exc
    known = None
    if array.ndim == 3 and array.shape[-1] in (2, 4) and array.dtype.kind in "ui":
        if np.all(array[..., -1] == np.iinfo(array.dtype).max):
            array = array[..., :-1]
        if array.shape[-1] == 1:
            array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] <= 4:
        known = "YXC"
    array.flags.writeable = False
    return Opened(array, known, _nothing)
