"""Synthetic metaphase spreads (Giemsa-stained, brightfield) with exact ground truth.

For the ``chromosomes`` preset: segment every object of a spread, tell chromosome from
interphase nucleus and debris, and count the chromosomes of each spread (46 in a normal human
cell). Everything a biodosimetry lab's images show is drawn from the seed:

* **The spread** (:func:`_karyotype`): 46 chromosomes (22 autosome pairs and XX or XY), or an
  aneuploid spread of 44-48 (about 1 in 5), or a partial spread that lost 5-20 of them while it
  was dropped (about 1 in 7). Lengths follow the human karyotype's relative lengths (chromosome 1
  about 4.4x chromosome 21), with the spread's condensation scaling them all; each has its
  centromere at its chromosome's centromere index (metacentric to acrocentric).
* **Each chromosome** (:func:`_chromosome`): a bent rod (a quadratic Bezier curve) 9-12 px wide
  with rounded ends, a constriction at the centromere, two sister chromatids across its width and
  G-band-like dark and light bands along it.
* **Layout** (:func:`_place`): chromosomes scattered over an elliptical spread area, a share of
  them placed against another one so they touch, and in about 1 spread in 7 one chromosome
  crossing another (the one on top owns the crossing pixels; the one below may show in two
  pieces, which keep one label: it is one chromosome). 0-3 interphase nuclei (large, round,
  textured) lie around the spread, and debris: specks, clumps, faint stain blobs, a fibre now and
  then, anywhere in the field.
* **Image**: optical densities add up; the field is a faint cytoplasm haze over an unevenly lit
  background, blurred by the optics, with shot and read noise, ``uint8`` as brightfield cameras
  give. ``rgb=True`` renders Giemsa's purple (absorbing mostly green) as ``(H, W, 3)``.

Ground truth: instance labels of every object (ids 1..n), each object's class (``chromosome``,
``nucleus``, ``debris``) and the spread's chromosome count. ``density``, ``contrast`` and ``size``
move the generator (more compact spreads, fainter staining, bigger chromosomes) for
domain-shifted test sets.

    make_spread(shape, seed, ...)                 -> image, labels, {label: class}
    write_chromosomes_dataset(out, n, size, seed)  -> images/, masks/, truth.csv, objects_truth.csv
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .nuclei import _atomic_tif, dataset_image_seed
from .truth import write_truth_tables

CLASSES = ("chromosome", "nucleus", "debris")
NORMAL_COUNT = 46
MAGNIFICATION = 1.4
"""Lengths at ``size=1``: chromosome 1 about 90 px long and chromosomes 9-12 px wide (two chromatids), as at
60-100x with a camera of about 0.1 um per pixel; ``size`` multiplies it."""

#: relative length (chromosome 1 = 1) and centromere index (short arm / length) of chromosomes 1-22, X, Y
_KARYOTYPE = {
    "1": (1.00, 0.48), "2": (0.95, 0.39), "3": (0.81, 0.47), "4": (0.75, 0.29), "5": (0.72, 0.29),
    "6": (0.70, 0.39), "7": (0.64, 0.39), "8": (0.58, 0.34), "9": (0.57, 0.35), "10": (0.54, 0.33),
    "11": (0.55, 0.40), "12": (0.55, 0.30), "13": (0.44, 0.17), "14": (0.42, 0.18), "15": (0.41, 0.20),
    "16": (0.40, 0.41), "17": (0.38, 0.34), "18": (0.35, 0.31), "19": (0.32, 0.47), "20": (0.30, 0.45),
    "21": (0.23, 0.27), "22": (0.24, 0.27), "X": (0.61, 0.40), "Y": (0.25, 0.27),
}


def _karyotype(rng: np.random.Generator) -> list[str]:
    """The chromosomes of one spread: normal (46), aneuploid (44-48) or partial (26-41)."""
    chroms = [str(k) for k in range(1, 23) for _ in range(2)] + (["X", "X"] if rng.random() < 0.5 else ["X", "Y"])
    u = rng.random()
    if u < 0.2:  # aneuploid: gain or lose one or two
        d = int(rng.choice([-2, -1, 1, 2]))
        if d > 0:
            chroms += list(rng.choice(chroms, d))
        else:
            for _ in range(-d):
                chroms.pop(int(rng.integers(0, len(chroms))))
    elif u < 0.34:  # partial spread
        for _ in range(int(rng.integers(5, 21))):
            chroms.pop(int(rng.integers(0, len(chroms))))
    return chroms


def _bezier(rng, length: float, bend: float) -> np.ndarray:
    """Points (every ~0.5 px) of a bent centre line of ``length`` px, centred on 0, random direction."""
    a = rng.uniform(0, np.pi)
    d = np.array([math.sin(a), math.cos(a)])
    nrm = np.array([-d[1], d[0]])
    p0, p2, p1 = -d * length / 2, d * length / 2, nrm * bend * length
    t = np.linspace(0, 1, max(8, int(2 * length)))[:, None]
    return ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32)


def _chromosome(rng, length: float, width: float, centromere: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, optical density)`` of one chromosome in its own window."""
    curve = _bezier(rng, length, rng.uniform(-0.25, 0.25))
    seg = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    s_pts = np.concatenate([[0], np.cumsum(seg)])
    r = int(np.ceil(np.abs(curve).max() + width)) + 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    diff = np.stack([yy, xx], -1)[:, :, None, :] - curve[None, None]  # (h, w, n, 2)
    d2 = (diff**2).sum(-1)
    idx = d2.argmin(-1)
    dist = np.sqrt(np.take_along_axis(d2, idx[..., None], -1)[..., 0])
    s = s_pts[idx]
    tang = np.gradient(curve, axis=0)[idx]
    v = np.take_along_axis(diff, idx[..., None, None].repeat(2, -1), 2)[..., 0, :]  # nearest curve point -> pixel
    side = np.sign(tang[..., 0] * v[..., 1] - tang[..., 1] * v[..., 0])
    u = side * dist  # signed distance across the chromosome
    L = float(s_pts[-1])
    sc = centromere * L if rng.random() < 0.5 else (1 - centromere) * L  # either end up
    half = width / 2 * (1 - rng.uniform(0.12, 0.25) * np.exp(-(((s - sc) / (0.55 * width)) ** 2)))
    mask = dist <= half
    # two sister chromatids across the width, G-bands along the length
    sig = width / 5
    prof = np.exp(-((u - width / 4) ** 2) / (2 * sig**2)) + np.exp(-((u + width / 4) ** 2) / (2 * sig**2))
    prof = 0.55 + 0.45 * prof / prof.max()
    n_bands = max(3, int(L / rng.uniform(3.0, 5.0)))
    knots = rng.random(n_bands + 1)
    band = np.interp(s / max(L, 1e-6) * n_bands, np.arange(n_bands + 1), knots)
    band = 1 / (1 + np.exp(-(band - 0.5) * 10))  # sharp-ish dark / light bands
    amp = rng.uniform(0.3, 0.6)
    edge = np.clip(half - dist + 0.5, 0, 1)  # anti-aliased outline
    od = edge * prof * (1 - amp + amp * band)
    return mask, od.astype(np.float32)


