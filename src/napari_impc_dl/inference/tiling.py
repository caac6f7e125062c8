"""Plan a grid of equal tiles with halo over an image plane.

The grid is *fitted* to the image: the tile side is chosen near the requested one so that
``n_tiles * tile`` is as small as possible, and no tile reaches past the image except by the
few pixels that round the image up to the model's size ``step`` (which whole-image inference
pads too). Neighbouring tiles overlap by at least ``2 * halo`` and each keeps only its *core*,
cut in the middle of the overlap, so every kept pixel saw at least ``halo`` pixels of context on
every side that has image there (hard-crop stitching: no blending weights needed).

Tile starts are multiples of ``step``: a U-Net pools by ``2**depth`` and is shift-equivariant
only by multiples of it, so aligned tiles compute the same features as one pass over the whole
image, and the tiled result differs from the whole-image one only by border effects inside the
halo. All tiles have the same shape, so they can be batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """One tile: the window read from the image, the padding after it, and the core written (image coordinates)."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int
    py: int = 0
    """Rows of padding (reflection of the image) after ``y1`` to make the tile full size."""
    px: int = 0
    """Columns of padding after ``x1``."""


@dataclass(frozen=True)
class TilePlan:
    """A grid of equal tiles over an ``(H, W)`` plane (``tile_shape`` includes each tile's padding)."""

    shape: tuple[int, int]
    tile_shape: tuple[int, int]
    halo: int
    tiles: tuple[Tile, ...]

    @property
    def overhead(self) -> float:
        """Pixels computed per output pixel (1.0 = no halo cost)."""
        th, tw = self.tile_shape
        return len(self.tiles) * th * tw / (self.shape[0] * self.shape[1])


def _round_up(v: float, step: int) -> int:
    return int(math.ceil(v / step) * step)


def _snap(v: float, step: int, min_tile: int) -> int:
    """The smallest valid side >= ``v``: ``min_tile + k * step`` (a multiple of ``step`` when ``min_tile`` is one)."""
    if v <= min_tile:
        return min_tile
    return min_tile + _round_up(v - min_tile, step)


def _pair(v):
    """``v`` as a ``(y, x)`` pair (a scalar applies to both axes)."""
    if isinstance(v, (tuple, list)):
        return tuple(v)
    return (v, v)


def _axis(n: int, tile: int, halo: int, step: int, min_tile: int, fixed: int | None) -> tuple[int, list[tuple[int, int, int, int]]]:
    """Tile side and ``(start, end_read, core_start, core_end)`` along one axis of length ``n``."""
    if fixed is not None:
        if n <= fixed:
            return fixed, [(0, n, 0, n)]
        n_pad, sides = n, [fixed]
    else:
        n_pad = _snap(n, step, min_tile)  # what whole-image inference sees
        largest = _snap(tile * 1.25, step, min_tile)
        if n_pad <= largest:  # one tile: no halo needed, no seams
            return n_pad, [(0, n, 0, n)]
        sides = range(_snap(2 * halo + 2 * step, step, min_tile), largest + 1, step)
    best = None
    for side in sides:
        if side - 2 * halo < step:
            continue
        k = 1 + math.ceil((n_pad - side) / (side - 2 * halo))
        while True:  # the fewest tiles whose aligned starts still overlap by 2 * halo
            starts = _starts(n_pad - side, k, step)
            if all(b - a <= side - 2 * halo for a, b in zip(starts, starts[1:])):
                break
            k += 1
        cost = (k * side, k, abs(side - tile))  # least compute, then fewest tiles, then nearest the request
        if best is None or cost < best[0]:
            best = (cost, side, starts)
    if best is None:
        raise ValueError(f"tile side {fixed} leaves no core with halo {halo}")
    _, side, starts = best
    k = len(starts)
    cuts = [0] + [min(n, (starts[i + 1] + starts[i] + side) // 2) for i in range(k - 1)] + [n]
    return side, [(starts[i], min(n, starts[i] + side), cuts[i], cuts[i + 1]) for i in range(k)]


def _starts(last: int, k: int, step: int) -> list[int]:
    """``k`` evenly spread starts from 0 to ``last``, multiples of ``step`` (except ``last`` for fixed-size models)."""
    if k == 1:
        return [0]
    return [min(last, int(round(i * last / (k - 1) / step)) * step) for i in range(k - 1)] + [last]


def plan_tiles(
    shape: tuple[int, int],
    tile: int = 1024,
    halo: int = 16,
    *,
    step: int | tuple[int, int] = 32,
    min_tile: int | tuple[int, int] = 64,
    fixed: int | tuple[int | None, int | None] | None = None,
) -> TilePlan:
    """Plan tiles of about ``tile`` pixels (``min_tile + k * step``) with ``halo`` context over ``shape``.

    ``fixed`` forces an exact tile side (models with a fixed input shape). ``step``, ``min_tile``
    and ``fixed`` may also be ``(y, x)`` pairs for models whose axes differ.
    """
    steps, mins, fixeds = _pair(step), _pair(min_tile), _pair(fixed)
    if fixeds[0] is None and fixeds[1] is None and tile < 2 * halo + max(steps):
        raise ValueError(f"tile {tile} is too small for halo {halo}: it must be at least {2 * halo + max(steps)}")
    th, ys = _axis(shape[0], tile, halo, steps[0], mins[0], fixeds[0])
    tw, xs = _axis(shape[1], tile, halo, steps[1], mins[1], fixeds[1])
    tiles = tuple(
        Tile(y0, y1, x0, x1, cy0, cy1, cx0, cx1, py=th - (y1 - y0), px=tw - (x1 - x0))
        for y0, y1, cy0, cy1 in ys
        for x0, x1, cx0, cx1 in xs
    )
    return TilePlan(shape=tuple(shape), tile_shape=(th, tw), halo=halo, tiles=tiles)
