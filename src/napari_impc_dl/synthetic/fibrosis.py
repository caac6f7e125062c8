"""Synthetic H&E-like tissue with fibrosis, and its exact class map: the ``fibrosis`` preset's data.

A tile of a brightfield H&E section, rendered by Beer-Lambert from two stain densities
(hematoxylin and eosin), with the class of every pixel:

* ``0 background``: the glass around the section, and vessels / airspaces inside it (white);
* ``1 tissue``: parenchyma: eosin-pink cytoplasm with a granular texture, faint pale cell borders
  and dense round to oval purple-blue nuclei (6-10 px across at ``size=1``, about 40 per
  100 x 100 px);
* ``2 fibrosis``: collagen-rich scar: paler, glassier and slightly bluer pink, with wavy fibre
  streaks running along a smoothly turning direction, pale clefts between bundles, sparse thin
  spindle-shaped nuclei and a few small round lymphocytes.

How one tile is made (:func:`make_fibrosis_image`)
--------------------------------------------------
1. **The section**: a large smooth blob with an irregular edge (smooth noise at three scales,
   thresholded to cover 45-97 % of the tile; crumbs under ~40 px dropped, pin-holes filled), with
   holes of glass: oval vessels 8-50 px across and, in some tiles, irregular airspaces.
2. **Fibrosis**: a score = broad smooth patches + septa (thin ridges of a smooth field, between
   "lobules") + cuffs around a share of the vessels + fine noise for ragged-but-smooth borders,
   with per-tile weights (patchy, septal or perivascular tiles). The top ``fraction`` of the
   tissue by score is fibrosis, so the realised fraction is close to the target (specks under
   ~25 px are dropped, which moves it slightly). The target is drawn per image: about 1 in 8 near
   0 (0-0.03), most 0.05-0.45, about 1 in 8 0.45-0.62; ``density`` multiplies it (clipped to 0.9).
3. **Stains**: eosin and hematoxylin densities per pixel from the class map, nuclei drawn from
   one distance transform of all nucleus seeds (parenchyma: jittered grid, each seed's Voronoi
   cell a shade of cytoplasm with a pale border; spindles: oriented along the fibres), fibre
   streaks as the level lines of a gently meandering, crimped field (two families of directions,
   each owning smooth regions of the tile).
4. **Optics and camera**: per-tile stain strength and hue jitter, ``RGB = light * exp(-OD)``,
   an uneven illumination field, a slight blur, shot and read noise, ``uint8``.

The class map is exact (no label noise); ``truth.csv`` holds
:func:`napari_impc_dl.measure.areas.area_counts` of each class map: exactly the columns the
preset writes to ``counts.csv``. ``density`` scales the amount of fibrosis, ``contrast`` the stain
(optical density), ``size`` every length, for domain-shifted test sets.

    make_fibrosis_image(shape, seed, ...)         -> RGB image, class map
    write_fibrosis_dataset(out, n, size, seed)    -> images/, masks/, truth.csv
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ._args import number as _number
from ..measure.areas import area_counts, class_areas
from .nuclei import _atomic_tif, dataset_image_seed

__all__ = ["CLASSES", "BACKGROUND", "make_fibrosis_image", "write_fibrosis_dataset"]

CLASSES = ("background", "tissue", "fibrosis")
BACKGROUND = ("background",)

#: optical density (natural log) per unit stain in (R, G, B): hematoxylin (Ruifrok & Johnston),
#: eosin of cytoplasm (pink: some blue absorbed) and of collagen (a little bluer, less orange)
_HEMATOXYLIN = np.array([0.650, 0.704, 0.286], np.float32)
_EOSIN = np.array([0.10, 0.86, 0.50], np.float32) / np.float32(math.hypot(0.10, 0.86, 0.50))
_EOSIN_COLLAGEN = np.array([0.06, 0.80, 0.60], np.float32) / np.float32(math.hypot(0.06, 0.80, 0.60))


def _lerp(n_out: int, n_in: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation from ``n_in`` to ``n_out`` samples: output ``i`` reads input position
    ``i / step``, as ``(index of the left neighbour, weight of the right one)``."""
    pos = np.arange(n_out, dtype=np.float64) / step
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    return i0, (pos - i0).astype(np.float32)


