"""DICOM radiographs (``.dcm``, ``.dicom``, or a file without a suffix that starts like one), with pydicom.

What a mouse X-ray needs from the file: the pixels (decoded by pydicom, compressed transfer syntaxes
through the installed ``pylibjpeg`` / ``gdcm`` handlers when present), ``MONOCHROME1`` inverted so
that bone is bright as in ``MONOCHROME2`` (the model's convention), ``RescaleSlope`` / ``Intercept``
applied, and the pixel spacing (``PixelSpacing``, else ``ImagerPixelSpacing``, in mm) handed on as
``pixel_size_um`` so measurements come out in real units. Every failure is one :class:`InputError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

SUFFIXES = (".dcm", ".dicom")


def looks_like_dicom(path: Path) -> bool:
    """A DICOM suffix, or the ``DICM`` magic at byte 128 (files straight from a scanner have no suffix)."""
    if path.name.lower().endswith(SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def pixel_spacing_mm(ds) -> float | None:
    """The pixel size in mm (rows and columns equal, or their mean), from PixelSpacing or ImagerPixelSpacing."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = getattr(ds, key, None)
        if v is not None:
            try:
                vals = [float(x) for x in v]
            except (TypeError, ValueError):
                continue
            if vals and all(x > 0 for x in vals):
                return float(np.mean(vals[:2]))
    return None


def read_dicom(path: Path, label: str) -> tuple[np.ndarray, float | None]:
    """``(pixels, pixel size in mm or None)``: a 2D (or frames x 2D) array, bone bright."""
    try:
        import pydicom
    except ImportError:  # pragma: no cover - a dependency
        raise InputError(f"{label} is a DICOM file, and pydicom is not installed", "pip install pydicom") from None
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001 - any parser failure
        raise InputError(f"{label} cannot be read as DICOM ({type(exc).__name__}: {str(exc)[:120]})", "Export the image again from the scanner, or as TIFF") from None
    if "PixelData" not in ds:
        raise InputError(f"{label} is a DICOM file without pixel data (a report or structured data, not an image)", "Give the DICOM image of the X-ray itself")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - compressed without a handler, damaged
        raise InputError(
            f"{label}: the DICOM pixel data cannot be decoded ({type(exc).__name__}: {str(exc)[:120]})",
            "Install a decoder for its compression (pip install pylibjpeg pylibjpeg-libjpeg), or export it uncompressed",
        ) from None
    arr = np.asarray(arr)
    slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
    if (slope, intercept) != (1.0, 0.0):
        arr = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":  # white = low signal: invert
        if arr.dtype.kind in "ui":
            bits = int(getattr(ds, "BitsStored", arr.dtype.itemsize * 8) or arr.dtype.itemsize * 8)
            top = min((1 << bits) - 1, np.iinfo(arr.dtype).max)
            arr = (top - np.minimum(arr, top)).astype(arr.dtype)
        else:
            arr = (arr.max() + arr.min() - arr).astype(arr.dtype)
    return np.ascontiguousarray(arr), pixel_spacing_mm(ds)