def _nucleus(rng, scale: float) -> tuple[np.ndarray, np.ndarray]:
    r = rng.uniform(20, 32) * scale
    e = rng.uniform(0.78, 1.0)
    a = rng.uniform(0, np.pi)
    R = int(np.ceil(r)) + 3
    yy, xx = np.mgrid[-R : R + 1, -R : R + 1].astype(np.float32)
    cu, su = math.cos(a), math.sin(a)
    u, v = xx * cu + yy * su, -xx * su + yy * cu
    th = np.arctan2(v, u)
    wob = 1 + 0.05 * np.cos(2 * th + rng.uniform(0, 6.3)) + 0.04 * np.cos(3 * th + rng.uniform(0, 6.3))
    rho = np.sqrt((u / r) ** 2 + (v / (r * e)) ** 2) / wob
    mask = rho <= 1
    tex = ndi.gaussian_filter(rng.standard_normal(mask.shape).astype(np.float32), 1.5 * scale)
    tex /= tex.std() + 1e-6
    od = np.clip(1 - rho, 0, 1) ** 0.3 * (1 + 0.2 * tex) * np.clip((1 - rho) * r + 0.5, 0, 1)
    return mask, (od * rng.uniform(0.5, 0.85)).astype(np.float32)


def _debris(rng, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A speck, a clump of specks, a faint stain blob or a thin fibre."""
    kind = rng.choice(["speck", "clump", "stain", "fibre"], p=[0.3, 0.3, 0.3, 0.1])
    if kind == "fibre":
        curve = _bezier(rng, rng.uniform(18, 40) * scale, rng.uniform(-0.4, 0.4))
        w = rng.uniform(1.6, 2.6)
        r = int(np.ceil(np.abs(curve).max() + w)) + 2
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
        dist = np.sqrt(((np.stack([yy, xx], -1)[:, :, None, :] - curve[None, None]) ** 2).sum(-1).min(-1))
        mask = dist <= w / 2 + 0.3
        return mask, (mask * rng.uniform(0.4, 0.9)).astype(np.float32)
    if kind == "stain":
        R = int(rng.uniform(6, 13) * scale) + 3
        yy, xx = np.mgrid[-R : R + 1, -R : R + 1].astype(np.float32)
        noise = ndi.gaussian_filter(rng.standard_normal(yy.shape).astype(np.float32), R / 3)
        noise /= np.abs(noise).max() + 1e-6
        mask = (np.sqrt(yy**2 + xx**2) / (R - 2) + 0.35 * noise) <= 0.8
        od = rng.uniform(0.22, 0.45) * (1 + 0.15 * noise)
        return mask, (mask * od).astype(np.float32)
    R = int(7 * scale) + 2
    yy, xx = np.mgrid[-R : R + 1, -R : R + 1].astype(np.float32)
    mask = np.zeros(yy.shape, bool)
    for _ in range(1 if kind == "speck" else int(rng.integers(2, 6))):
        cy, cx = rng.uniform(-3, 3, 2) * scale * (kind == "clump")
        rr = rng.uniform(2.4, 4.2) * scale
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rr * rr
    return mask, (mask * rng.uniform(0.6, 1.5)).astype(np.float32)


class _Canvas:
    """Labels, optical density and the placement bookkeeping of one field."""

    def __init__(self, H: int, W: int):
        self.labels = np.zeros((H, W), np.int32)
        self.od = np.zeros((H, W), np.float32)
        self.occupied = np.zeros((H, W), bool)
        self.classes: dict[int, str] = {}

    def fits(self, mask: np.ndarray, y0: int, x0: int) -> bool:
        H, W = self.labels.shape
        h, w = mask.shape
        return 0 <= y0 and 0 <= x0 and y0 + h <= H and x0 + w <= W

    def window(self, mask, y0, x0):
        return (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))

    def free(self, mask, y0, x0, gap: int = 2) -> bool:
        win = self.window(mask, y0, x0)
        return not (self.occupied[win] & ndi.binary_dilation(mask, iterations=gap)).any()

    def touches(self, mask, y0, x0, label: int) -> bool:
        win = self.window(mask, y0, x0)
        return bool(((self.labels[win] == label) & ndi.binary_dilation(mask, iterations=1)).any()) and not (self.occupied[win] & mask).any()

    def put(self, mask, od, y0, x0, cls: str, on_top: bool = True) -> int:
        win = self.window(mask, y0, x0)
        k = len(self.classes) + 1
        lab = self.labels[win]
        lab[mask if on_top else mask & (lab == 0)] = k
        self.occupied[win] |= mask
        self.od[win] += od
        self.classes[k] = cls
        return k


def _slide_against(canvas: _Canvas, mask, j: int, cy: float, cx: float, ang: float):
    """Top-left corner where ``mask``, slid out from ``(cy, cx)`` along ``ang``, first stops overlapping
    anything while touching object ``j``; None when it leaves the field or ends up touching nothing."""
    h, w = mask.shape
    for step in range(h + w):
        y0, x0 = int(round(cy + step * math.sin(ang) - h / 2)), int(round(cx + step * math.cos(ang) - w / 2))
        if not canvas.fits(mask, y0, x0):
            return None
        if not (canvas.occupied[canvas.window(mask, y0, x0)] & mask).any():
            return (y0, x0) if canvas.touches(mask, y0, x0, j) else None
    return None


def _place(rng, canvas: _Canvas, shapes, centre, radii, touch_share: float, crossing: bool) -> None:
    """Chromosomes over the spread ellipse: scattered, a share touching a neighbour, maybe one crossing."""
    placed: list[tuple[int, int, int]] = []  # (label, cy, cx)
    crossed = not crossing
    for mask, od in shapes:
        h, w = mask.shape
        for attempt in range(60):
            if placed and not crossed and attempt == 0 and rng.random() < 0.25:
                j, cy, cx = placed[int(rng.integers(0, len(placed)))]  # cross chromosome j near its centre
                y0, x0 = int(cy - h / 2 + rng.uniform(-3, 3)), int(cx - w / 2 + rng.uniform(-3, 3))
                if canvas.fits(mask, y0, x0):
                    win = canvas.window(mask, y0, x0)
                    hit = canvas.labels[win][mask]
                    if (hit > 0).any() and set(np.unique(hit[hit > 0])) == {j}:
                        placed.append((canvas.put(mask, od, y0, x0, "chromosome"), y0 + h // 2, x0 + w // 2))
                        crossed = True
                        break
                continue
            if placed and attempt < 10 and rng.random() < touch_share:
                j, cy, cx = placed[int(rng.integers(0, len(placed)))]
                at = _slide_against(canvas, mask, j, cy, cx, rng.uniform(0, 2 * np.pi))
                if at is not None:
                    placed.append((canvas.put(mask, od, at[0], at[1], "chromosome"), at[0] + h // 2, at[1] + w // 2))
                    break
                continue
            rr = math.sqrt(rng.random())
            ang = rng.uniform(0, 2 * np.pi)
            cy, cx = centre[0] + rr * radii[0] * math.sin(ang), centre[1] + rr * radii[1] * math.cos(ang)
            y0, x0 = int(cy - h / 2), int(cx - w / 2)
            if canvas.fits(mask, y0, x0) and canvas.free(mask, y0, x0):
                placed.append((canvas.put(mask, od, y0, x0, "chromosome"), int(cy), int(cx)))
                break


def _scatter(rng, canvas: _Canvas, items, cls: str, gap: int = 3, tries: int = 80) -> None:
    H, W = canvas.labels.shape
    for mask, od in items:
        h, w = mask.shape
        for _ in range(tries):
            y0, x0 = int(rng.integers(0, max(1, H - h))), int(rng.integers(0, max(1, W - w)))
            if canvas.fits(mask, y0, x0) and canvas.free(mask, y0, x0, gap):
                canvas.put(mask, od, y0, x0, cls)
                break


def _finish_labels(canvas: _Canvas, min_px: int = 12) -> tuple[np.ndarray, dict[int, str]]:
    """Drop objects hidden below ``min_px`` visible pixels; ids 1..n in placement order."""
    lab = canvas.labels
    n = len(canvas.classes)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = [k for k in range(1, n + 1) if sizes[k] >= min_px]
    lut = np.zeros(n + 1, np.int32)
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[lab], {i + 1: canvas.classes[k] for i, k in enumerate(keep)}


def make_spread(
    shape: tuple[int, int] = (768, 768),
    seed: int = 0,
    *,
    density: float = 1.0,
    contrast: float = 1.0,
    size: float = 1.0,
    rgb: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """One metaphase spread: ``(uint8 image (H, W) or (H, W, 3), int32 labels, {label: class})``.

    ``density`` > 1 packs the spread tighter (more touching), ``contrast`` < 1 stains fainter,
    ``size`` > 1 draws every length bigger (a higher magnification).
    """
    H, W = int(shape[0]), int(shape[1])
    if H < 128 or W < 128:
        raise InputError(f"shape {shape} is too small for a metaphase spread", "Use at least 128 x 128 (768 x 768 holds a whole spread)")
    if not (0.2 <= density <= 5 and 0.1 <= contrast <= 5 and 0.3 <= size <= 4):
        raise InputError(f"density {density}, contrast {contrast}, size {size} out of range", "Use density 0.2-5, contrast 0.1-5, size 0.3-4")
    rng = np.random.default_rng(int(seed))
    scale = MAGNIFICATION * float(size) * float(rng.uniform(0.85, 1.15))  # condensation / magnification of this spread
    chroms = _karyotype(rng)
    longest = rng.uniform(46, 60) * scale
    width = rng.uniform(5.5, 7.5) * min(1.5, max(0.7, scale))
    shapes = []
    for c in rng.permutation(chroms):
        rel, ci = _KARYOTYPE[str(c)]
        length = max(width * 1.6, longest * rel * rng.uniform(0.92, 1.08))
        shapes.append(_chromosome(rng, length, width * rng.uniform(0.92, 1.08), ci))
    area = sum(float(m.sum()) for m, _ in shapes)
    coverage = rng.uniform(0.13, 0.22) * density
    r = math.sqrt(area / coverage / math.pi)
    ell = rng.uniform(0.8, 1.0)
    radii = (min(r * ell, H / 2 - 20), min(r / ell, W / 2 - 20))
    centre = (H / 2 + rng.uniform(-0.1, 0.1) * H, W / 2 + rng.uniform(-0.1, 0.1) * W)
    canvas = _Canvas(H, W)
    _place(rng, canvas, shapes, centre, radii, touch_share=rng.uniform(0.08, 0.2) * density, crossing=rng.random() < 0.15)
    n_nuc = int(rng.choice([0, 1, 1, 2, 2, 3]) * min(4.0, H * W / 512**2) ** 0.5)
    _scatter(rng, canvas, [_nucleus(rng, scale) for _ in range(n_nuc)], "nucleus")
    n_deb = int(rng.integers(3, 14) * H * W / 512**2)
    _scatter(rng, canvas, [_debris(rng, scale) for _ in range(n_deb)], "debris")
    labels, classes = _finish_labels(canvas)

    # optics: cytoplasm haze around the spread, uneven light, blur, shot and read noise
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    haze = rng.uniform(0.03, 0.1) * np.exp(-(((yy - centre[0]) / (1.4 * radii[0])) ** 2 + ((xx - centre[1]) / (1.4 * radii[1])) ** 2))
    od_scale = rng.uniform(0.9, 1.5) * contrast
    od = ndi.gaussian_filter(canvas.od * od_scale + haze, rng.uniform(0.7, 1.4) * scale)
    g = rng.uniform(-0.08, 0.08, 2)
    illum = 1 + g[0] * (yy / H - 0.5) + g[1] * (xx / W - 0.5) + 0.04 * np.sin(yy / H * rng.uniform(2, 5) + rng.uniform(0, 6))
    white = rng.uniform(195, 240)
    absorb = np.array([0.45, 1.0, 0.55], np.float32) if rgb else np.ones(1, np.float32)
    t = np.exp(-od[..., None] * absorb) * (white * illum)[..., None]
    photons = rng.uniform(2.0, 6.0)  # photons per grey level: shot noise
    t = rng.normal(t, np.sqrt(np.maximum(t, 0) / photons) + rng.uniform(0.8, 2.5))
    img = np.clip(np.rint(t), 0, 255).astype(np.uint8)
    return (img if rgb else img[..., 0]), labels, classes


def spread_counts(name: str, classes: dict[int, str]) -> dict:
    """The true values of the ``chromosomes`` preset's counts columns for one spread."""
    n = {c: sum(1 for v in classes.values() if v == c) for c in CLASSES}
    return {"image": name, "n_objects": len(classes), **{f"n_{c}": n[c] for c in CLASSES}, "count_is_46": n["chromosome"] == NORMAL_COUNT}


def write_chromosomes_dataset(out_dir, n: int, *, size: int = 768, seed: int = 0, density: float = 1.0, contrast: float = 1.0, scale: float = 1.0, rgb: bool = False) -> list[pathlib.Path]:
    """Write ``n`` spreads: ``images/chromosomes_<seed>_<i>.tif``, ``masks/<same>``, ``truth.csv``
    (the preset's counts columns) and ``objects_truth.csv`` (image, label, class)."""
    if n < 1:
        raise InputError(f"number of images {n} is below 1", "Ask for 1 or more images")
    out = pathlib.Path(out_dir)
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write to {out} ({exc.strerror or exc})", "Choose a folder you can write to") from exc
    counts, objects, paths = [], [], []
    for i in range(n):
        img, lab, cls = make_spread((size, size), dataset_image_seed(seed, i) % 2**63, density=density, contrast=contrast, size=scale, rgb=rgb)
        stem = f"chromosomes_{seed}_{i:04d}"
        _atomic_tif(out / "images" / f"{stem}.tif", img, metadata={"axes": "YXS" if rgb else "YX"}, photometric="rgb" if rgb else "minisblack")
        _atomic_tif(out / "masks" / f"{stem}.tif", lab, compression="zlib")
        counts.append(spread_counts(stem, cls))
        objects += [(stem, k, c) for k, c in sorted(cls.items())]
        paths.append(out / "images" / f"{stem}.tif")
    write_truth_tables(out, counts, objects)
    return paths
