"""Synthetic mouse-X-ray-like views, two classes, for image-level classification (view / orientation QC).

* ``dorsoventral``: the body seen from above: a symmetric ellipse, the spine straight along its
  midline, ribs paired on both sides;
* ``lateral``: the body seen from the side: the spine arches along the back, near one edge,
  and the ribs fan out to one side only.

Body size, aspect, position, a rotation of up to 20 degrees, soft tissue density, bone density,
blur and noise vary from image to image. Bone is bright on a dark background, as on IMPC
radiographs. A toy for testing the training and classification code, not a model of anatomy.

    make_view_image(view, size, seed)            -> uint16 image
    write_views_dataset(out, n, size, seed)      -> out/<view>/*.tif (n images per class)
"""

from __future__ import annotations

import pathlib

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .nuclei import _atomic_tif, dataset_image_seed

VIEWS = ("dorsoventral", "lateral")


def _segments(u, v, pts: np.ndarray, width: float) -> np.ndarray:
    """Soft-edged polyline of ``pts`` ``(N, 2)`` in body coordinates (u along, v across)."""
    out = np.zeros(u.shape, np.float32)
    for (u0, v0), (u1, v1) in zip(pts[:-1], pts[1:]):
        du, dv = u1 - u0, v1 - v0
        t = np.clip(((u - u0) * du + (v - v0) * dv) / max(1e-6, du * du + dv * dv), 0, 1)
        d = np.hypot(u - (u0 + t * du), v - (v0 + t * dv))
        out = np.maximum(out, np.clip(1 - d / width, 0, 1))
    return out


def make_view_image(view: str, size: int = 128, seed: int = 0) -> np.ndarray:
    """One ``(size, size)`` uint16 radiograph-like image of ``view``."""
    if view not in VIEWS:
        raise InputError(f"Unknown view '{view}'", f"Choose one of: {', '.join(VIEWS)}")
    rng = np.random.default_rng(int(seed))
    S = int(size)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    a = np.deg2rad(90 + rng.uniform(-20, 20))  # long axis roughly vertical
    cy, cx = 0.5 + rng.uniform(-0.06, 0.06, 2)
    y, x = yy - cy, xx - cx
    u = y * np.sin(a) + x * np.cos(a)  # along the body
    v = -y * np.cos(a) + x * np.sin(a)  # across
    L = rng.uniform(0.32, 0.42)
    Wd = L / rng.uniform(1.8, 2.6)
    body = ((u / L) ** 2 + (v / Wd) ** 2 <= 1).astype(np.float32)
    if view == "lateral":  # a belly: the ventral side bulges
        body = np.maximum(body, (((u - 0.05) / (0.8 * L)) ** 2 + ((v + 0.25 * Wd) / (1.1 * Wd)) ** 2 <= 1).astype(np.float32))
    tissue = ndi.gaussian_filter(body, S * 0.02) * rng.uniform(0.25, 0.4)
    ts = np.linspace(-0.85 * L, 0.85 * L, 24)
    bone = np.zeros_like(tissue)
    if view == "dorsoventral":
        spine = np.stack([ts, np.zeros_like(ts)], 1)
        for t0 in np.linspace(-0.35 * L, 0.25 * L, 7):
            for side in (-1, 1):
                rib = np.stack([t0 + np.linspace(0, 0.12, 6) * L, side * np.linspace(0, 0.8, 6) ** 0.8 * Wd], 1)
                bone = np.maximum(bone, 0.6 * _segments(u, v, rib, 0.008))
    else:
        arch = 0.55 * Wd + 0.25 * Wd * np.cos(np.pi * ts / (0.85 * L))  # spine along the back, arched
        spine = np.stack([ts, arch], 1)
        for t0 in np.linspace(-0.35 * L, 0.25 * L, 7):
            k = np.argmin(np.abs(ts - t0))
            rib = np.stack([t0 + np.linspace(0, 0.25, 6) * L, spine[k, 1] - np.linspace(0, 1.3, 6) * Wd], 1)
            bone = np.maximum(bone, 0.6 * _segments(u, v, rib, 0.008))
    bone = np.maximum(bone, _segments(u, v, spine, 0.016))
    density = rng.uniform(0.5, 0.9)
    img = tissue + density * bone * body
    img = ndi.gaussian_filter(img, S * rng.uniform(0.003, 0.008))
    photons = rng.uniform(300, 900)
    x = rng.poisson(np.maximum(img + 0.02, 0) * photons).astype(np.float32) + rng.normal(50, 2, img.shape)
    return np.clip(np.rint(x), 0, 65535).astype(np.uint16)


def write_views_dataset(out_dir, n: int, *, size: int = 128, seed: int = 0) -> list[pathlib.Path]:
    """``n`` images per view in ``out/<view>/view_<seed>_<i>.tif`` (the class-folder layout ``train classification`` reads)."""
    if n < 1:
        raise InputError(f"number of images {n} is below 1", "Ask for 1 or more images per class")
    out = pathlib.Path(out_dir)
    paths = []
    for k, view in enumerate(VIEWS):
        d = out / view
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot write to {out} ({exc.strerror or exc})", "Choose a folder you can write to") from exc
        for i in range(n):
            p = d / f"view_{seed}_{2 * i + k:04d}.tif"  # names unique across classes
            _atomic_tif(p, make_view_image(view, size, dataset_image_seed(seed, 2 * i + k) % 2**63))
            paths.append(p)
    return paths
