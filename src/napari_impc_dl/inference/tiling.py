"""Plan a grid of equal tiles with halo over an image plane.

The grid is *fitted* to the image: tiles start at the image's first pixel and end at its last,
so nothing is padded past the edge (where there is no context anyway) and no compute is spent
on padding. The tile side is chosen near the requested one so that ``n_tiles * tile`` is as
small as possible; neighbouring tiles overlap by at least ``2 * halo`` and each keeps only its
*core*, cut in the middle of the overlap, so every kept pixel saw at least ``halo`` pixels of
context on every side that has image there (hard-crop stitching: no blending weights needed).

All tiles have the same shape, so they can be batched. A plane smaller than one tile is a
single tile, padded up to the model's size step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """One tile: the window read from the image and the core written to the output (image coordinates)."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


@dataclass(frozen=True)
class TilePlan:
    """A grid of tiles over an ``(H, W)`` plane; ``tile_shape`` includes ``pad`` for planes smaller than a tile."""

    shape: tuple[int, int]
    tile_shape: tuple[int, int]
    pad: tuple[int, int]
    halo: int
    tiles: tuple[Tile, ...]

    @property
    def overhead(self) -> float:
        """Pixels computed per output pixel (1.0 = no halo cost)."""
        th, tw = self.tile_shape
        return len(self.tiles) * th * tw / (self.shape[0] * self.shape[1])


def _round_up(v: float, step: int) -> int:
    return int(math.ceil(v / step) * step)


def _axis(n: int, tile: int, halo: int, step: int, min_tile: int, fixed: int | None) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Tile side, padding and ``(start, core_start, core_end)`` along one axis of length ``n``."""
    if fixed is not None:
        sides = [fixed]
        if n <= fixed:
            return fixed, fixed - n, [(0, 0, n)]
    else:
        largest = _round_up(tile * 1.25, step)
        if n <= largest:  # one tile, padded up to the size step: no halo needed, no seams
            side = max(min_tile, _round_up(n, step))
            return side, side - n, [(0, 0, n)]
        sides = range(max(min_tile, _round_up(2 * halo + step, step)), largest + 1, step)
    best = None
    for side in sides:
        core = side - 2 * halo
        if core < step:
            continue
        k = 1 + math.ceil((n - side) / core)
        cost = (k * side, k, abs(side - tile))  # least compute, then fewest tiles, then nearest the request
        if best is None or cost < best[0]:
            best = (cost, side, k)
    if best is None:
        raise ValueError(f"tile side {fixed} leaves no core with halo {halo}")
    _, side, k = best
    starts = [round(i * (n - side) / (k - 1)) for i in range(k)]
    cuts = [0] + [(starts[i + 1] + starts[i] + side) // 2 for i in range(k - 1)] + [n]
    return side, 0, [(starts[i], cuts[i], cuts[i + 1]) for i in range(k)]


def plan_tiles(
    shape: tuple[int, int],
    tile: int = 1024,
    halo: int = 16,
    *,
    step: int = 32,
    min_tile: int = 64,
    fixed: int | None = None,
) -> TilePlan:
    """Plan tiles of about ``tile`` pixels (a multiple of ``step``) with ``halo`` context over ``shape``.

    ``fixed`` forces an exact tile side (models with a fixed input shape).
    """
    if tile < 2 * halo + step and fixed is None:
        raise ValueError(f"tile {tile} is too small for halo {halo}: it must be at least {2 * halo + step}")
    h = _axis(shape[0], tile, halo, step, min_tile, fixed)
    w = _axis(shape[1], tile, halo, step, min_tile, fixed)
    tiles = tuple(
        Tile(ys, ys + h[0] - h[1], xs, xs + w[0] - w[1], cy0, cy1, cx0, cx1)
        for ys, cy0, cy1 in h[2]
        for xs, cx0, cx1 in w[2]
    )
    return TilePlan(shape=tuple(shape), tile_shape=(h[0], w[0]), pad=(h[1], w[1]), halo=halo, tiles=tiles)
