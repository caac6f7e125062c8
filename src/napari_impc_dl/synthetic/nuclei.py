"""Synthetic fluorescence nuclei (DAPI / Hoechst) with exact instance ground truth.

These images train the bundled starter U-Net and are the test data of the whole project, so they
try to look like widefield / confocal images of mouse nuclei, while every nucleus stays visible.

How one image is made (:func:`make_nuclei_image`)
-------------------------------------------------
1. **Style** (:class:`_Style`): per-image settings drawn from the seed: size scale, density,
   blur, background, camera gain / offset / noise, texture strength.
2. **Nuclei** (:func:`_sample_nuclei`): rotated ellipses with smooth low-order radial deformation
   (``r(theta) = ellipse(theta) * (1 + sum_k a_k cos(k theta + phi_k))``), log-normal sizes and
   brightness, a few small bright condensed (mitotic) ones. Positions come from random
   sequential placement; part of them are put next to an existing nucleus so clusters touch.
3. **Ground truth** (:func:`_rasterize`, :func:`_clean_labels`): each pixel belongs to the nucleus
   with the smallest normalised distance ``d = |p - c| / r(theta) < 1``, so overlapping nuclei are
   split along a smooth curve and labels never overlap. Each label keeps its largest
   4-connected piece, tiny fragments are dropped, ids become 1..n.
4. **Image** (:func:`_signal`, :func:`_camera`): brightness x dome profile x chromatin texture,
   bright chromocentre spots, a darker seam where nuclei touch, Gaussian PSF, out-of-focus haze,
   a smooth illumination field over a background level, shot noise (Poisson below 30 photons,
   its Gaussian approximation above, which is much faster), gain, offset and Gaussian read noise,
   rounded to ``uint16``.

Everything is drawn in global pixel coordinates (texture noise is a hash of the coordinates), so
:func:`write_large_nuclei_zarr` can render a huge image block by block without seams and
without ever holding the whole image.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from ..errors import CancelToken, InputError

__all__ = ["make_nuclei_image", "write_nuclei_dataset", "write_large_nuclei_zarr", "dataset_image_seed"]

_N_HARM = 3  # radial deformation harmonics k = 2, 3, 4


# --------------------------------------------------------------------------- style


@dataclasses.dataclass(frozen=True)
class _Style:
    """Per-image settings. Lengths are in pixels; intensities relative to a median nucleus (1.0)."""

    scale: float  # multiplies every length below
    density: float  # target fraction of the area covered by nuclei
    radius: float  # median equivalent radius
    cluster_prob: float  # chance a new nucleus is placed against an existing one
    bright_sigma: float  # log-normal spread of nucleus brightness
    dome: float  # centre-to-edge intensity fall-off
    texture_amp: float
    texture_sigma: float
    spot_rate: float  # chromocentres per nucleus of median size
    spot_sigma: float
    seam: float  # intensity factor on pixels where two nuclei touch
    psf_sigma: float
    haze: float  # out-of-focus light, fraction of the blurred signal
    haze_sigma: float
    background: float
    illum: tuple  # (gy, gx, [(c, ky, kx, phase), ...]) of the illumination field
    photons: float  # expected photons of a median nucleus pixel
    gain: float  # ADU per photon
    offset: float  # camera offset in ADU
    read_noise: float  # ADU

    @property
    def margin(self) -> int:
        """Context (px) a block needs on each side so filtering leaves no seam."""
        return int(math.ceil(4 * (self.texture_sigma + self.spot_sigma + self.psf_sigma) + 3 * self.haze_sigma)) + 2


def _sample_style(rng: np.random.Generator, scale, density, field: float, gradient: bool = True) -> _Style:
    scale = float(rng.uniform(0.8, 1.25)) if scale is None else float(scale)
    if density is None:
        density = float(rng.uniform(0.06, 0.5))
    waves = []
    for _ in range(3):
        length = field * rng.uniform(0.6, 2.5)
        ang = rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / length
        waves.append((rng.uniform(0.02, 0.08), k * math.sin(ang), k * math.cos(ang), rng.uniform(0, 2 * np.pi)))
    g = rng.uniform(-0.25, 0.25, 2) if gradient else np.zeros(2)
    return _Style(
        scale=scale,
        density=float(density),
        radius=float(rng.uniform(7.5, 10.5)) * scale,
        cluster_prob=float(rng.uniform(0.15, 0.6)),
        bright_sigma=float(rng.uniform(0.2, 0.45)),
        dome=float(rng.uniform(0.1, 0.35)),
        texture_amp=float(rng.uniform(0.08, 0.3)),
        texture_sigma=float(rng.uniform(0.8, 1.6)) * scale,
        spot_rate=float(rng.uniform(0.0, 4.0)),
        spot_sigma=float(rng.uniform(0.7, 1.2)) * scale,
        seam=float(rng.uniform(0.45, 0.8)),
        psf_sigma=float(rng.uniform(0.6, 1.4)) * scale,
        haze=float(rng.uniform(0.0, 0.15)),
        haze_sigma=float(rng.uniform(6.0, 10.0)) * scale,
        background=float(rng.uniform(0.04, 0.18)),
        illum=(float(g[0]), float(g[1]), tuple(waves)),
        photons=float(np.exp(rng.uniform(np.log(60), np.log(1500)))),
        gain=float(rng.uniform(0.8, 3.0)),
        offset=float(rng.uniform(90, 500)),
        read_noise=float(rng.uniform(1.5, 6.0)),
    )


# --------------------------------------------------------------------------- nuclei


@dataclasses.dataclass
class _Nuclei:
    """Struct of arrays, one entry per nucleus; spots carry the index of their nucleus."""

    cy: np.ndarray
    cx: np.ndarray
    a: np.ndarray  # semi-axes before deformation
    b: np.ndarray
    angle: np.ndarray
    amp: np.ndarray  # (n, _N_HARM) deformation amplitudes
    phase: np.ndarray  # (n, _N_HARM)
    bright: np.ndarray
    spot_y: np.ndarray
    spot_x: np.ndarray
    spot_amp: np.ndarray
    spot_owner: np.ndarray

    def __len__(self) -> int:
        return len(self.cy)

    @staticmethod
    def concat(parts: list[_Nuclei]) -> _Nuclei:
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        fields = {}
        for name in _Nuclei.__dataclass_fields__:
            vals = [getattr(p, name) for p in parts]
            if name == "spot_owner":
                vals = [v + o for v, o in zip(vals, offsets)]
            fields[name] = np.concatenate(vals)
        return _Nuclei(**fields)


def _deform(alpha: np.ndarray, beta: np.ndarray, c1: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """``1 + sum_k alpha_k cos(k theta) + beta_k sin(k theta)`` for k = 2, 3, 4, from cos / sin theta.

    ``alpha = amp * cos(phase)`` and ``beta = -amp * sin(phase)`` turn ``amp cos(k theta + phase)``
    into products; the multiple angles come from the Chebyshev recurrences (no trigonometry).
    """
    c2, s2 = c1 * c1 - s1 * s1, 2 * s1 * c1
    c3, s3 = c2 * c1 - s2 * s1, s2 * c1 + c2 * s1
    c4, s4 = c2 * c2 - s2 * s2, 2 * s2 * c2
    return 1 + alpha[0] * c2 + beta[0] * s2 + alpha[1] * c3 + beta[1] * s3 + alpha[2] * c4 + beta[2] * s4


def _place(rng: np.random.Generator, st: _Style, y0: float, x0: float, h: float, w: float):
    """Random sequential placement of centres in [y0, y0+h) x [x0, x0+w) until ``st.density`` is covered.

    A share ``st.cluster_prob`` of candidates is put against an existing nucleus (centre distance
    0.78-0.95 x the radius sum) so clusters touch; others keep a small gap. No centre may lie
    inside another nucleus. A grid of cells (2 x the largest radius) keeps each check local.
    """
    target = st.density * h * w
    r_min, r_max = 5.0 * st.scale, 16.0 * st.scale
    n_max = int(target / (np.pi * (0.5 * st.radius) ** 2)) + 8
    n_try = 8 * n_max + 50
    # all random numbers drawn up front (fast, and deterministic whatever the loop does)
    radii = np.clip(st.radius * np.exp(rng.normal(0, 0.22, n_try)), r_min, r_max).tolist()
    cluster = (rng.random(n_try) < st.cluster_prob).tolist()
    pick, turn = rng.random(n_try).tolist(), (rng.random(n_try) * 2 * np.pi).tolist()
    gap = rng.uniform(0.78, 0.95, n_try).tolist()
    uy, ux = (y0 + rng.random(n_try) * h).tolist(), (x0 + rng.random(n_try) * w).tolist()
    cell = 2 * r_max  # >= the largest distance at which two nuclei can conflict
    grid: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    cy: list[float] = []
    cx: list[float] = []
    r: list[float] = []
    covered = 0.0
    for t in range(n_try):
        if covered >= target or len(r) >= n_max:
            break
        ri = radii[t]
        clustered = bool(r) and cluster[t]
        if clustered:  # against an existing nucleus: touching clusters
            j = int(pick[t] * len(r))
            dist = (ri + r[j]) * gap[t]
            y, x = cy[j] + dist * math.sin(turn[t]), cx[j] + dist * math.cos(turn[t])
            if not (y0 <= y < y0 + h and x0 <= x < x0 + w):
                continue
        else:
            y, x = uy[t], ux[t]
        gy, gx = int((y - y0) // cell), int((x - x0) // cell)
        if _conflicts(grid, gy, gx, y, x, ri, clustered):
            continue
        grid.setdefault((gy, gx), []).append((y, x, ri))
        cy.append(y)
        cx.append(x)
        r.append(ri)
        covered += math.pi * ri * ri
    return np.array(cy, float), np.array(cx, float), np.array(r, float)


def _conflicts(grid: dict, gy: int, gx: int, y: float, x: float, ri: float, clustered: bool) -> bool:
    """Whether a nucleus at (y, x) of radius ``ri`` comes too close to one already in the 3 x 3 cells.

    Free nuclei need a centre distance of at least the radius sum; clustered ones may overlap down
    to 0.75 x the sum, but never so far that one centre lies within the other nucleus
    (distance >= larger radius + 0.45 x smaller).
    """
    for ky in (gy - 1, gy, gy + 1):
        for kx in (gx - 1, gx, gx + 1):
            for yj, xj, rj in grid.get((ky, kx), ()):
                s = rj + ri
                need = max(0.75 * s, 0.45 * s + 0.55 * max(rj, ri)) if clustered else s
                if (yj - y) ** 2 + (xj - x) ** 2 < need * need:
                    return True
    return False


def _sample_nuclei(rng: np.random.Generator, st: _Style, y0: float, x0: float, h: float, w: float) -> _Nuclei:
    """Nuclei with centres in [y0, y0+h) x [x0, x0+w): positions, shapes, brightness, chromocentres."""
    cy, cx, r = _place(rng, st, y0, x0, h, w)
    n = len(r)
    r_min = 5.0 * st.scale
    bright = np.clip(np.exp(rng.normal(0, st.bright_sigma, n)), 0.35, 3.0)
    ratio = rng.uniform(0.6, 1.0, n)  # minor / major axis
    mitotic = rng.random(n) < 0.04  # small, round, bright, condensed
    r = np.where(mitotic, np.maximum(r * 0.65, r_min), r)
    ratio = np.where(mitotic, np.maximum(ratio, 0.8), ratio)
    bright = np.where(mitotic, bright * 1.8, bright)
    amp = rng.normal(0, 1, (n, _N_HARM)) * (np.array([0.06, 0.04, 0.025]) * rng.uniform(0.3, 1.3, (n, 1)))
    amp = np.clip(amp, -0.1, 0.1)
    phase = rng.uniform(0, 2 * np.pi, (n, _N_HARM))
    a, b = r / np.sqrt(ratio), r * np.sqrt(ratio)
    angle = rng.uniform(0, np.pi, n)

    # chromocentres: bright spots inside (normalised distance < 0.8)
    n_spots = rng.poisson(st.spot_rate * (r / st.radius) ** 2 * ~mitotic)
    owner = np.repeat(np.arange(n), n_spots)
    psi = rng.uniform(0, 2 * np.pi, owner.size)
    rho = 0.8 * np.sqrt(rng.random(owner.size))
    u, v = a[owner] * np.cos(psi), b[owner] * np.sin(psi)
    alpha, beta = (amp * np.cos(phase)).T, (-amp * np.sin(phase)).T
    rr = np.maximum(np.hypot(u, v), 1e-9)
    s = rho * _deform(alpha[:, owner], beta[:, owner], u / rr, v / rr)
    u, v = u * s, v * s
    ca, sa = np.cos(angle[owner]), np.sin(angle[owner])
    spot_x, spot_y = cx[owner] + u * ca - v * sa, cy[owner] + u * sa + v * ca
    spot_amp = bright[owner] * rng.uniform(0.3, 0.9, owner.size)
    return _Nuclei(cy, cx, a, b, angle, amp, phase, bright, spot_y, spot_x, spot_amp, owner)


# --------------------------------------------------------------------------- ground truth


def _rasterize(nuc: _Nuclei, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Label window [y0, y0+h) x [x0, x0+w): (index+1 of the owning nucleus, its normalised distance).

    All nuclei at once: the pixels of every nucleus's bounding box are laid end to end, the
    normalised distance is computed for all of them, and each pixel goes to the smallest.
    """
    lab = np.zeros((h, w), np.int32)
    best = np.ones((h, w), np.float32)  # normalised distance of the owner; 1 = outside all
    grow = 1 + np.abs(nuc.amp).sum(1)
    c, sn = np.cos(nuc.angle), np.sin(nuc.angle)
    ry = np.hypot(nuc.a * sn, nuc.b * c) * grow + 1  # half extents of the rotated, deformed ellipse
    rx = np.hypot(nuc.a * c, nuc.b * sn) * grow + 1
    ylo = np.maximum(np.floor(nuc.cy - ry).astype(np.int64) - y0, 0)
    yhi = np.minimum(np.ceil(nuc.cy + ry).astype(np.int64) + 1 - y0, h)
    xlo = np.maximum(np.floor(nuc.cx - rx).astype(np.int64) - x0, 0)
    xhi = np.minimum(np.ceil(nuc.cx + rx).astype(np.int64) + 1 - x0, w)
    k = np.flatnonzero((ylo < yhi) & (xlo < xhi))
    if k.size == 0:
        return lab, best
    bw = (xhi - xlo)[k].astype(np.int32)
    npx = (yhi - ylo)[k].astype(np.int32) * bw
    own = np.repeat(np.arange(k.size, dtype=np.int32), npx)
    local = np.arange(own.size, dtype=np.int32) - np.repeat((np.cumsum(npx) - npx).astype(np.int32), npx)
    row, col = np.divmod(local, bw[own])
    del local
    f32 = np.float32
    # per-nucleus constants (float32, relative to the window origin), gathered per pixel
    yy = row.astype(f32)
    yy += (ylo[k] - (nuc.cy[k] - y0)).astype(f32)[own]
    xx = col.astype(f32)
    xx += (xlo[k] - (nuc.cx[k] - x0)).astype(f32)[own]
    cg, sg = c[k].astype(f32)[own], sn[k].astype(f32)[own]
    u = xx * cg + yy * sg
    v = yy * cg - xx * sg
    del xx, yy, cg, sg
    rho = np.maximum(np.hypot(u, v), f32(1e-6))
    amp, phase = nuc.amp[k], nuc.phase[k]
    alpha = [(amp[:, j] * np.cos(phase[:, j])).astype(f32)[own] for j in range(_N_HARM)]
    beta = [(-amp[:, j] * np.sin(phase[:, j])).astype(f32)[own] for j in range(_N_HARM)]
    d = np.hypot(u * (1 / nuc.a[k]).astype(f32)[own], v * (1 / nuc.b[k]).astype(f32)[own])
    d /= _deform(alpha, beta, u / rho, v / rho)
    inside = np.flatnonzero(d < 1)
    d, own = d[inside], own[inside]
    flat = (row[inside] + ylo[k].astype(np.int32)[own]) * w + (col[inside] + xlo[k].astype(np.int32)[own])
    np.minimum.at(best.reshape(-1), flat, d)
    win = d == best.reshape(-1)[flat]
    lab.reshape(-1)[flat[win]] = k.astype(np.int32)[own[win]] + 1
    return lab, best


