"""Augmentation of training samples, in numpy (runs on the batch producer thread).

Geometric transforms move the image and its targets together; intensity transforms touch only the
image channels (never a mask channel or a target). Defaults per task:

* segmentation: ``flips, rot90, intensity, noise`` (``affine``, ``elastic`` on request);
* object classification: ``flips, rot90, intensity, noise`` (crops have no up or down);
* image classification: ``intensity, noise`` only: flipping or rotating an X-ray would change
  the very thing a view / orientation classifier is asked about. Add ``flips`` when it does not.
"""

from __future__ import annotations

import numpy as np

DEFAULTS = {
    "segmentation": ("flips", "rot90", "intensity", "noise"),
    "object": ("flips", "rot90", "intensity", "noise"),
    "image": ("intensity", "noise"),
}


def geometric(arrays: list[np.ndarray], kinds: tuple[str, ...], rng: np.random.Generator, orders: list[int] | None = None) -> list[np.ndarray]:
    """The same random flips / 90-degree rotations / affine / elastic warp applied to every ``(C, H, W)`` array.

    ``orders``: interpolation order per array for affine / elastic (0 for labels and masks, 1 otherwise).
    """
    if "rot90" in kinds:
        k = int(rng.integers(0, 4))
        arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
    if "flips" in kinds:
        if rng.random() < 0.5:
            arrays = [a[..., ::-1] for a in arrays]
        if rng.random() < 0.5:
            arrays = [a[..., ::-1, :] for a in arrays]
    if "affine" in kinds or "elastic" in kinds:
        arrays = _warp(arrays, kinds, rng, orders or [1] * len(arrays))
    return [np.ascontiguousarray(a) for a in arrays]


def _warp(arrays, kinds, rng, orders):
    from scipy import ndimage

    H, W = arrays[0].shape[-2:]
    yy, xx = np.meshgrid(np.arange(H, dtype=np.float32), np.arange(W, dtype=np.float32), indexing="ij")
    cy, cx = (H - 1) / 2, (W - 1) / 2
    y, x = yy - cy, xx - cx
    if "affine" in kinds:
        a = rng.uniform(-np.pi, np.pi) if "rot90" in kinds else rng.uniform(-0.26, 0.26)
        s = rng.uniform(0.85, 1.15)
        sh = rng.uniform(-0.1, 0.1)
        c, si = np.cos(a) / s, np.sin(a) / s
        y, x = c * y - si * x + sh * x, si * y + c * x
    if "elastic" in kinds:
        sigma, alpha = max(H, W) / 12, max(H, W) / 40
        dy = ndimage.gaussian_filter(rng.standard_normal((H, W)).astype(np.float32), sigma, mode="reflect")
        dx = ndimage.gaussian_filter(rng.standard_normal((H, W)).astype(np.float32), sigma, mode="reflect")
        y, x = y + alpha * dy / (dy.std() + 1e-6), x + alpha * dx / (dx.std() + 1e-6)
    coords = np.stack([y + cy, x + cx])
    out = []
    for arr, order in zip(arrays, orders):
        planes = [ndimage.map_coordinates(p, coords, order=order, mode="reflect") for p in arr.reshape(-1, H, W)]
        out.append(np.stack(planes).reshape(arr.shape).astype(arr.dtype, copy=False))
    return out


def intensity(x: np.ndarray, kinds: tuple[str, ...], rng: np.random.Generator, n_image_channels: int | None = None) -> np.ndarray:
    """Gamma, gain and offset (``intensity``) and Gaussian noise (``noise``) on the first ``n_image_channels``
    channels of a normalised ``(C, H, W)`` float32 sample."""
    n = x.shape[0] if n_image_channels is None else n_image_channels
    if n == 0 or not ("intensity" in kinds or "noise" in kinds):
        return x
    x = x.copy()
    img = x[:n]
    if "intensity" in kinds:
        g = rng.uniform(0.7, 1.4)
        np.clip(img, 0, None, out=img)  # a fractional power of a negative value is undefined
        img **= g
        img *= rng.uniform(0.8, 1.2)
        img += rng.uniform(-0.05, 0.05)
    if "noise" in kinds:
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        noise *= np.float32(rng.uniform(0.0, 0.03))
        img += noise
    x[:n] = img
    return x
