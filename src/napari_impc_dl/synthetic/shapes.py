"""Synthetic objects of three shape classes, with instance labels and the class of each object.

For object classification (chromosome vs nucleus vs debris, the metaphase-spread problem):

* ``rod``: an elongated, bent band (a quadratic Bezier curve 3-6 px thick, 24-56 px long), like a
  condensed chromosome;
* ``nucleus``: a round to slightly elliptical blob (radius 6-11 px) with chromatin texture;
* ``debris``: a small irregular fragment (2-4 overlapping specks, 15-70 px in area).

Objects never overlap (a one-pixel gap is kept) and lie fully inside the image. Brightness
varies per object and overlaps between classes, so shape, not intensity, tells them apart. The
image is blurred, lit unevenly and given shot and read noise (``uint16``).

    make_shapes_image(shape, seed)              -> image, labels, {label: class}
    write_shapes_dataset(out, n, size, seed)    -> out/images/*.tif, out/labels/*.tif, out/classes.csv
"""

from __future__ import annotations

import pathlib

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .nuclei import _atomic_tif, dataset_image_seed

CLASSES = ("rod", "nucleus", "debris")


def _rod(rng) -> np.ndarray:
    length = rng.uniform(24, 56)
    thick = rng.uniform(3.0, 6.0)
    bend = rng.uniform(-0.45, 0.45) * length
    a = rng.uniform(0, np.pi)
    d = np.array([np.cos(a), np.sin(a)])
    n = np.array([-d[1], d[0]])
    p0, p2 = -d * length / 2, d * length / 2
    p1 = n * bend
    t = np.linspace(0, 1, 64)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    r = int(np.ceil(np.abs(curve).max() + thick)) + 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    pts = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float32)
    dist = np.min(np.linalg.norm(pts[:, None, :] - curve[None].astype(np.float32), axis=2), axis=1)
    return (dist <= thick / 2).reshape(yy.shape)


def _nucleus(rng) -> np.ndarray:
    r = rng.uniform(6, 11)
    e = rng.uniform(0.8, 1.0)
    a = rng.uniform(0, np.pi)
    R = int(np.ceil(r)) + 2
    yy, xx = np.mgrid[-R : R + 1, -R : R + 1].astype(np.float32)
    u = xx * np.cos(a) + yy * np.sin(a)
    v = -xx * np.sin(a) + yy * np.cos(a)
    th = np.arctan2(v, u)
    wob = 1 + 0.06 * np.cos(3 * th + rng.uniform(0, 6.3))
    return (u / r) ** 2 + (v / (r * e)) ** 2 <= wob**2


def _debris(rng) -> np.ndarray:
    R = 8
    yy, xx = np.mgrid[-R : R + 1, -R : R + 1].astype(np.float32)
    m = np.zeros(yy.shape, bool)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(-3, 3, 2)
        r = rng.uniform(1.5, 3.2)
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m


_MAKERS = {"rod": _rod, "nucleus": _nucleus, "debris": _debris}


def make_shapes_image(shape: tuple[int, int] = (256, 256), seed: int = 0, *, n_objects: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """One image of rods, nuclei and debris: ``(uint16 image, int32 labels, {label: class})``."""
    H, W = int(shape[0]), int(shape[1])
    if H < 64 or W < 64:
        raise InputError(f"shape {shape} is too small", "Use at least 64 x 64")
    rng = np.random.default_rng(int(seed))
    n = int(n_objects) if n_objects is not None else int(rng.integers(8, 14) * H * W / 256**2)
    labels = np.zeros((H, W), np.int32)
    occupied = np.zeros((H, W), bool)
    classes: dict[int, str] = {}
    signal = np.zeros((H, W), np.float32)
    texture = ndi.gaussian_filter(rng.standard_normal((H, W)).astype(np.float32), 1.2)
    texture /= texture.std() + 1e-6
    k = 0
    for _ in range(n * 6):
        if k >= n:
            break
        cls = CLASSES[int(rng.integers(0, 3))]
        m = _MAKERS[cls](rng)
        h, w = m.shape
        if h >= H or w >= W:
            continue
        y0, x0 = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
        win = (slice(y0, y0 + h), slice(x0, x0 + w))
        if (occupied[win] & ndi.binary_dilation(m, iterations=2)).any():
            continue
        k += 1
        labels[win][m] = k
        occupied[win] |= m
        classes[k] = cls
        bright = rng.uniform(0.5, 1.0)
        if cls == "nucleus":
            d = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
            prof = np.clip(d / max(1.0, d.max()), 0, 1) ** 0.4
            sig = bright * prof * (1 + 0.25 * texture[win])
        else:
            sig = bright * (1 + 0.1 * texture[win]) * m
        signal[win] = np.where(m, sig, signal[win])
    blur = rng.uniform(0.8, 1.5)
    img = ndi.gaussian_filter(signal, blur)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    illum = 1 + 0.25 * np.sin(yy / H * rng.uniform(1, 3) + rng.uniform(0, 6)) * np.cos(xx / W * rng.uniform(1, 3))
    photons = rng.uniform(150, 400)
    lam = (img + rng.uniform(0.03, 0.12)) * illum * photons
    x = rng.poisson(np.maximum(lam, 0)).astype(np.float32) + rng.normal(100, 3, (H, W))
    return np.clip(np.rint(x), 0, 65535).astype(np.uint16), labels, classes


def write_shapes_dataset(out_dir, n: int, *, size: int = 256, seed: int = 0) -> list[pathlib.Path]:
    """Write ``n`` images: ``images/shapes_<seed>_<i>.tif``, ``labels/<same>`` and ``classes.csv`` (image,label,class)."""
    if n < 1:
        raise InputError(f"number of images {n} is below 1", "Ask for 1 or more images")
    out = pathlib.Path(out_dir)
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "labels").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write to {out} ({exc.strerror or exc})", "Choose a folder you can write to") from exc
    rows, paths = ["image,label,class"], []
    for i in range(n):
        img, lab, cls = make_shapes_image((size, size), dataset_image_seed(seed, i) % 2**63)
        name = f"shapes_{seed}_{i:04d}.tif"
        _atomic_tif(out / "images" / name, img)
        _atomic_tif(out / "labels" / name, lab, compression="zlib")
        rows += [f"{name},{k},{c}" for k, c in sorted(cls.items())]
        paths.append(out / "images" / name)
    tmp = out / ".classes.csv.tmp"
    tmp.write_text("\n".join(rows) + "\n")
    tmp.replace(out / "classes.csv")
    return paths