def _clean_labels(lab: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the largest 4-connected piece of each label if >= ``min_area`` px; ids 1..n in order.

    Returns (labels int32, owner) where ``owner[i]`` is the input id of output label ``i + 1``.
    """
    from skimage.measure import label as cc_label

    comp = cc_label(lab, background=0, connectivity=1)  # equal-valued neighbours only
    n_comp = int(comp.max())
    if n_comp == 0:
        return np.zeros(lab.shape, np.int32), np.zeros(0, np.int64)
    size = np.bincount(comp.ravel(), minlength=n_comp + 1)
    src = np.zeros(n_comp + 1, np.int64)
    src[comp.ravel()] = lab.ravel()
    ids = np.arange(1, n_comp + 1)
    order = ids[np.lexsort((-size[1:], src[1:]))]  # by source id, largest piece first
    first = np.r_[True, src[order][1:] != src[order][:-1]]
    keep = order[first & (size[order] >= min_area)]
    lut = np.zeros(n_comp + 1, np.int32)
    lut[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    return lut[comp], src[keep]


# --------------------------------------------------------------------------- image formation


def _hash_noise(seed: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Uniform [-0.5, 0.5) noise that depends only on (seed, global pixel coordinates): splitmix64."""
    m = np.uint64(0xFFFFFFFFFFFFFFFF)
    ys = (np.arange(y0, y0 + h, dtype=np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & m
    xs = (np.arange(x0, x0 + w, dtype=np.int64).astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)) & m
    z = (ys[:, None] ^ xs[None, :]) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24) - np.float32(0.5)


def _signal(lab, d, bright, nuc: _Nuclei, owner, st: _Style, y0: int, x0: int, tex_seed: int) -> np.ndarray:
    """Noise-free, blurred nucleus signal (relative units) of a window; ``lab`` are ids into ``owner``."""
    h, w = lab.shape
    level = np.zeros(len(owner) + 1, np.float32)
    level[1:] = bright[owner]
    src = np.full(len(owner) + 1, -1, np.int64)  # label id -> nucleus index
    src[1:] = owner
    fg = lab > 0
    sig = level[lab] * (1 - np.float32(st.dome) * d * d)
    # chromatin texture: smoothed coordinate-hash noise with unit standard deviation
    tex = ndi.gaussian_filter(_hash_noise(tex_seed, y0, x0, h, w), st.texture_sigma)
    tex *= np.float32(math.sqrt(12.0) * 2 * math.sqrt(math.pi) * st.texture_sigma)
    sig *= np.maximum(1 + np.float32(st.texture_amp) * tex, 0.3)
    # darker seam where two different nuclei touch (4-neighbours)
    seam = np.zeros((h, w), bool)
    diff = (lab[1:] != lab[:-1]) & fg[1:] & fg[:-1]
    seam[1:] |= diff
    seam[:-1] |= diff
    diff = (lab[:, 1:] != lab[:, :-1]) & fg[:, 1:] & fg[:, :-1]
    seam[:, 1:] |= diff
    seam[:, :-1] |= diff
    sig[seam] *= np.float32(st.seam)
    # chromocentres, kept inside their own nucleus
    if nuc.spot_y.size:
        iy = np.rint(nuc.spot_y).astype(np.int64) - y0
        ix = np.rint(nuc.spot_x).astype(np.int64) - x0
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        ok[ok] = src[lab[iy[ok], ix[ok]]] == nuc.spot_owner[ok]  # only on their own nucleus
        if ok.any():
            delta = np.zeros((h, w), np.float32)
            np.add.at(delta, (iy[ok], ix[ok]), nuc.spot_amp[ok].astype(np.float32))
            spots = ndi.gaussian_filter(delta, st.spot_sigma) * np.float32(2 * np.pi * st.spot_sigma**2)
            sig += spots * fg
    sig = ndi.gaussian_filter(sig, st.psf_sigma)
    if st.haze > 0:
        sig += np.float32(st.haze) * ndi.gaussian_filter(sig, st.haze_sigma, truncate=3.0)
    return sig


def _illumination(st: _Style, y0: int, x0: int, h: int, w: int, field: float) -> np.ndarray:
    """Smooth multiplicative illumination field at global coordinates (separable cosines + a ramp)."""
    gy, gx, waves = st.illum
    y = np.arange(y0, y0 + h, dtype=np.float64)[:, None]
    x = np.arange(x0, x0 + w, dtype=np.float64)[None, :]
    out = 1 + gy * (y / field - 0.5) + gx * (x / field - 0.5)
    for c, ky, kx, ph in waves:  # cos(ky y + kx x + ph), as outer products
        out = out + c * (np.cos(ky * y + ph) * np.cos(kx * x) - np.sin(ky * y + ph) * np.sin(kx * x))
    return np.maximum(out, 0.4).astype(np.float32)


def _camera(sig: np.ndarray, illum: np.ndarray, st: _Style, rng: np.random.Generator) -> np.ndarray:
    """Expected photons -> Poisson -> gain, offset, read noise -> uint16."""
    lam = np.maximum((sig + np.float32(st.background)) * illum * np.float32(st.photons), 0)
    # shot noise: Gaussian approximation where counts are high (fast), exact Poisson where low
    photons = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
    low = np.flatnonzero(lam.reshape(-1) < 30)
    photons.reshape(-1)[low] = rng.poisson(lam.reshape(-1)[low])
    adu = np.maximum(np.rint(photons), 0) * np.float32(st.gain)
    adu += rng.standard_normal(adu.shape, dtype=np.float32) * np.float32(st.read_noise) + np.float32(st.offset)
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------- public API


def _check(shape, density, scale) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape {shape!r} is not a (height, width) pair", "Give two integers: (256, 256).") from None
    if h < 16 or w < 16:
        raise InputError(f"shape {shape!r} is too small for synthetic nuclei", "Use at least 16 x 16 pixels.")
    if density is not None and not 0 <= density <= 0.6:
        raise InputError(f"density {density!r} is outside 0..0.6", "Give the covered area fraction, e.g. 0.3.")
    if scale is not None and not 0.25 <= scale <= 4:
        raise InputError(f"scale {scale!r} is outside 0.25..4", "1.0 gives nuclei of radius ~5-16 px.")
    return h, w


def make_nuclei_image(
    shape: tuple[int, int] = (256, 256), seed: int = 0, *, density: float | None = None, scale: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Make one synthetic fluorescence nuclei image and its instance ground truth.

    Parameters
    ----------
    shape : (int, int)
        Image height and width in pixels (at least 16 x 16).
    seed : int
        Seed; the same seed always gives the same image.
    density : float, optional
        Fraction of the area covered by nuclei (0 .. 0.6; 0.05 sparse, 0.45 crowded).
        Drawn from the seed (0.06 .. 0.5) when not given.
    scale : float, optional
        Size factor for nuclei, texture and blur; at 1.0 equivalent radii are ~5-16 px.
        Drawn from the seed (0.8 .. 1.25) when not given.

    Returns
    -------
    image : np.ndarray
        ``uint16`` (H, W) camera image.
    labels : np.ndarray
        ``int32`` (H, W): 0 background, 1..n one id per nucleus (consecutive, no overlaps, each a
        single 4-connected region of at least ~15 px; nuclei cut by the border are kept).
    """
    h, w = _check(shape, density, scale)
    if int(seed) < 0:
        raise InputError(f"seed {seed} is negative", "Use a seed >= 0.")
    rng = np.random.default_rng(int(seed))
    st = _sample_style(rng, scale, density, field=float(max(h, w)))
    pad = st.radius  # centres may lie just outside, so nuclei are cut by the border
    nuc = _sample_nuclei(rng, st, -pad, -pad, h + 2 * pad, w + 2 * pad)
    raw, d = _rasterize(nuc, 0, 0, h, w)
    labels, owner = _clean_labels(raw, min_area=max(8, round(15 * st.scale**2)))
    d[labels == 0] = 1.0
    sig = _signal(labels, d, nuc.bright, nuc, owner - 1, st, 0, 0, int(rng.integers(2**62)))
    image = _camera(sig, _illumination(st, 0, 0, h, w, float(max(h, w))), st, rng)
    return image, labels


def dataset_image_seed(seed: int, i: int) -> int:
    """Seed of image ``i`` of the dataset with ``seed``.

    A 64-bit hash of ``(seed, i)``: distinct pairs give distinct seeds (collisions are
    astronomically unlikely), and never small numbers, so images made with
    ``make_nuclei_image(seed=k)`` for small ``k`` (test data) are not in any written dataset.
    """
    if seed < 0 or i < 0:
        raise InputError(f"seed {seed} / index {i} is negative", "Use a seed >= 0.")
    a, b = np.random.SeedSequence([int(seed), int(i), 0x4E55]).generate_state(2, np.uint32)
    return (int(a) << 32) | int(b)


def _atomic_tif(path: pathlib.Path, data: np.ndarray, **kwargs) -> None:
    import tifffile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        tifffile.imwrite(tmp, data, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_nuclei_dataset(
    out_dir,
    n: int,
    *,
    size: int = 256,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> list[pathlib.Path]:
    """Write ``n`` synthetic images and instance masks for training or testing.

    Files are ``out_dir/images/nuclei_<seed>_<i:04d>.tif`` and ``out_dir/masks/<same name>``
    (``int32`` labels), ``truth.csv`` (image, n_objects) and ``objects_truth.csv`` (image, label, class). Image ``i`` equals ``make_nuclei_image((size, size),
    dataset_image_seed(seed, i))``, so a dataset is reproducible and different seeds never share
    images. Each file is written to a temporary file in the same folder, then renamed.

    Parameters
    ----------
    out_dir : str or path
        Output folder, created if needed.
    n : int
        Number of images.
    size : int
        Height and width of each image.
    seed : int
        Dataset seed (>= 0).
    progress : callable, optional
        Called as ``progress(done, n)`` after each image.
    cancel : CancelToken, optional
        Checked between images; the files written by this call are removed on cancel.

    Returns
    -------
    list of pathlib.Path
        The image paths, in order.

    Raises
    ------
    InputError
        If ``out_dir`` cannot be created or written, or ``n`` / ``size`` / ``seed`` are invalid.
    """
    if n < 0:
        raise InputError(f"number of images {n} is negative", "Ask for 1 or more images.")
    _check((size, size), None, None)
    out = pathlib.Path(out_dir)
    img_dir, mask_dir = out / "images", out / "masks"
    paths: list[pathlib.Path] = []
    truth: list[dict] = []
    objects: list[tuple] = []
    for i in range(n):
        if cancel is not None and cancel.cancelled:
            for p in paths:  # a cancelled run leaves nothing that looks like a dataset
                p.unlink(missing_ok=True)
                (mask_dir / p.name).unlink(missing_ok=True)
            cancel.raise_if_cancelled()
        image, labels = make_nuclei_image((size, size), dataset_image_seed(seed, i))
        name = f"nuclei_{seed}_{i:04d}.tif"
        try:
            img_dir.mkdir(parents=True, exist_ok=True)
            mask_dir.mkdir(parents=True, exist_ok=True)
            _atomic_tif(img_dir / name, image)
            _atomic_tif(mask_dir / name, labels, compression="zlib")
        except OSError as exc:
            raise InputError(
                f"cannot write the synthetic dataset to {out} ({exc.strerror or exc})",
                "Choose a folder you can write to, with free disk space.",
            ) from exc
        paths.append(img_dir / name)
        truth.append({"image": name[:-4], "n_objects": int(labels.max())})
        objects += [(name[:-4], k, "nucleus") for k in range(1, int(labels.max()) + 1)]
        if progress is not None:
            progress(i + 1, n)
    if paths:
        from .truth import write_truth_tables

        write_truth_tables(out, truth, objects)  # the nuclei preset's counts column, and every object's class
    return paths


def _block_nuclei(seed: int, st: _Style, by: int, bx: int, chunk: int) -> _Nuclei:
    """Nuclei centred in block (by, bx); density drifts slowly over the image (cell culture is patchy)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, by, bx, 1]))
    yc, xc = (by + 0.5) * chunk / 4096.0, (bx + 0.5) * chunk / 4096.0
    drift = 1 + 0.5 * math.sin(2 * math.pi * yc + seed) * math.cos(2 * math.pi * xc + 2 * seed)
    block = dataclasses.replace(st, density=min(max(st.density * drift, 0.03), 0.55))
    return _sample_nuclei(rng, block, by * chunk, bx * chunk, chunk, chunk)