def _smooth(rng, shape, scale: float) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise with features about ``scale`` px wide (cheap at any scale:
    filtered on a coarse grid, then interpolated up along each axis)."""
    H, W = shape
    step = max(1.0, scale / 2)
    if step == 1.0:
        up = ndi.gaussian_filter(rng.standard_normal((H, W), dtype=np.float32), scale / 2, mode="wrap")
    else:
        gh, gw = int(math.ceil(H / step)) + 3, int(math.ceil(W / step)) + 3
        low = ndi.gaussian_filter(rng.standard_normal((gh, gw), dtype=np.float32), 1.0, mode="wrap")
        iy, ty = _lerp(H, gh, step)
        ix, tx = _lerp(W, gw, step)
        rows = low[iy] * (1 - ty)[:, None] + low[iy + 1] * ty[:, None]
        up = rows[:, ix] * (1 - tx) + rows[:, ix + 1] * tx
    return ((up - up.mean()) / (up.std() + 1e-6)).astype(np.float32)


def _top_share(score: np.ndarray, within: np.ndarray, share: float) -> np.ndarray:
    """The pixels of ``within`` with the highest ``score``: ``share`` of them."""
    if share <= 0 or not within.any():
        return np.zeros_like(within)
    t = np.quantile(score[within], 1.0 - min(share, 1.0))
    return within & (score > t)


def _drop_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    """``mask`` without its 8-connected pieces smaller than ``min_px`` pixels."""
    lab, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    keep = np.bincount(lab.ravel()) >= min_px
    keep[0] = False
    return keep[lab]


def _draw_fraction(rng, density: float) -> float:
    """The target fibrotic share of one tile: some near 0, most 0.05-0.45, a few up to 0.62."""
    u = rng.random()
    f = rng.uniform(0.0, 0.03) if u < 0.12 else rng.uniform(0.45, 0.62) if u > 0.88 else rng.uniform(0.05, 0.45)
    return float(np.clip(f * density, 0.0, 0.9))


def _jittered_grid(rng, shape, spacing: float, within: np.ndarray, keep: float) -> np.ndarray:
    """Flat indices of points on a jittered grid of ``spacing`` px that fall in ``within`` (a share ``keep`` of them)."""
    H, W = shape
    gy, gx = np.mgrid[0 : H + spacing : spacing, 0 : W + spacing : spacing]
    gx = gx + (np.arange(gx.shape[0])[:, None] % 2) * spacing / 2  # staggered rows
    y = (gy + rng.uniform(-0.38, 0.38, gy.shape) * spacing).ravel()
    x = (gx + rng.uniform(-0.38, 0.38, gx.shape) * spacing).ravel()
    iy, ix = np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)
    ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    idx = iy[ok] * W + ix[ok]
    idx = idx[within.ravel()[idx] & (rng.random(idx.size) < keep)]
    return np.unique(idx)


def _fibre_family(rng, shape, L: float, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wavy parallel fibre streaks in one main direction: ``(unit-variance texture, local fibre angle)``.

    The fibres are the level lines of ``psi`` = the distance across the main direction plus a smooth
    meander kept gentle enough (slope < 0.7) that the lines never close into rings; the texture is a
    1-D random profile across the fibres (bundles of varying brightness and width), read at ``psi``."""
    phi = rng.uniform(0, np.pi)
    c, s = math.cos(phi), math.sin(phi)
    along, across = xx * c + yy * s, -xx * s + yy * c
    mean = _smooth(rng, shape, rng.uniform(60, 110) * L)
    gy, gx = np.gradient(mean)
    mean *= 0.7 / (float(np.sqrt(gy**2 + gx**2).max()) + 1e-6)
    crimp = 0.8 * L * np.sin(along / (rng.uniform(4, 7) * L) + 0.6 * _smooth(rng, shape, 25 * L))  # the crimp of collagen
    psi = across + mean + crimp + 0.8 * L * _smooth(rng, shape, 10 * L)
    lo = float(psi.min()) - 2
    prof = ndi.gaussian_filter1d(rng.standard_normal(int(psi.max() - lo) + 4).astype(np.float32), 0.9 * L)
    prof /= prof.std() + 1e-6
    tex = np.interp(psi - lo, np.arange(prof.size, dtype=np.float32), prof).astype(np.float32)
    tex = tex * (0.75 + 0.25 * _smooth(rng, shape, 14 * L))  # fibres fade in and out along their length
    py, px = np.gradient(psi)
    return tex / (tex.std() + 1e-6), np.arctan2(py, px).astype(np.float32) + np.float32(np.pi / 2)


