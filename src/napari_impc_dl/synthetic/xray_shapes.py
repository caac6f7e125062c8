"""The drawing primitives of the X-ray phantoms, and the frame that puts a mouse onto the detector.

Every bone and every piece of soft tissue is one of two shapes, given in **body millimetres**
(the canonical view: head up, ``x`` to the right of the image, ``y`` down, towards the tail):

* :class:`Tube`: a polyline with a radius at each point (ribs, long bones, processes, the trunk);
  its cross-section is round, so the X-ray path through it is the chord ``2 r sqrt(1 - (d/r)^2)``;
* :class:`Blob`: a superellipse with a depth along the beam (vertebral bodies, the braincase,
  the obturator ring of the pelvis when ``hole`` is set).

Both can be ``hollow``: the inner part (marrow, the inside of the skull) attenuates less than the
cortex, so edges come out brighter, as on a radiograph.

:class:`Frame` maps body millimetres to image pixels (flip, rotation, pixel size, position) and
back. Shapes are rasterised in image space, pixel by pixel, by mapping each pixel of the shape's
bounding box back into the body: masks are exact (no resampling), and a pixel belongs to a shape
when its centre is inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def perp(u) -> np.ndarray:
    """The unit vector 90 degrees from ``u`` such that ``(0, 1)`` (down the body) -> ``(1, 0)`` (image right)."""
    return np.array([u[1], -u[0]], np.float64)


def local(origin, u, l, w) -> np.ndarray:
    """Points ``origin + l * u + w * perp(u)`` for arrays ``l`` (along ``u``) and ``w`` (across): ``(n, 2)``."""
    l, w = np.atleast_1d(np.asarray(l, np.float64)), np.atleast_1d(np.asarray(w, np.float64))
    u = np.asarray(u, np.float64)
    return np.asarray(origin, np.float64)[None] + l[:, None] * u[None] + w[:, None] * perp(u)[None]


def turn(u, ang: float) -> np.ndarray:
    """``u`` turned by ``ang`` radians towards ``perp(u)``."""
    return math.cos(ang) * np.asarray(u, np.float64) + math.sin(ang) * perp(u)


def bezier(p0, p1, p2, p3, n: int) -> np.ndarray:
    """``n`` points along the cubic Bezier curve through ``p0`` and ``p3`` with controls ``p1``, ``p2``."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = (np.asarray(p, np.float64) for p in (p0, p1, p2, p3))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