def write_large_nuclei_zarr(
    path,
    size: int,
    *,
    chunk: int = 1024,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> pathlib.Path:
    """Write a ``size`` x ``size`` ``uint16`` synthetic nuclei image as a zarr v3 array (benchmarks).

    The image is rendered block by block (one block per ``chunk`` x ``chunk`` zarr chunk). Each
    block draws its own nuclei from a block-derived seed, and also draws those of its neighbours
    that reach into it, with shared style, texture and illumination in global coordinates; so
    nothing changes at block borders and memory stays flat (a 16384 x 16384 image is never held).
    Blocks place their nuclei independently, so two nuclei may overlap a little more than usual
    at a block border. No ground truth is written. The array goes to a temporary folder next to ``path`` and is
    renamed into place when complete.

    Parameters
    ----------
    path : str or path
        Output ``.zarr`` folder.
    size : int
        Height and width in pixels.
    chunk : int
        Zarr chunk and render block size (>= 128).
    seed : int
        Seed (>= 0); the same ``seed`` and ``chunk`` always give the same image.
    overwrite : bool
        Replace an existing ``path``; otherwise an existing path is an error.
    progress : callable, optional
        Called as ``progress(done_blocks, total_blocks)``.
    cancel : CancelToken, optional
        Checked between blocks; the temporary folder is removed on cancel or error.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import zarr

    _check((size, size), None, None)
    if chunk < 128:
        raise InputError(f"chunk {chunk} is too small", "Use chunks of at least 128 pixels (default 1024).")
    if seed < 0:
        raise InputError(f"seed {seed} is negative", "Use a seed >= 0.")
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists", "Remove it, choose another path, or pass overwrite=True.")
    st = _sample_style(np.random.default_rng([seed, 0]), None, None, field=2048.0, gradient=False)
    tex_seed = int(np.random.SeedSequence([seed, 2]).generate_state(1, np.uint64)[0])
    nb = -(-size // chunk)
    m = st.margin
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise InputError(f"cannot create {path} ({exc.strerror or exc})", "Choose a folder you can write to.") from exc
    try:
        arr = zarr.create_array(
            store=str(tmp), shape=(size, size), chunks=(chunk, chunk), dtype="uint16", zarr_format=3, overwrite=True
        )
        cache: dict[tuple[int, int], _Nuclei] = {}
        for by in range(nb):
            for key in [k for k in cache if k[0] < by - 1]:
                del cache[key]
            for bx in range(nb):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                parts = []
                for ny in range(max(by - 1, 0), min(by + 2, nb)):
                    for nx in range(max(bx - 1, 0), min(bx + 2, nb)):
                        if (ny, nx) not in cache:
                            cache[(ny, nx)] = _block_nuclei(seed, st, ny, nx, chunk)
                        parts.append(cache[(ny, nx)])
                nuc = _Nuclei.concat(parts)
                y0, x0 = by * chunk, bx * chunk
                h, w = min(chunk, size - y0), min(chunk, size - x0)
                lab, d = _rasterize(nuc, y0 - m, x0 - m, h + 2 * m, w + 2 * m)
                sig = _signal(lab, d, nuc.bright, nuc, np.arange(len(nuc)), st, y0 - m, x0 - m, tex_seed)
                sig = sig[m : m + h, m : m + w]
                rng = np.random.default_rng(np.random.SeedSequence([seed, by, bx, 3]))
                arr[y0 : y0 + h, x0 : x0 + w] = _camera(sig, _illumination(st, y0, x0, h, w, 2048.0), st, rng)
                if progress is not None:
                    progress(by * nb + bx + 1, nb * nb)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        hint = "Check free disk space and permissions."
        raise InputError(f"cannot write {path} ({exc.strerror or exc})", hint) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
