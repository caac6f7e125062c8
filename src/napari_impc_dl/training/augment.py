"""Augmentation of training samples, in numpy (runs on the batch producer thread).

Geometric transforms move the image and its targets together; intensity transforms touch only the
image channels (never a mask channel or a target). Defaults per task:

* segmentation: ``flips, rot90, intensity, noise, blur, illumination`` (``zoom``, ``affine``, ``elastic`` on request);
  until December 2026 it was the first four only (the bundled chromosomes, cells, fibrosis and skeletal
  starters were trained so, and their scripts name those four);
* object classification: ``flips, rot90, intensity, noise`` (crops have no up or down);
* image classification: ``intensity, noise`` only: flipping or rotating an X-ray would change
  the very thing a view / orientation classifier is asked about. Add ``flips`` when it does not.
"""

from __future__ import annotations

import numpy as np

#: the intensity kinds, in the order they are applied (geometric kinds go first, in :func:`geometric`)
INTENSITY_KINDS = ("illumination", "blur", "intensity", "noise")

DEFAULTS = {
    "segmentation": ("flips", "rot90", "intensity", "noise", "blur", "illumination"),
    "object": ("flips", "rot90", "intensity", "noise"),
    "image": ("intensity", "noise"),
}


#: ``zoom``: the range of scale factors (objects appear this many times their size), drawn log-uniformly
ZOOM_RANGE = (0.6, 1.6)


def zoom_side(patch: int, kinds: tuple[str, ...], rng: np.random.Generator) -> int:
    """The side of the window to cut for a ``patch``-sided sample: ``patch`` itself, or (``zoom``, half of the
    samples) ``patch / s`` for a scale ``s`` in :data:`ZOOM_RANGE`, so that after :func:`resize` to ``patch``
    objects look ``s`` times their size: a model that meets smaller or larger objects than it was shown."""
    if "zoom" not in kinds or rng.random() >= 0.5:
        return patch
    s = float(np.exp(rng.uniform(np.log(ZOOM_RANGE[0]), np.log(ZOOM_RANGE[1]))))
    return max(8, int(round(patch / s)))


def resize(arrays: list[np.ndarray], side: int, orders: list[int]) -> list[np.ndarray]:
    """``(C, h, w)`` arrays resampled to ``(C, side, side)``, plane by plane, with the project's resamplers
    (:mod:`napari_impc_dl.skeletal.scale`): order 1 linear (anti-aliased when shrinking), order 0 nearest
    (class maps keep their values)."""
    from ..skeletal.scale import resize_image, resize_labels

    out = []
    for arr, order in zip(arrays, orders):
        one = resize_labels if order == 0 else resize_image
        planes = [one(plane, (side, side)) for plane in arr.reshape(-1, *arr.shape[-2:])]
        out.append(np.stack(planes).reshape(*arr.shape[:-2], side, side).astype(arr.dtype, copy=False))
    return out


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
    """Intensity changes of the first ``n_image_channels`` channels of a normalised ``(C, H, W)`` float32 sample
    (never a mask channel), in this order:

    * ``illumination`` (half of the samples): uneven light, a smooth random gain field that dims parts of the
      sample to as low as 0.4 and a smooth random additive background up to 0.6 of the signal range (vignetting,
      a bright haze, a lamp's hot spot): objects must be told from the background by shape, not by level;
    * ``blur`` (half of the samples): a Gaussian blur of sigma 0.5-2.5 px (out of focus);
    * ``intensity``: gamma 0.7-1.4, gain 0.8-1.2 and an offset of +-0.05;
    * ``noise``: Gaussian noise of s.d. 0-0.03 (after the blur, so a blurred sample is noisy again).
    """
    n = x.shape[0] if n_image_channels is None else n_image_channels
    if n == 0 or not any(k in kinds for k in INTENSITY_KINDS):
        return x
    x = x.copy()
    img = x[:n]
    if "illumination" in kinds and rng.random() < 0.5:
        img *= 1.0 - rng.uniform(0.0, 0.6) * _smooth_field(img.shape[-2:], rng)
        img += rng.uniform(0.0, 0.6) * _smooth_field(img.shape[-2:], rng)
    if "blur" in kinds and rng.random() < 0.5:
        from scipy import ndimage

        sigma = rng.uniform(0.5, 2.5)
        for c in range(n):
            img[c] = ndimage.gaussian_filter(img[c], sigma, mode="reflect")
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


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [0, 1] over ``shape``: a random ramp plus a broad random bump, min-max scaled."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    yy /= max(H, W)
    xx /= max(H, W)
    ang = rng.uniform(0, 2 * np.pi)
    f = rng.uniform(0.0, 1.0) * (np.cos(ang) * yy + np.sin(ang) * xx)
    cy, cx = rng.uniform(-0.2, 1.2, 2)
    r = rng.uniform(0.15, 0.6)
    f += rng.uniform(0.0, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    f -= f.min()
    top = f.max()
    return (f / top if top > 1e-6 else f).astype(np.float32)
