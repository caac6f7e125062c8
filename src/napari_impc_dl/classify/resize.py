"""Image-level input: a whole image (plane) as the classifier's ``(C, S, S)`` square.

    prepare_image   ImageSource plane -> raw float32 square (``pad | crop | stretch``), then percentile-normalised

* ``pad``: the longer side is scaled to ``S``, the shorter one padded (edge pixels repeated), so
  nothing is cut and nothing distorted. The X-ray study warned that padding can leak size (males
  are bigger); ``crop`` and ``stretch`` are the alternatives to compare.
* ``crop``: the shorter side is scaled to ``S`` and the centre ``S x S`` kept.
* ``stretch``: both sides scaled to ``S`` independently.

Downscaling is antialiased. Images larger than 4x the target are first reduced by an integer
block mean read band by band, so a large (zarr / big TIFF) image is never held whole. The
normalisation is per channel, ``(x - p_low) / (p_high - p_low)`` over the prepared square
(the Model Zoo export states it as ``scale_range`` per sample over ``y, x``, exactly).
"""

from __future__ import annotations

import numpy as np

from ..inference.runnable import percentile_normalizer


def _block_reduced(source, plane: tuple[int, ...], channels: list[int] | None, factor: int, band_rows: int = 1024) -> np.ndarray:
    """The plane reduced by ``factor`` (block mean), read in bands of rows."""
    H, W = source.spatial_shape
    Hr, Wr = H // factor, W // factor
    rows = max(factor, (band_rows // factor) * factor)
    parts = []
    for r0 in range(0, Hr * factor, rows):
        r1 = min(Hr * factor, r0 + rows)
        x = source.read(plane, slice(r0, r1), slice(0, Wr * factor)).astype(np.float32)
        if channels is not None:
            x = x[channels]
        c = x.shape[0]
        parts.append(x.reshape(c, (r1 - r0) // factor, factor, Wr, factor).mean(axis=(2, 4)))
    return np.concatenate(parts, axis=1)


def read_plane(source, plane: tuple[int, ...] = (), channels: list[int] | None = None, target: int = 256) -> np.ndarray:
    """A plane as float32 ``(C, h, w)``: whole when small, block-mean reduced when over 4x ``target`` on its shorter side."""
    H, W = source.spatial_shape
    factor = max(1, min(H, W) // (4 * target))
    if factor == 1:
        x = source.read(plane, slice(0, H), slice(0, W)).astype(np.float32)
        return x[channels] if channels is not None else x
    return _block_reduced(source, plane, channels, factor)


def resize_square(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    """``(C, h, w)`` float32 -> ``(C, size, size)`` under ``mode`` (``pad | crop | stretch``)."""
    import torch
    import torch.nn.functional as F

    C, h, w = x.shape
    if mode == "stretch":
        th, tw = size, size
    elif mode == "pad":
        s = size / max(h, w)
        th, tw = max(1, round(h * s)), max(1, round(w * s))
    elif mode == "crop":
        s = size / min(h, w)
        th, tw = max(size, round(h * s)), max(size, round(w * s))
    else:
        raise ValueError(f"unknown resize mode {mode!r}")
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[None]
    if (th, tw) != (h, w):
        t = F.interpolate(t, size=(th, tw), mode="bilinear", antialias=th < h or tw < w, align_corners=False)
    y = t[0].numpy()
    if mode == "pad" and (th, tw) != (size, size):
        py, px = size - th, size - tw
        y = np.pad(y, ((0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2)), mode="edge")
    elif mode == "crop":
        oy, ox = (th - size) // 2, (tw - size) // 2
        y = y[:, oy : oy + size, ox : ox + size]
    return np.ascontiguousarray(y, np.float32)


def normalise_square(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per-channel percentile normalisation over the whole prepared square."""
    return percentile_normalizer(x.reshape(x.shape[0], -1), low, high)(x)


def prepare_image(source, size: int, mode: str, low: float, high: float, plane: tuple[int, ...] = (), channels: list[int] | None = None) -> np.ndarray:
    """The network input ``(C, size, size)`` float32 of one image plane."""
    return normalise_square(resize_square(read_plane(source, plane, channels, target=size), size, mode), low, high)