def _fibres(rng, shape, L: float) -> tuple[np.ndarray, np.ndarray]:
    """Fibre texture and direction: two families of wavy fibres, each owning smooth regions of the tile."""
    H, W = shape
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    t1, a1 = _fibre_family(rng, shape, L, yy, xx)
    t2, a2 = _fibre_family(rng, shape, L, yy, xx)
    w = 1 / (1 + np.exp(-_smooth(rng, shape, 120 * L) * 6))
    tex = (w * t1 + (1 - w) * t2) / np.sqrt(w**2 + (1 - w) ** 2)
    return tex, np.where(w >= 0.5, a1, a2)


def make_fibrosis_image(
    shape=(512, 512), seed: int = 0, *, density: float = 1.0, contrast: float = 1.0, size: float = 1.0, fraction: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One tile: ``(uint8 RGB image (H, W, 3), uint8 class map (H, W))`` with 0 background, 1 tissue, 2 fibrosis.

    ``fraction`` (0-0.9) is the target fibrotic share of the tissue (drawn per image when None; the
    realised share, measured from the class map, differs a little); ``density`` multiplies the
    drawn share, ``contrast`` the stain densities (0.6 pale, 1.5 dark), ``size`` every length.
    """
    try:
        H, W = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape {shape!r} is not a (height, width) pair", "Give two integers, e.g. (512, 512)") from None
    if H < 64 or W < 64:
        raise InputError(f"shape {tuple(shape)} is too small for synthetic tissue", "Use at least 64 x 64 pixels (512 x 512 is the default)")
    density = _number("density", density, 0, 10)
    contrast = _number("contrast", contrast, 0, 5)
    L = _number("size", size, 0.25, 4)
    if fraction is not None:
        try:
            fraction = float(fraction)
        except (TypeError, ValueError):
            raise InputError(f"fraction {fraction!r} is not a number", "Give the fibrotic share of the tissue as a number from 0 to 0.9, or leave it out") from None
        if not (0.0 <= fraction <= 0.9):
            raise InputError(f"fraction {fraction:g} is outside 0-0.9", "Give the fibrotic share of the tissue as a number from 0 to 0.9, or leave it out")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed {seed!r} is not an integer", "Use a whole number >= 0") from None
    if seed < 0:
        raise InputError(f"seed {seed} is negative", "Use a seed >= 0")
    rng = np.random.default_rng(seed)
    shp = (H, W)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)

    # --- 1. the section: a smooth blob with an irregular edge, and holes of glass
    cy, cx = rng.uniform(0.2, 0.8) * H, rng.uniform(0.2, 0.8) * W
    env = -np.hypot((yy - cy) / H, (xx - cx) / W)
    field = env + 0.22 * _smooth(rng, shp, 0.35 * max(H, W)) + 0.035 * _smooth(rng, shp, 14 * L) + 0.012 * _smooth(rng, shp, 4 * L)
    section = _top_share(field, np.ones(shp, bool), rng.uniform(0.47, 0.99))
    section = _drop_small(section, 40 * L * L)
    section |= ~_drop_small(~section, 25 * L * L)  # no pin-holes
    holes = np.zeros(shp, bool)
    cuff = np.zeros(shp, np.float32)
    n_vessels = rng.poisson(rng.uniform(2, 7) * H * W / (512**2 * L * L))
    for _ in range(n_vessels):
        a = rng.uniform(4, 25) * L
        b = a * rng.uniform(0.45, 1.0)
        reach = a * 3.4 + 4
        hy, hx = rng.uniform(0, H), rng.uniform(0, W)
        y0, y1, x0, x1 = max(0, int(hy - reach)), min(H, int(hy + reach) + 1), max(0, int(hx - reach)), min(W, int(hx + reach) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        dy, dx = yy[y0:y1, x0:x1] - hy, xx[y0:y1, x0:x1] - hx
        ang = rng.uniform(0, np.pi)
        u = (dy * math.cos(ang) + dx * math.sin(ang)) / a
        v = (-dy * math.sin(ang) + dx * math.cos(ang)) / b
        th = np.arctan2(v, u)
        r = np.hypot(u, v) / (1 + 0.08 * np.cos(2 * th + rng.uniform(0, 6.3)) + 0.05 * np.cos(3 * th + rng.uniform(0, 6.3)))
        holes[y0:y1, x0:x1] |= r < 1
        if rng.random() < 0.55:  # a fibrotic cuff around this vessel
            width = rng.uniform(0.5, 1.4)
            c = np.clip(1.0 - (r - 1) / width, 0, 1) * (r >= 1)
            cuff[y0:y1, x0:x1] = np.maximum(cuff[y0:y1, x0:x1], c)
    if rng.random() < 0.3:  # airspaces: irregular holes
        air = _smooth(rng, shp, rng.uniform(14, 26) * L)
        holes |= (air > rng.uniform(1.3, 2.0)) & (_smooth(rng, shp, 90 * L) > -0.3)
    tissue = section & ~holes
    tissue = _drop_small(tissue, 40 * L * L)
    tissue |= section & ~_drop_small(~tissue, 12 * L * L)  # holes too small to read are tissue

    # --- 2. fibrosis: patches, septa and vessel cuffs, to the drawn share of the tissue
    f = _draw_fraction(rng, density) if fraction is None else fraction
    w_patch, w_septa, w_cuff = rng.uniform(0.4, 1.2), rng.uniform(0.2, 1.6), rng.uniform(0.4, 1.6)
    lobule = _smooth(rng, shp, rng.uniform(55, 90) * L)
    septa = np.exp(-((lobule / 0.14) ** 2))
    score = w_patch * _smooth(rng, shp, rng.uniform(35, 60) * L) + w_septa * septa + w_cuff * cuff + 0.18 * _smooth(rng, shp, 7 * L)
    fib = _top_share(score, tissue, f)
    fib = _drop_small(fib, 25 * L * L)
    fib |= tissue & ~fib & ~_drop_small(tissue & ~fib, 40 * L * L)  # parenchyma crumbs inside scar are scar
    classes = (tissue.astype(np.uint8) + fib).astype(np.uint8)
    paren = tissue & ~fib

    # --- 3. stains: eosin and hematoxylin per pixel
    fibres, theta = _fibres(rng, shp, L)  # texture, direction
    grain = _smooth(rng, shp, 1.3 * L)
    mottle = _smooth(rng, shp, 25 * L)
    # nuclei: parenchyma on a jittered grid, spindles along the fibres, a few lymphocytes; one distance transform
    spacing = rng.uniform(13.5, 17.5) * L
    p_idx = _jittered_grid(rng, shp, spacing, paren, rng.uniform(0.8, 0.95))
    fcand = np.flatnonzero(fib.ravel())
    n_sp = min(fcand.size, rng.poisson(fcand.size / (rng.uniform(700, 1300) * L * L)))
    n_ly = min(fcand.size, rng.poisson(fcand.size / (rng.uniform(2500, 6000) * L * L)))
    s_idx = rng.choice(fcand, n_sp + n_ly, replace=False) if n_sp + n_ly else np.zeros(0, np.int64)
    seeds = np.concatenate([p_idx, s_idx]).astype(np.int64)
    kind = np.concatenate([np.zeros(p_idx.size, np.int8), np.ones(n_sp, np.int8), np.full(n_ly, 2, np.int8)])
    m = seeds.size
    nuc = np.zeros(shp, np.float32)
    if m:
        ra = np.where(kind == 0, rng.uniform(3.1, 4.9, m) * L, np.where(kind == 1, rng.uniform(4.5, 7.0, m) * L, rng.uniform(2.3, 3.0, m) * L))
        rb = np.where(kind == 0, ra * rng.uniform(0.72, 1.0, m), np.where(kind == 1, rng.uniform(1.1, 1.6, m) * L, ra * rng.uniform(0.85, 1.0, m)))
        ang = np.where(kind == 1, theta.ravel()[seeds] + rng.normal(0, 0.15, m), rng.uniform(0, np.pi, m))
        dark = np.where(kind == 0, rng.uniform(0.95, 1.45, m), np.where(kind == 1, rng.uniform(1.2, 1.6, m), rng.uniform(1.6, 2.0, m)))
        level = np.concatenate([[0.0], rng.normal(0, 1, m)]).astype(np.float32)  # per-cell cytoplasm shade
        marker = np.zeros(H * W, np.int64)
        marker[seeds] = np.arange(1, m + 1)
        _, (iy, ix) = ndi.distance_transform_edt(marker.reshape(shp) == 0, return_indices=True)
        cell_id = marker.reshape(shp)[iy, ix]  # 1..m: the nearest seed (a Voronoi "cell")
        j = cell_id - 1
        dy, dx = (yy - iy).astype(np.float32), (xx - ix).astype(np.float32)
        ca, sa = np.cos(ang).astype(np.float32)[j], np.sin(ang).astype(np.float32)[j]
        u, v = dx * ca + dy * sa, -dx * sa + dy * ca
        rho = np.sqrt((u / ra.astype(np.float32)[j]) ** 2 + (v / rb.astype(np.float32)[j]) ** 2) * (1 + 0.07 * _smooth(rng, shp, 2 * L))
        edge = np.clip((1 - rho) * rb.astype(np.float32)[j] * 1.6 + 0.5, 0, 1)  # anti-aliased outline
        chromatin = 0.8 + 0.25 * rho**2 + 0.18 * _smooth(rng, shp, 1.1 * L)  # rim and granules
        nuc = edge * chromatin * dark.astype(np.float32)[j]
        cell_shade = level[cell_id]
        gy, gx = np.diff(cell_id, axis=0, prepend=cell_id[:1]), np.diff(cell_id, axis=1, prepend=cell_id[:, :1])
        border = ((gy != 0) | (gx != 0)).astype(np.float32)
        border = ndi.uniform_filter(border, 2) if L > 1.4 else border
    else:
        cell_shade = np.zeros(shp, np.float32)
        border = np.zeros(shp, np.float32)
    e_par = rng.uniform(0.5, 0.66) * (1 + 0.12 * grain + 0.07 * mottle + 0.06 * cell_shade) * (1 - 0.3 * border)
    e_fib = rng.uniform(0.27, 0.36) * (1 + 0.33 * np.tanh(0.9 * fibres) + 0.05 * grain + 0.06 * mottle)
    e_fib *= 1 - 0.55 * np.clip(-fibres - 1.3, 0, 1)  # pale clefts between bundles
    h_bg = np.where(paren, rng.uniform(0.05, 0.09), np.where(fib, rng.uniform(0.02, 0.04), 0.0)).astype(np.float32)
    hema = h_bg + np.where(tissue, nuc, 0.0)
    eos_p = np.where(paren, e_par, 0.0) * (1 - 0.55 * np.clip(nuc, 0, 1))
    eos_c = np.where(fib, e_fib, 0.0) * (1 - 0.55 * np.clip(nuc, 0, 1))
    # the stains bleed a pixel or so over the class borders, as a section's do
    soft = 0.6 * L
    hema, eos_p, eos_c = (ndi.gaussian_filter(a.astype(np.float32), soft) for a in (hema, eos_p, eos_c))

    # --- 4. stain strength and hue per tile, Beer-Lambert, optics and camera
    k_h, k_e = contrast * rng.uniform(0.6, 1.4, 2)  # lab-to-lab stain strength varies widely
    h_vec = _HEMATOXYLIN * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    e_vec = _EOSIN * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    c_vec = _EOSIN_COLLAGEN * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    od = (k_h * hema[..., None] * h_vec + k_e * (eos_p[..., None] * e_vec + eos_c[..., None] * c_vec)).astype(np.float32)
    od += np.float32(0.012) * np.abs(_smooth(rng, shp, 40))[..., None] * e_vec  # faint mounting-medium tint
    g = rng.uniform(-0.04, 0.04, 2)
    r2 = ((yy - rng.uniform(0, H)) / H) ** 2 + ((xx - rng.uniform(0, W)) / W) ** 2
    light = rng.uniform(242, 253) * (1 + g[0] * (yy / H - 0.5) + g[1] * (xx / W - 0.5) - rng.uniform(0, 0.03) * r2)
    tint = rng.uniform(0.985, 1.0, 3).astype(np.float32)
    rgb = (light[..., None] * tint) * np.exp(-od)
    rgb = ndi.gaussian_filter(rgb, (rng.uniform(0.4, 0.9) * min(L, 2.0),) * 2 + (0,))
    sd = np.sqrt(np.maximum(rgb, 0) / rng.uniform(8, 25)) + rng.uniform(0.8, 2.0)  # shot and read noise
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * sd
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), classes


def write_fibrosis_dataset(out_dir, n: int, *, size: int = 512, seed: int = 0, density: float = 1.0, contrast: float = 1.0, scale: float = 1.0) -> list[pathlib.Path]:
    """Write ``n`` tiles of ``size`` x ``size`` px; returns the image paths.

    ``images/fibrosis_<seed>_<i:04d>.tif`` (RGB uint8), ``masks/`` (uint8 class maps, same names,
    zlib) and ``truth.csv`` (per image: the area of each class, the tissue area and the fractions,
    from :func:`~napari_impc_dl.measure.areas.area_counts`). ``scale`` is ``make_fibrosis_image(size=...)``.
    """
    import pandas as pd

    from ..io.outputs import write_csv_atomic

    try:
        n, size, seed = int(n), int(size), int(seed)
    except (TypeError, ValueError):
        raise InputError(f"number of images {n!r}, size {size!r} or seed {seed!r} is not a whole number", "Give integers") from None
    if n < 1:
        raise InputError(f"number of images {n} is below 1", "Ask for 1 or more images")
    if size < 64:
        raise InputError(f"image size {size} is below 64", "Use a size of 64 px or more, e.g. 512")
    if seed < 0:
        raise InputError(f"seed {seed} is negative", "Use a seed >= 0")
    _number("density", density, 0, 10), _number("contrast", contrast, 0, 5), _number("scale", scale, 0.25, 4)
    out = pathlib.Path(out_dir)
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write to {out} ({exc.strerror or exc})", "Choose a folder you can write to") from exc
    rows, paths = [], []
    for i in range(n):
        img, classes = make_fibrosis_image((size, size), dataset_image_seed(seed, i) % 2**63, density=density, contrast=contrast, size=scale)
        stem = f"fibrosis_{seed}_{i:04d}"
        _atomic_tif(out / "images" / f"{stem}.tif", img, metadata={"axes": "YXS"}, photometric="rgb")
        _atomic_tif(out / "masks" / f"{stem}.tif", classes, compression="zlib")
        rows.append({"image": stem, **area_counts(class_areas(classes, len(CLASSES)), CLASSES, BACKGROUND)})
        paths.append(out / "images" / f"{stem}.tif")
    write_csv_atomic(out / "truth.csv", pd.DataFrame(rows))
    return paths
