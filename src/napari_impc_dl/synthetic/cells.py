"""Synthetic two-channel fields of touching cells, each in a mitosis phase, with exact ground truth.

For the cell U-Net (two channels in, foreground + distance out, seeded watershed) and the phase
classifier (a 64-96 px crop of one cell: both channels + its mask). The look follows
CellCognition-like HeLa fields: channel 0 is cytoplasm / membrane (tubulin-like fill, brighter
rim), channel 1 is DNA (H2B). Phases: :data:`PHASES`; the mitotic ones: :data:`MITOTIC`.

How one image is made (:func:`make_cells_image`)
------------------------------------------------
1. **Placement** (:func:`_place`): 25-70 cells per 512 x 512 at ``density=1`` (diameter 28-50 px
   at ``size=1``), each with a phase drawn from the weights. Part of the cells are put against an
   existing one (centre distance 0.72-0.95 x the radius sum) so colonies of touching cells grow;
   the rest fall where a smooth density field allows, so some cells are isolated and some areas
   stay empty.
2. **Cell labels** (:func:`_rasterize`): each cell has a normalised distance ``d`` (a rotated
   ellipse times low harmonics, times two image-wide smooth noise fields mixed per cell, so shared
   membranes wobble); telophase cells are two overlapping lobes (an hourglass), apoptotic ones a
   shrunken body with blebs. A pixel goes to the cell with the smallest ``d`` where
   ``d < 1 + edge noise``; mitotic and apoptotic cells (rounded up, lifted) win over interphase
   neighbours. Each cell keeps its largest 4-connected piece, cells < 150 px (x size^2) are
   dropped, ids become 1..n. A telophase hourglass is then split at its furrow into the two
   daughter cells it is becoming (each its own label, each ``telophase``: what a cell segmentation
   should give, and how CellCognition counts telophase objects), unless a lobe was lost to a neighbour.
3. **DNA** (:func:`_dna`), drawn in the cell's own frame on its window and clipped to the cell
   minus its rim: interphase = large oval, mottled, with dark nucleoli; prophase = same size,
   brighter, condensed granular threads; prometaphase = a ring / cluster of bright chromosome
   blobs; metaphase = a bright bar across the centre; anaphase = two bowed parallel bars;
   telophase = two small compact nuclei in the two lobes; apoptosis = 3-8 very bright fragments.
4. **Cytoplasm**: per-cell level x texture, darker over interphase nuclei, brighter in rounded
   mitotic cells, spindle poles (metaphase / anaphase), a midbody and dim furrow (telophase),
   plus a brighter membrane rim on every cell border.
5. **Camera**, per channel: Gaussian PSF, ``signal * contrast + background``, an uneven
   illumination field, shot noise (Poisson below 30 photons, its Gaussian approximation above),
   gain, offset and read noise, ``uint16``.

    make_cells_image(shape, seed)          -> image (2, H, W), cells, nuclei, {cell id: phase}
    write_cells_dataset(out, n, size, seed) -> images/, masks/, nuclei/, truth.csv, objects_truth.csv
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ._args import number as _number
from .nuclei import _atomic_tif, dataset_image_seed

__all__ = ["PHASES", "MITOTIC", "make_cells_image", "write_cells_dataset"]

from ..presets import MITOTIC, PHASES, derived_counts  # noqa: E402  (one definition: the cells preset's classes)
from .truth import write_truth_tables  # noqa: E402
_WEIGHTS = dict(zip(PHASES, (0.62, 0.07, 0.05, 0.08, 0.05, 0.032, 0.07)))  # telophase: each makes two daughters
_REACH = np.array([1.0, 0.92, 0.85, 0.85, 0.95, 1.1, 0.7])  # placement radius / base radius, per phase
_DNA_BRIGHT = dict(zip(PHASES, (1.0, 1.5, 1.9, 2.1, 2.1, 1.8, 2.8)))


@dataclasses.dataclass
class _Cell:
    cy: float
    cx: float
    phase: str
    r: float  # mean radius of the body (of one lobe for telophase)
    ratio: float  # minor / major axis; the major axis lies along ``angle`` (the spindle axis)
    angle: float
    amp: np.ndarray  # harmonics k = 2, 3, 4
    ph: np.ndarray
    mix: tuple  # weights of the two shared boundary noise fields
    edge: float  # amplitude of the free-edge noise
    sep: float = 0.0  # telophase: distance between the lobe centres
    blebs: list = dataclasses.field(default_factory=list)  # apoptosis: (dy, dx, radius)
    level: float = 0.5  # cytoplasm brightness

    @property
    def reach(self) -> float:
        body = self.sep / 2 + self.r if self.phase == "telophase" else self.r / math.sqrt(self.ratio)
        body *= 1 + float(np.abs(self.amp).sum())
        for by, bx, br in self.blebs:
            body = max(body, math.hypot(by, bx) + br)
        return body * (1 + 3 * (abs(self.mix[0]) + abs(self.mix[1]) + self.edge)) + 2


def _smooth_noise(rng, shape, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (made coarse and zoomed when smooth)."""
    f = max(1, int(sigma // 2))
    small = (-(-shape[0] // f) + 1, -(-shape[1] // f) + 1)
    n = ndi.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / f)
    if f > 1:
        n = ndi.zoom(n, f, order=1)[: shape[0], : shape[1]]
    return n / (n.std() + 1e-6)


def _place(rng, H: int, W: int, n_target: int, size: float, p: np.ndarray):
    """Centres, phase indices and base radii of up to ``n_target`` cells (random sequential placement)."""
    n_try = 40 * n_target + 100
    phase = rng.choice(len(PHASES), n_try, p=p)
    r0 = rng.uniform(14, 25, n_try) * size
    rp = (r0 * _REACH[phase]).tolist()
    attach = (rng.random(n_try) < rng.uniform(0.45, 0.75)).tolist()
    pick, turn, acc = rng.random(n_try).tolist(), rng.uniform(0, 2 * np.pi, n_try).tolist(), rng.random(n_try).tolist()
    gap = rng.uniform(0.72, 0.95, n_try).tolist()
    uy, ux = (rng.random(n_try) * H).tolist(), (rng.random(n_try) * W).tolist()
    waves = [(rng.uniform(0.6, 1.8) * 2 * np.pi / max(H, W, 512), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    prio = (phase != 0).tolist()
    cell = 2 * 25 * size * 1.1
    grid: dict = {}
    out: list = []
    for t in range(n_try):
        if len(out) >= n_target:
            break
        ri = rp[t]
        if out and attach[t]:
            j = out[int(pick[t] * len(out))]
            dist = (ri + j[3]) * gap[t]
            y, x = j[0] + dist * math.sin(turn[t]), j[1] + dist * math.cos(turn[t])
            if not (-0.3 * ri <= y < H + 0.3 * ri and -0.3 * ri <= x < W + 0.3 * ri):
                continue
        else:
            y, x = uy[t], ux[t]
            f = 0.5 + sum(math.cos(k * (y * math.cos(a) + x * math.sin(a)) + b) for k, a, b in waves) / 3
            if acc[t] > f:
                continue
        gy, gx = int(y // cell), int(x // cell)
        clash = False
        for ky in (gy - 1, gy, gy + 1):
            for kx in (gx - 1, gx, gx + 1):
                for yj, xj, pj, rj in grid.get((ky, kx), ()):
                    need = (ri + rj) * (0.85 if (pj and prio[t]) else 0.72)
                    if (yj - y) ** 2 + (xj - x) ** 2 < need * need:
                        clash = True
        if clash:
            continue
        rec = (y, x, prio[t], ri, int(phase[t]), float(r0[t]))
        grid.setdefault((gy, gx), []).append(rec[:4])
        out.append(rec)
    return out


def _make_cell(rng, y: float, x: float, k: int, r0: float) -> _Cell:
    """Shape of one cell of phase index ``k`` and base radius ``r0``."""
    phase = PHASES[k]
    amp, ph = rng.normal(0, 1, 3) * np.array([0.07, 0.05, 0.03]), rng.uniform(0, 2 * np.pi, 3)
    mix = tuple(rng.normal(0, 0.06, 2))
    c = _Cell(y, x, phase, r0, rng.uniform(0.6, 1.0), rng.uniform(0, np.pi), np.clip(amp, -0.12, 0.12), ph, mix, rng.uniform(0.05, 0.1))
    c.level = float(np.exp(rng.normal(np.log(0.45), 0.25)))
    if phase == "interphase":
        return c
    c.amp, c.mix, c.edge = c.amp * 0.3, (mix[0] * 0.3, mix[1] * 0.3), c.edge * 0.3
    c.level *= rng.uniform(1.3, 1.6)
    if phase == "prophase":
        c.r, c.ratio = r0 * rng.uniform(0.85, 0.95), rng.uniform(0.8, 1.0)
    elif phase in ("prometaphase", "metaphase"):
        c.r, c.ratio = r0 * rng.uniform(0.78, 0.88), rng.uniform(0.88, 1.0)
    elif phase == "anaphase":
        c.r, c.ratio = r0 * rng.uniform(0.8, 0.9), rng.uniform(0.68, 0.82)
    elif phase == "telophase":
        c.r = r0 * rng.uniform(0.62, 0.72)
        c.sep = c.r * rng.uniform(1.3, 1.6)
    else:  # apoptosis: shrunken, irregular, blebby, dim
        c.r, c.ratio = r0 * rng.uniform(0.55, 0.7), rng.uniform(0.75, 1.0)
        c.amp = np.clip(rng.normal(0, 1, 3) * np.array([0.08, 0.08, 0.06]), -0.15, 0.15)
        c.level *= rng.uniform(0.35, 0.55)
        for _ in range(int(rng.integers(3, 8))):
            a, dd = rng.uniform(0, 2 * np.pi), c.r * rng.uniform(0.75, 1.0)
            c.blebs.append((dd * math.sin(a), dd * math.cos(a), c.r * rng.uniform(0.18, 0.35)))
    return c


def _frame(c: _Cell, yy, xx):
    """Cell-frame coordinates: ``u`` along the cell's axis, ``v`` across it."""
    ca, sa = math.cos(c.angle), math.sin(c.angle)
    return xx * ca + yy * sa, yy * ca - xx * sa


def _shape_d(c: _Cell, yy, xx, n1, n2) -> np.ndarray:
    """Normalised distance of the window pixels (relative to the centre) to the cell outline."""
    u, v = _frame(c, yy, xx)
    if c.phase == "telophase":
        s = c.sep / 2
        d = np.minimum(np.hypot(u - s, v), np.hypot(u + s, v)) / c.r
    else:
        q = math.sqrt(c.ratio)
        th = np.arctan2(v, u)
        wob = 1 + c.amp[0] * np.cos(2 * th + c.ph[0]) + c.amp[1] * np.cos(3 * th + c.ph[1]) + c.amp[2] * np.cos(4 * th + c.ph[2])
        d = np.hypot(u * (q / c.r), v / (c.r * q)) / wob
        for by, bx, br in c.blebs:
            d = np.minimum(d, np.hypot(yy - by, xx - bx) / br)
    return d * np.maximum(1 + c.mix[0] * n1 + c.mix[1] * n2, 0.5)


def _rel(c: _Cell, sl):
    yy = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None] - np.float32(c.cy)
    xx = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :] - np.float32(c.cx)
    return yy, xx


def _rasterize(cells: list, H: int, W: int, n1, n2, edge) -> np.ndarray:
    """Label image (index + 1 into ``cells``): smallest ``d`` wins, mitotic / apoptotic cells first."""
    lab = np.zeros((H, W), np.int32)
    best = np.full((H, W), np.inf, np.float32)
    for i, c in enumerate(cells):
        e = c.reach
        sl = (slice(max(int(c.cy - e), 0), min(int(c.cy + e) + 2, H)), slice(max(int(c.cx - e), 0), min(int(c.cx + e) + 2, W)))
        if sl[0].start >= sl[0].stop or sl[1].start >= sl[1].stop:
            continue
        yy, xx = _rel(c, sl)
        d = _shape_d(c, yy, xx, n1[sl], n2[sl])
        key = d + (2 if c.phase == "interphase" else 0)
        upd = (d < 1 + c.edge * edge[sl]) & (key < best[sl])
        best[sl][upd] = key[upd]
        lab[sl][upd] = i + 1
    return lab


def _clean(lab: np.ndarray, min_area: int):
    """Largest 4-connected piece of each label, >= ``min_area`` px, ids 1..n; also (source index, window)."""
    out = np.zeros_like(lab)
    kept = []
    for i, sl in enumerate(ndi.find_objects(lab)):
        if sl is None:
            continue
        m = lab[sl] == i + 1
        cc, k = ndi.label(m)
        if k > 1:
            m = cc == 1 + int(np.argmax(np.bincount(cc.ravel())[1:]))
        if m.sum() < min_area:
            continue
        kept.append((i, sl))
        out[sl][m] = len(kept)
    return out, kept


def _disk(rng, k: int, radius, oy: float = 0.0, ox: float = 0.0) -> np.ndarray:
    """``k`` random points (y, x) uniform in a disk (``radius`` may be per point)."""
    rho, psi = radius * np.sqrt(rng.random(k)), rng.uniform(0, 2 * np.pi, k)
    return np.stack([oy + rho * np.sin(psi), ox + rho * np.cos(psi)], 1)


def _blobs(yy, xx, pos, sig_u, sig_v, ang) -> np.ndarray:
    """Sum of elongated unit Gaussians at ``pos`` (k, 2) with axes ``sig_u`` / ``sig_v`` at angle ``ang``."""
    out = np.zeros(np.broadcast_shapes(yy.shape, xx.shape), np.float32)
    for (py, px), su, sv, a in zip(pos, sig_u, sig_v, ang):
        dy, dx = yy - py, xx - px
        ca, sa = math.cos(a), math.sin(a)
        out += np.exp(-0.5 * (((dx * ca + dy * sa) / su) ** 2 + ((dy * ca - dx * sa) / sv) ** 2))
    return out


def _dna(c: _Cell, rng, yy, xx, tex, L: float, fit: float):
    """(signal, shape) of the DNA of cell ``c`` on its window; ``fit`` = room around the centre (px)."""
    u, v = _frame(c, yy, xx)
    b = _DNA_BRIGHT[c.phase] * float(np.exp(rng.normal(0, 0.2)))
    if c.phase in ("interphase", "prophase"):
        rn = min(c.r * rng.uniform(0.45, 0.6), max(fit - 1.5, 0.6 * c.r * 0.45))
        q = math.sqrt(rng.uniform(0.7, 0.95) if c.phase == "interphase" else rng.uniform(0.85, 1.0))
        a = c.angle + rng.normal(0, 0.3)
        oy, ox = rng.normal(0, 0.06 * c.r, 2)
        nu, nv = (xx - ox) * math.cos(a) + (yy - oy) * math.sin(a), (yy - oy) * math.cos(a) - (xx - ox) * math.sin(a)
        th = np.arctan2(nv, nu)
        d = np.hypot(nu * q / rn, nv / (rn * q)) / (1 + 0.04 * np.cos(3 * th + rng.uniform(0, 6.3)))
        shape = d < 1
        dome = np.sqrt(np.clip(1 - d * d, 0, 1))
        if c.phase == "interphase":
            k = int(rng.integers(1, 5))  # nucleoli
            s = rng.uniform(1.4, 2.4, k) * L
            dips = _blobs(yy, xx, _disk(rng, k, 0.5 * rn, oy, ox), s, s * rng.uniform(0.7, 1.0, k), rng.uniform(0, np.pi, k))
            sig = b * (0.75 + 0.25 * dome) * (1 + 0.28 * tex) * (1 - 0.6 * np.minimum(dips, 1))
        else:  # condensing chromatin: bright granular threads (zero crossings of band-pass noise)
            w = rng.standard_normal(shape.shape).astype(np.float32)
            band = ndi.gaussian_filter(w, 1.4 * L) - ndi.gaussian_filter(w, 2.8 * L)
            thr = np.exp(-((band / (0.45 * band.std() + 1e-6)) ** 2))
            k = int(rng.integers(6, 16))
            spots = _blobs(yy, xx, _disk(rng, k, 0.85 * rn, oy, ox), np.full(k, 1.1 * L), np.full(k, 1.1 * L), np.zeros(k))
            sig = b * (0.2 + 0.9 * thr + 0.9 * np.minimum(spots, 1)) * (0.8 + 0.2 * dome)
        return sig, shape
    if c.phase == "prometaphase":
        k = int(rng.integers(14, 28))  # condensed chromosomes: short rods in a ring or a loose cluster
        rho0 = c.r * rng.uniform(0.35, 0.55)
        rho = rho0 * (rng.uniform(0.6, 1.05, k) if rng.random() < 0.75 else 1.05 * np.sqrt(rng.random(k)))
        psi = rng.uniform(0, 2 * np.pi, k)
        pos = np.stack([rho * np.sin(psi), rho * np.cos(psi)], 1)
        g = _blobs(yy, xx, pos, rng.uniform(1.5, 2.5, k) * L, rng.uniform(0.7, 0.9, k) * L, rng.uniform(0, np.pi, k))
        return b * np.clip(g, 0, 1.3) * (1 + 0.1 * tex), g > 0.4
    if c.phase in ("metaphase", "anaphase"):
        diam = 2 * c.r / math.sqrt(c.ratio)
        if c.phase == "metaphase":
            hl, hw = diam * rng.uniform(0.25, 0.35), rng.uniform(1.5, 3.0) * L
            centres = [0.0]
        else:
            hl, hw = diam * rng.uniform(0.2, 0.3), rng.uniform(1.3, 2.5) * L
            s2 = min(rng.uniform(6, 16) * L / 2 + hw, 0.62 * diam / 2)
            centres = [-s2, s2]
        bow = rng.uniform(-0.15, 0.3) * hw * 2
        t = (v / hl) ** 2
        shape = np.zeros(t.shape, bool)
        for u0 in centres:  # bars across the spindle axis; anaphase bars bow towards the poles
            across = (u - u0) * (1 if u0 >= 0 else -1) + bow * t * (1 if u0 != 0 else 0)
            shape |= t * t + (across / (hw * (1 + 0.25 * tex))) ** 2 < 1
        k = int(rng.integers(3, 8))  # chromosome arms sticking out of the plate
        pos = np.stack([rng.uniform(-0.8, 0.8, k) * hl, rng.choice(centres, k) + rng.choice([-1, 1], k) * hw * rng.uniform(0.7, 1.2, k)], 1)
        ca, sa = math.cos(c.angle), math.sin(c.angle)
        pos = np.stack([pos[:, 1] * sa + pos[:, 0] * ca, pos[:, 1] * ca - pos[:, 0] * sa], 1)  # (v, u) -> (y, x)
        shape |= _blobs(yy, xx, pos, np.full(k, 1.3 * L), np.full(k, 1.0 * L), rng.uniform(0, np.pi, k)) > 0.5
        return b * (0.85 + 0.2 * tex), shape
    if c.phase == "telophase":
        shape = np.zeros(np.broadcast_shapes(yy.shape, xx.shape), bool)
        sig = np.zeros(shape.shape, np.float32)
        for side in (-1, 1):
            u0 = side * (c.sep / 2 + 0.12 * c.r)
            au, av = c.r * rng.uniform(0.28, 0.36), c.r * rng.uniform(0.38, 0.48)
            d = np.hypot((u - u0) / au, v / av)
            shape |= d < 1
            sig += np.where(d < 1, b * (0.75 + 0.25 * np.sqrt(np.clip(1 - d * d, 0, 1))), 0)
        return sig * (1 + 0.12 * tex), shape
    # apoptosis: several small, very bright round fragments
    k = int(rng.integers(3, 9))
    pos, rad = _disk(rng, k, 0.55 * c.r), rng.uniform(1.5, 3.2, k) * L
    d = np.full(np.broadcast_shapes(yy.shape, xx.shape), np.inf, np.float32)
    for (py, px), rr in zip(pos, rad):
        d = np.minimum(d, np.hypot(yy - py, xx - px) / rr)
    return b * (1 - 0.4 * np.minimum(d, 1) ** 2), d < 1


def _cytoplasm(c: _Cell, yy, xx, nuc, tex, L: float) -> np.ndarray:
    u, v = _frame(c, yy, xx)
    sig = c.level * (1 + (0.45 if c.phase == "apoptosis" else 0.2) * tex)
    if c.phase in ("interphase", "prophase"):
        sig = np.where(nuc, sig * 0.65, sig)  # the nucleus excludes the cytoplasmic marker
    elif c.phase in ("metaphase", "anaphase", "prometaphase"):
        pd = c.r / math.sqrt(c.ratio) * 0.6
        poles = np.exp(-0.5 * (((np.abs(u) - pd) ** 2 + v**2) / (1.8 * L) ** 2))
        spindle = np.clip(1 - (u / pd) ** 2 - (v / (0.6 * pd)) ** 2, 0, 1)
        sig = np.where(nuc, sig * 0.85, sig) + c.level * (1.2 * poles + 0.4 * spindle) * (c.phase != "prometaphase")
    elif c.phase == "telophase":  # midbody and a dim membrane across the furrow
        sig = sig + c.level * (1.5 * np.exp(-0.5 * (u**2 + v**2) / (1.3 * L) ** 2) + 0.5 * np.exp(-0.5 * (u / L) ** 2))
    return sig


def _camera(rng, sig: np.ndarray, contrast: float, L: float, illum: np.ndarray) -> np.ndarray:
    """PSF, background, illumination, shot / read noise, gain, offset -> uint16 (settings drawn first)."""
    psf, photons, bg, gain, read, offset = rng.uniform([1.0, 120, 0.05, 0.8, 1.5, 90], [1.8, 500, 0.15, 2.0, 4.0, 300])
    noise = np.random.default_rng(int(rng.integers(2**63)))  # so the settings never depend on the signal
    sig = ndi.gaussian_filter(sig, psf * L)
    lam = np.maximum((sig * np.float32(contrast) + np.float32(bg)) * illum * np.float32(photons), 0)
    x = lam + np.sqrt(lam) * noise.standard_normal(lam.shape, dtype=np.float32)
    low = np.flatnonzero(lam.reshape(-1) < 30)
    x.reshape(-1)[low] = noise.poisson(lam.reshape(-1)[low])
    adu = np.maximum(np.rint(x), 0) * np.float32(gain)
    adu += noise.standard_normal(adu.shape, dtype=np.float32) * np.float32(read) + np.float32(offset)
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)


def _weights(phase_weights) -> np.ndarray:
    w = dict(_WEIGHTS)
    for k, val in (phase_weights or {}).items():
        if k not in w:
            raise InputError(f"unknown phase {k!r} in phase_weights", f"Use phases from {', '.join(PHASES)}")
        w[k] = _number(f"weight of {k}", val, -1e-12, math.inf)
    p = np.array([w[k] for k in PHASES])
    if p.sum() <= 0:
        raise InputError("all phase weights are 0", "Give at least one phase a weight above 0")
    return p / p.sum()


def _edt(m: np.ndarray, sl, H: int, W: int) -> np.ndarray:
    """Distance of the cell's pixels to its edge; the image border does not count as an edge."""
    pw = ((int(sl[0].start > 0), int(sl[0].stop < H)), (int(sl[1].start > 0), int(sl[1].stop < W)))
    d = ndi.distance_transform_edt(np.pad(m, pw))
    return d[pw[0][0] : d.shape[0] - pw[0][1], pw[1][0] : d.shape[1] - pw[1][1]]


def make_cells_image(
    shape=(512, 512), seed: int = 0, *, density: float = 1.0, contrast: float = 1.0, size: float = 1.0, phase_weights=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """One two-channel field of cells: ``(uint16 image (2, H, W), int32 cells, int32 nuclei, {cell id: phase})``.

    ``image[0]`` is cytoplasm / membrane, ``image[1]`` DNA. ``cells`` holds ids 1..n (consecutive,
    one 4-connected piece each); ``nuclei`` holds, on every DNA pixel, the id of its cell (both
    masses of an anaphase / telophase cell share it). ``density``, ``contrast`` and ``size``
    multiply the cell count, the signal over background and every length. ``phase_weights``
    ({phase: weight}) replaces the default weights of the phases it names; the rest keep theirs.
    """
    try:
        H, W = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape {shape!r} is not a (height, width) pair", "Give two integers: (512, 512)") from None
    if H < 64 or W < 64:
        raise InputError(f"shape {shape!r} is too small for synthetic cells", "Use at least 64 x 64 pixels")
    density, contrast = _number("density", density, 0, 5), _number("contrast", contrast, 0, 20)
    L = _number("size", size, 0.2, 4)
    if int(seed) < 0:
        raise InputError(f"seed {seed} is negative", "Use a seed >= 0")
    p = _weights(phase_weights)
    rng = np.random.default_rng(int(seed))
    n_target = max(1, round(rng.uniform(25, 70) * H * W / 512**2 * density / L**2))
    cells = [_make_cell(rng, y, x, k, r0) for y, x, _, _, k, r0 in _place(rng, H, W, n_target, L, p)]
    n1, n2, edge = (_smooth_noise(rng, (H, W), s * L) for s in (6.0, 6.0, 4.5))
    labels, kept = _clean(_rasterize(cells, H, W, n1, n2, edge), round(150 * L**2))
    tex_c, tex_n = _smooth_noise(rng, (H, W), 2.0 * L), _smooth_noise(rng, (H, W), 1.2 * L)
    nuclei = np.zeros((H, W), np.int32)
    dna, cyto = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
    level = np.zeros(len(kept) + 1, np.float32)
    phases: dict[int, str] = {}
    for j, (i, sl) in enumerate(kept, start=1):
        c, m = cells[i], labels[sl] == j
        edt = _edt(m, sl, H, W)
        yy, xx = _rel(c, sl)
        iy = min(max(round(c.cy) - sl[0].start, 0), m.shape[0] - 1)
        ix = min(max(round(c.cx) - sl[1].start, 0), m.shape[1] - 1)
        sig, shp = _dna(c, rng, yy, xx, tex_n[sl], L, float(edt[iy, ix]))
        shp &= edt > 1.5  # DNA stays off the membrane
        nuclei[sl][shp] = j
        dna[sl] += np.where(shp, sig, 0).astype(np.float32)
        cyto[sl] += np.where(m, _cytoplasm(c, yy, xx, shp, tex_c[sl], L), 0).astype(np.float32)
        level[j], phases[j] = c.level, c.phase
    n = len(kept)
    for j, (i, sl) in enumerate(kept, start=1):  # telophase: two daughter cells, split at the furrow
        c = cells[i]
        if c.phase != "telophase":
            continue
        u, _ = _frame(c, *_rel(c, sl))
        own = labels[sl] == j
        half = own & (u >= 0)
        small = round(150 * L**2)
        if min(half.sum(), (own & ~half).sum()) < small or ndi.label(half)[1] != 1 or ndi.label(own & ~half)[1] != 1:
            continue  # a lobe lost to a neighbour: it stays one cell
        n += 1
        labels[sl][half] = n
        nuclei[sl][(nuclei[sl] == j) & (u >= 0)] = n
        level = np.append(level, level[j])
        phases[n] = "telophase"
    rim = np.zeros((H, W), bool)  # membrane: cell pixels with a 4-neighbour of another id
    for a, b, ra, rb in ((labels[1:], labels[:-1], rim[1:], rim[:-1]), (labels[:, 1:], labels[:, :-1], rim[:, 1:], rim[:, :-1])):
        ra |= (a != b) & (a > 0)
        rb |= (a != b) & (b > 0)
    cyto += rim * level[labels] * np.float32(rng.uniform(0.8, 1.4))
    yy, xx = np.arange(H, dtype=np.float32)[:, None] / H - 0.5, np.arange(W, dtype=np.float32)[None, :] / W - 0.5
    gy, gx, ky, kx, ph = rng.uniform([-0.3, -0.3, 1, 1, 0], [0.3, 0.3, 4, 4, 6.3])
    illum = np.maximum(1 + gy * yy + gx * xx + 0.12 * np.cos(ky * yy + ph) * np.cos(kx * xx - ph), 0.4).astype(np.float32)
    ch0 = _camera(rng, cyto, contrast, L, illum)
    ch1 = _camera(rng, dna, contrast, L, illum * np.float32(rng.uniform(0.95, 1.05)))
    return np.stack([ch0, ch1]), labels, nuclei, phases


def write_cells_dataset(
    out_dir, n: int, *, size: int = 512, seed: int = 0, density: float = 1.0, contrast: float = 1.0, scale: float = 1.0
) -> list[pathlib.Path]:
    """Write ``n`` fields of ``size`` x ``size`` px; returns the image paths.

    ``images/cells_<seed>_<i>.tif`` (uint16, CYX), ``masks/`` (cells) and ``nuclei/`` (same names),
    ``truth.csv`` (per image: counts per phase, mitotic index) and ``objects_truth.csv``
    (image,label,class). ``scale`` is ``make_cells_image(size=...)``.
    """
    if int(n) < 1:
        raise InputError(f"number of images {n} is below 1", "Ask for 1 or more images")
    if int(size) < 64:
        raise InputError(f"image size {size} is below 64", "Use a size of 64 px or more, e.g. 512")
    _number("density", density, 0, 5), _number("contrast", contrast, 0, 20), _number("scale", scale, 0.2, 4)
    out = pathlib.Path(out_dir)
    dirs = [out / "images", out / "masks", out / "nuclei"]
    truth, objects, paths = [], [], []
    try:
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        for i in range(int(n)):
            img_seed = dataset_image_seed(seed, i) % 2**63
            img, cells, nuc, phases = make_cells_image((size, size), img_seed, density=density, contrast=contrast, size=scale)
            name = f"cells_{seed}_{i:04d}.tif"
            stem = name[:-4]
            _atomic_tif(dirs[0] / name, img, metadata={"axes": "CYX"})
            _atomic_tif(dirs[1] / name, cells, compression="zlib")
            _atomic_tif(dirs[2] / name, nuc, compression="zlib")
            row = {"image": stem, "n_objects": len(phases), **{f"n_{p}": sum(1 for v in phases.values() if v == p) for p in PHASES}}
            truth.append(derived_counts(row, PHASES))  # + mitotic_index, exactly as the preset computes it
            objects += [(stem, k, v) for k, v in sorted(phases.items())]
            paths.append(dirs[0] / name)
        write_truth_tables(out, truth, objects)
    except OSError as exc:
        what = f"cannot write the synthetic cells dataset to {out} ({exc.strerror or exc})"
        raise InputError(what, "Choose a folder you can write to, with free disk space") from exc
    return paths