@dataclass
class Tube:
    """A round-sectioned polyline: ``pts`` ``(n, 2)`` body mm, ``radii`` ``(n,)`` mm (linear in between)."""

    pts: np.ndarray
    radii: np.ndarray
    hollow: float = 0.0
    """0 solid; else the inner share of the radius that is marrow (attenuates ``marrow`` of the cortex)."""
    marrow: float = 0.45

    def __post_init__(self) -> None:
        self.pts = np.asarray(self.pts, np.float64).reshape(-1, 2)
        self.radii = np.broadcast_to(np.asarray(self.radii, np.float64), (len(self.pts),)).copy()

    def reach(self) -> tuple[np.ndarray, np.ndarray]:
        """Points and radii that bound the shape (a circle around each point)."""
        return self.pts, self.radii

    def field(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(inside, chord in mm)`` at body points ``x``, ``y``."""
        best = np.full(np.broadcast(x, y).shape, np.inf, np.float32)
        rad = np.zeros_like(best)
        p, r = self.pts, self.radii
        if len(p) == 1:
            ratio = np.hypot(x - p[0, 0], y - p[0, 1]) / r[0]
            return _chord(ratio.astype(np.float32), np.full_like(best, r[0]), self.hollow, self.marrow)
        for j in range(len(p) - 1):
            (ax, ay), (bx, by) = p[j], p[j + 1]
            dx, dy = bx - ax, by - ay
            t = np.clip(((x - ax) * dx + (y - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
            rt = r[j] + t * (r[j + 1] - r[j])
            ratio = np.hypot(x - (ax + t * dx), y - (ay + t * dy)) / rt
            closer = ratio < best
            best = np.where(closer, ratio, best)
            rad = np.where(closer, rt, rad)
        return _chord(best, rad, self.hollow, self.marrow)


@dataclass
class Blob:
    """A superellipse centred on ``center`` with half-lengths ``a`` along ``u`` and ``b`` across it.

    ``power`` 2 is an ellipse, larger is boxier (vertebral bodies ~3); ``depth`` is the half-thickness
    along the beam (defaults to ``min(a, b)``). ``hole`` makes the inner part (``hollow`` of the size)
    empty: a ring, as the obturator foramen of the pelvis.
    """

    center: np.ndarray
    a: float
    b: float
    u: np.ndarray = (0.0, 1.0)
    power: float = 2.0
    depth: float | None = None
    hollow: float = 0.0
    marrow: float = 0.45
    hole: bool = False

    def __post_init__(self) -> None:
        self.center = np.asarray(self.center, np.float64).reshape(2)
        u = np.asarray(self.u, np.float64)
        self.u = u / max(np.hypot(*u), 1e-12)
        if self.depth is None:
            self.depth = min(self.a, self.b)

    def reach(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center[None], np.array([max(self.a, self.b)])

    def field(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = x - self.center[0], y - self.center[1]
        ux, uy = self.u
        du = (dx * ux + dy * uy) / self.a
        dv = (dx * uy - dy * ux) / self.b
        p = self.power
        rho = (np.abs(du) ** p + np.abs(dv) ** p) ** (1.0 / p) if p != 2 else np.hypot(du, dv)
        rho = rho.astype(np.float32)
        inside = rho < 1
        chord = 2 * self.depth * np.sqrt(np.clip(1 - rho * rho, 0, 1))
        if self.hollow > 0:
            k = self.hollow
            rin = rho / k
            inner = 2 * self.depth * k * np.sqrt(np.clip(1 - rin * rin, 0, 1))
            if self.hole:
                chord = chord - inner
                inside &= rin >= 1
            else:
                chord = chord - (1 - self.marrow) * inner
        return inside, chord.astype(np.float32)


def _chord(ratio: np.ndarray, rad: np.ndarray, hollow: float, marrow: float) -> tuple[np.ndarray, np.ndarray]:
    chord = 2 * rad * np.sqrt(np.clip(1 - ratio * ratio, 0, 1))
    if hollow > 0:
        rin = ratio / hollow
        chord = chord - (1 - marrow) * 2 * rad * hollow * np.sqrt(np.clip(1 - rin * rin, 0, 1))
    return ratio < 1, chord.astype(np.float32)


class Frame:
    """Body millimetres <-> image pixels: ``pixel = c + M F body / pixel_size``.

    ``F`` mirrors left-right when ``flipped``; ``M`` turns the picture by ``rotation_deg``
    counter-clockwise as seen on screen (image rows grow downwards). Undo a phantom's pose by
    turning its image clockwise by ``rotation_deg`` and then mirroring it when ``flipped``.
    """

    def __init__(self, size: int, rotation_deg: float, flipped: bool, pixel_size_mm: float = 1.0, offset=(0.0, 0.0)) -> None:
        self.size = int(size)
        self.rotation_deg, self.flipped, self.pixel_size_mm = float(rotation_deg), bool(flipped), float(pixel_size_mm)
        th = math.radians(self.rotation_deg)
        c, s = math.cos(th), math.sin(th)
        rot = np.array([[c, s], [-s, c]])
        self.MF = rot @ np.diag([-1.0 if flipped else 1.0, 1.0])  # body mm -> display mm (x right, y down)
        self.offset = np.asarray(offset, np.float64)  # pixel (x, y) of the body origin

    def display_mm(self, pts: np.ndarray) -> np.ndarray:
        """Body mm ``(n, 2)`` -> display mm (pose applied, not yet scaled or placed)."""
        return np.asarray(pts, np.float64) @ self.MF.T

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        """Body mm ``(n, 2)`` -> pixel ``(x, y)`` = (column, row)."""
        return self.offset[None] + self.display_mm(pts) / self.pixel_size_mm

    def grid(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Body mm coordinates ``(x, y)`` of the pixel centres of ``image[rows, cols]``."""
        inv = self.MF.T * self.pixel_size_mm  # (M F)^-1 = F M^T; F, M orthonormal
        X = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] - np.float32(self.offset[0])
        Y = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] - np.float32(self.offset[1])
        bx = np.float32(inv[0, 0]) * X + np.float32(inv[0, 1]) * Y
        by = np.float32(inv[1, 0]) * X + np.float32(inv[1, 1]) * Y
        return bx, by

    def window(self, shape) -> tuple[slice, slice] | None:
        """The image rows and columns a shape can touch, or None when it lies outside the image."""
        pts, rad = shape.reach()
        px = self.to_pixels(pts)
        r = rad[:, None] / self.pixel_size_mm + 1.5
        lo, hi = np.floor((px - r).min(0)), np.ceil((px + r).max(0)) + 1
        c0, r0 = int(max(0, lo[0])), int(max(0, lo[1]))
        c1, r1 = int(min(self.size, hi[0])), int(min(self.size, hi[1]))
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)
