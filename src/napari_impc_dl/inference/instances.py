"""Probabilities -> instance labels, seam-free on images of any size.

The model gives a *foreground* probability and a normalised *distance* map (1 at an object's
centre, falling to 0 at its edge). Locally:

1. foreground = ``p_fg > foreground_threshold``;
2. seeds = connected components of ``distance > seed_threshold`` inside the foreground;
3. a seeded watershed by levels of the distance map (:func:`.flood.flood`) floods the foreground
   from the seeds (touching objects split along the valley of the distance map); foreground islands that no seed reaches become
   objects of their own; objects under ``min_size`` pixels are dropped;
4. with a ``merge_threshold`` (distance head only): neighbours whose shared border lies *inside* an object by
   the distance map (its mean there above the threshold) are one object cut in two, and are joined
   (:func:`merge_inner_borders`). Two objects that merely touch meet where the distance map is near 0 (both
   edges); a chromosome cut at its centromere, or a large nucleus at a dip of the map, meets itself well above it.
   With ``merge_min_solidity`` a join must also leave a convex object (nuclei: a nucleus cut in two is convex
   again, two nuclei pressed together with a faint seam are not).

Models without a distance head (most Model Zoo packages) get their seeds and heights from
:mod:`.seeds` (``params.method``): h-maxima of the foreground's distance transform with suppression
tied to the object diameter, interiors of a boundary map, or plain connected components.

**Seams.** Large planes are processed in blocks, each read with a ``halo`` of context. Every
object has an *anchor*: the first pixel, in raster order, of its seed (or of itself when it has
no seed). The block whose core holds the anchor *owns* the object and writes all of its pixels,
also those in a neighbour's core; other blocks that see the object leave it alone. Seeds and
watershed are local computations, so when every cluster of touching objects is smaller than the
halo, each owned object is exactly what whole-image processing gives, and an object crossing
block borders gets one id. A plane that fits in one block is processed whole. Ids are
consecutive from ``start_id`` in raster order of blocks.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy import ndimage

from ..config import worker_threads
from ..errors import CancelToken
from .flood import flood
from .seeds import DEFAULT_DIAMETER, boundary_seeds, edt_seeds

_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class InstanceParams:
    """Postprocessing parameters (thresholds are probabilities in (0, 1))."""

    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_size: int = 12
    block: int = 2048
    """Core side of a postprocessing block (pixels)."""
    halo: int = 96
    """Context around each block: must exceed the largest cluster of touching objects."""
    method: str = "distance-head"
    """``distance-head`` (channel 1 is the model's distance map), ``distance-transform``, ``boundary``
    (channel 1 is a boundary probability) or ``threshold``: see :mod:`.seeds`."""
    diameter: float | None = None
    """Expected object diameter in pixels: drives seed suppression (distance-transform, boundary)."""
    core_threshold: float | None = None
    """distance-transform: the foreground probability above which a pixel is core (seeds come from the core)."""
    merge_threshold: float | None = None
    """distance-head: join neighbours whose shared border has a mean distance above this (``None``: never)."""
    merge_min_solidity: float | None = None
    """With ``merge_threshold``: join only if the joined object fills at least this share of its convex hull
    (convex objects such as nuclei; ``None``: any shape, e.g. bent chromosomes)."""
    device: str | None = None
    """``None``: numpy on the CPU. A torch device (``cuda``, ``cuda:1``, ...): blocks run on it with
    :mod:`.instances_torch` (the same labels) when the method allows (distance-head, threshold), else numpy."""


@dataclass(frozen=True)
class Window:
    """A block: the window read (``y0:y1, x0:x1``) and its core (``cy0:cy1, cx0:cx1``), image coordinates."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def plan_blocks(shape: tuple[int, int], block: int, halo: int) -> list[Window]:
    """Non-overlapping cores of about ``block`` pixels, each with ``halo`` context clipped to the plane."""
    h, w = shape
    ny, nx = max(1, round(h / block)), max(1, round(w / block))
    ys = np.linspace(0, h, ny + 1).round().astype(int)
    xs = np.linspace(0, w, nx + 1).round().astype(int)
    return [
        Window(max(0, ys[i] - halo), min(h, ys[i + 1] + halo), max(0, xs[j] - halo), min(w, xs[j + 1] + halo), ys[i], ys[i + 1], xs[j], xs[j + 1])
        for i in range(ny)
        for j in range(nx)
    ]


def local_instances(fg: np.ndarray, dist: np.ndarray | None, params: InstanceParams) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels of one window and each object's anchor (flat index of its first seed pixel).

    ``fg`` and ``dist`` are uint8 probability maps (0..255); ``dist`` is the model's second map (its
    distance head, or its boundary map for ``method="boundary"``), or ``None``. Returns ``labels``
    (int32, 1..n) and ``anchors`` (int64, ``anchors[i]`` belongs to label ``i + 1``).
    """
    merging = params.method == "distance-head" and params.merge_threshold is not None and dist is not None
    if params.device is not None:
        from .instances_torch import supports

        if supports(params, dist is not None):
            if not merging:
                return _on_device(fg, dist, params)
            # the flood on the device; the border merge (a few objects' borders) and the size filter after it here
            labels, anchors = _on_device(fg, dist, replace(params, merge_threshold=None, min_size=0))
            return _join_and_filter(labels, np.concatenate([[-1], anchors]), dist, params)
    mask = fg > round(params.foreground_threshold * 255)
    method = params.method if dist is not None or params.method in ("distance-transform", "threshold") else "distance-transform"
    if method == "distance-head":
        seeds = mask & (dist > round(params.seed_threshold * 255))
    elif method == "distance-transform":
        core = fg > round(params.core_threshold * 255) if params.core_threshold is not None else None
        seeds, dist = edt_seeds(mask, params.diameter or DEFAULT_DIAMETER, core)
    elif method == "boundary":
        seeds, dist = boundary_seeds(mask, dist, params.diameter or DEFAULT_DIAMETER, params.seed_threshold)
    elif method == "threshold":
        seeds, dist = mask, np.zeros(mask.shape, np.uint8)
    else:
        raise ValueError(f"unknown instances method {params.method!r}")
    if seeds.dtype == bool:
        markers, n_seeds = ndimage.label(seeds, structure=_EIGHT)
    else:  # already labelled (boundary interiors)
        markers, n_seeds = seeds, int(seeds.max())
    labels = flood(np.ascontiguousarray(dist), markers, mask)
    rest = mask & (labels == 0)
    if rest.any():
        extra, n_extra = ndimage.label(rest, structure=_EIGHT)
        labels[extra > 0] = extra[extra > 0] + n_seeds
        markers = np.where(extra > 0, extra + n_seeds, markers)
    labels = labels.astype(np.int32, copy=False)
    n = int(labels.max())
    if n == 0:
        return labels, np.zeros(0, np.int64)
    flat_idx = np.flatnonzero(markers)  # raster order
    first = np.full(n + 1, -1, np.int64)
    ids = markers.ravel()[flat_idx]
    uniq, pos = np.unique(ids, return_index=True)
    first[uniq] = flat_idx[pos]
    return _join_and_filter(labels, first, dist if method == "distance-head" else None, params)


def _join_and_filter(labels: np.ndarray, first: np.ndarray, dist: np.ndarray | None, params: InstanceParams) -> tuple[np.ndarray, np.ndarray]:
    """The last steps of :func:`local_instances` on labels ``1..n`` with ``first[i]`` the flat index of label
    ``i``'s first seed pixel (-1: none; ``first[0]`` unused): the border merge (with a ``dist`` and a
    ``merge_threshold``; a joined object keeps the first seed pixel of its parts), then objects under
    ``min_size`` pixels or without a seed dropped and the rest renumbered in order."""
    n = int(labels.max())
    if n == 0:
        return labels.astype(np.int32, copy=False), np.zeros(0, np.int64)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    joined = None
    if dist is not None and params.merge_threshold is not None:
        joined = merge_inner_borders(labels, dist, round(params.merge_threshold * 255), params.merge_min_solidity)
        if np.array_equal(joined, np.arange(n + 1)):
            joined = None
    if joined is not None:  # per joined object (under its smallest id; the others empty): area and first seed pixel
        areas = np.bincount(joined, weights=areas, minlength=n + 1).astype(np.int64)
        big = np.iinfo(np.int64).max
        f = np.full(n + 1, big)
        np.minimum.at(f, joined[1:], np.where(first[1:] >= 0, first[1:], big))
        first = np.where(f == big, -1, f)
    keep = (areas >= max(1, params.min_size)) & (first >= 0)
    keep[0] = False
    lut = np.zeros(n + 1, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return (lut if joined is None else lut[joined])[labels], first[keep]  # one pass over the pixels


def merge_inner_borders(labels: np.ndarray, dist: np.ndarray, level: float, min_solidity: float | None = None) -> np.ndarray:
    """A lookup table ``lut[label] -> label`` that joins neighbouring objects (4-connected) whose shared border
    has a mean ``dist`` (uint8, over the pixel pairs on either side of it) above ``level``; chains of such
    neighbours become one object, named after the smallest id. ``lut[0] == 0``.

    With ``min_solidity``, a join happens only if the joined object fills at least that share of its convex hull
    (:func:`solidity`): a round nucleus the seeds cut in two is convex again once joined, two nuclei pressed
    together are not. Pairs are then joined by falling border level (the most certain first), each checked
    against the object its parts have become so far."""
    n = int(labels.max())
    keys, sums, where = [], [], []  # where: a pixel of each border pair (on a's side), for the hull rule only
    inside = labels > 0
    for a, b, fa, fb, da, db in ((labels[:, :-1], labels[:, 1:], inside[:, :-1], inside[:, 1:], dist[:, :-1], dist[:, 1:]),
                                 (labels[:-1], labels[1:], inside[:-1], inside[1:], dist[:-1], dist[1:])):
        m = a != b
        m &= fa
        m &= fb
        ys, xs = np.divmod(np.flatnonzero(m), m.shape[1])  # (flat indices of a contiguous mask: faster than nonzero)
        if ys.size:
            am, bm = a[ys, xs], b[ys, xs]
            keys.append(np.minimum(am, bm).astype(np.int64) * (n + 1) + np.maximum(am, bm))
            sums.append(da[ys, xs].astype(np.uint16) + db[ys, xs])
            if min_solidity is not None:
                where.append(ys * labels.shape[1] + xs)
    lut = np.arange(n + 1, dtype=np.int32)
    if not keys:
        return lut
    key, first, inv, cnt = np.unique(np.concatenate(keys), return_index=True, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, np.concatenate(sums)) / (2 * cnt)
    candidates = np.flatnonzero(mean > level)
    if candidates.size == 0:
        return lut
    parent = np.arange(n + 1)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if min_solidity is not None:
        candidates = candidates[np.argsort(-mean[candidates], kind="stable")]
        at = np.concatenate(where)[first]
        members: dict[int, list[int]] = {}  # root -> the labels joined under it (absent: itself alone)
    for k in candidates.tolist():
        ra, rb = root(int(key[k] // (n + 1))), root(int(key[k] % (n + 1)))
        if ra == rb:
            continue
        if min_solidity is not None:
            joined = members.get(ra, [ra]) + members.get(rb, [rb])
            if solidity(_object_around(labels, joined, *divmod(int(at[k]), labels.shape[1]))) < min_solidity:
                continue
            members[min(ra, rb)] = joined
        parent[max(ra, rb)] = min(ra, rb)
    while True:  # every label to its root
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent.astype(np.int32)
        parent = nxt


def _object_around(labels: np.ndarray, ids: list[int], y: int, x: int) -> np.ndarray:
    """The mask of the connected object made of ``ids`` that holds pixel ``(y, x)``, cropped to a window around
    it that grows (from 65 px) until the object does not reach its edge (then all of it is inside)."""
    h, w = labels.shape
    r = 32
    while True:
        y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
        sub = np.isin(labels[y0:y1, x0:x1], ids)
        if not ((y0 > 0 and sub[0].any()) or (y1 < h and sub[-1].any()) or (x0 > 0 and sub[:, 0].any()) or (x1 < w and sub[:, -1].any())):
            return sub
        r *= 2


def solidity(mask: np.ndarray) -> float:
    """The share of its digital convex hull that a 2D mask fills: its pixels over the pixel centres in or on the
    convex polygon through its pixels' centres (1 for a convex object). The polygon's vertices are pixel centres,
    so Pick's theorem counts those points exactly: area + boundary points / 2 + 1."""
    from scipy.spatial import ConvexHull, QhullError

    area = int(np.count_nonzero(mask))
    if not area:
        return 0.0
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    ends = np.concatenate([  # the first and last pixel of each row and column: the hull's vertices are among them
        np.stack([rows, mask[rows].argmax(1)], 1), np.stack([rows, w - 1 - mask[rows, ::-1].argmax(1)], 1),
        np.stack([mask[:, cols].argmax(0), cols], 1), np.stack([h - 1 - mask[::-1, cols].argmax(0), cols], 1)])
    try:
        v = ends[ConvexHull(ends).vertices].astype(np.int64)
    except QhullError:  # all on one line: the lattice points of the segment between its ends
        d = ends.max(0) - ends.min(0)
        return area / max(area, math.gcd(int(d[0]), int(d[1])) + 1)
    nxt = np.roll(v, -1, 0)
    twice_area = abs(int((v[:, 0] * nxt[:, 1] - nxt[:, 0] * v[:, 1]).sum()))
    boundary = int(np.gcd(np.abs(nxt[:, 0] - v[:, 0]), np.abs(nxt[:, 1] - v[:, 1])).sum())
    return area / max(area, (twice_area + boundary) // 2 + 1)


_streams = threading.local()


def _on_device(fg, dist, params: InstanceParams):
    """:func:`local_instances` with torch on ``params.device``; on CUDA on a side stream of this thread, so its
    waits for results are not queued behind the model's work on the default stream."""
    import torch

    from .instances_torch import local_instances_torch

    device = torch.device(params.device)
    if device.type != "cuda":
        return local_instances_torch(fg, dist, params, device=device)
    key = str(device)
    stream = getattr(_streams, key, None)
    if stream is None:
        stream = torch.cuda.Stream(device)
        setattr(_streams, key, stream)
    with torch.cuda.device(device), torch.cuda.stream(stream):
        return local_instances_torch(fg, dist, params, device=device)


BlockCallback = Callable[[Window, np.ndarray, int, int], None]
"""``on_block(window, labels_window, first_id, last_id)``: ``labels_window`` holds the global ids of the
objects this block owns (others 0), ``first_id..last_id`` inclusive (none when ``last_id < first_id``)."""


def labels_from_probabilities(
    probs,
    out,
    params: InstanceParams = InstanceParams(),
    *,
    start_id: int = 1,
    on_block: BlockCallback | None = None,
    on_start: Callable[[Window], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    workers: int | None = None,
) -> tuple[int, float]:
    """Write instance labels of ``probs`` ``(K, H, W)`` uint8 into ``out`` ``(H, W)`` (zeroed, int32).

    Blocks' local instances are computed by ``workers`` threads (default
    :func:`~napari_impc_dl.config.worker_threads`, never more than blocks), a block or two ahead
    (the seeded flood, labelling and masks mostly release the GIL: two blocks at a time take about
    0.7 of the time of one after the other on two cores); ids, writes into ``out`` and ``on_block``
    calls happen on the calling thread in raster order of blocks, so the result does not depend
    on the number of workers. ``on_start(window)`` is called (on the calling thread, in the same
    order) when a block's work begins, e.g. to start reading what its callback will need.
    Returns ``(next_id, seconds spent turning probabilities into labels)``: the wall time of the
    call less the time spent in ``on_block`` and ``on_start`` (e.g. queueing a block for
    measurement).
    """
    shape = tuple(probs.shape[1:])
    windows = plan_blocks(shape, params.block, params.halo)
    workers = min(worker_threads(params.block, params.halo) if workers is None else max(1, workers), len(windows))
    t_start = time.perf_counter()
    in_callback = 0.0
    next_id = start_id

    def local(w: Window):
        p = np.asarray(probs[:, w.y0 : w.y1, w.x0 : w.x1])
        return local_instances(p[0], p[1] if p.shape[0] > 1 else None, params)

    def begin(w: Window) -> None:
        nonlocal in_callback
        if on_start is not None:
            t0 = time.perf_counter()
            on_start(w)
            in_callback += time.perf_counter() - t0

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="impc-instances") if workers > 1 else None
    ahead: deque[Future] = deque()
    try:
        for i, w in enumerate(windows):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if pool is None:
                begin(w)
                labels, anchors = local(w)
            else:
                while len(ahead) < workers and i + len(ahead) < len(windows):
                    begin(windows[i + len(ahead)])
                    ahead.append(pool.submit(local, windows[i + len(ahead)]))
                labels, anchors = ahead.popleft().result()
            ww = w.x1 - w.x0
            ay, ax = anchors // ww + w.y0, anchors % ww + w.x0
            owned = (ay >= w.cy0) & (ay < w.cy1) & (ax >= w.cx0) & (ax < w.cx1)
            lut = np.zeros(len(anchors) + 1, np.int32)
            n_owned = int(owned.sum())
            lut[1:][owned] = np.arange(next_id, next_id + n_owned, dtype=np.int32)
            glob = lut[labels]
            del labels
            if len(windows) == 1:
                out[w.y0 : w.y1, w.x0 : w.x1] = glob
            else:
                region = np.asarray(out[w.y0 : w.y1, w.x0 : w.x1])
                sel = glob > 0
                region[sel] = glob[sel]
                out[w.y0 : w.y1, w.x0 : w.x1] = region
            if on_block is not None:
                t0 = time.perf_counter()
                on_block(w, glob, next_id, next_id + n_owned - 1)
                in_callback += time.perf_counter() - t0
            next_id += n_owned
            if progress is not None:
                progress(i + 1, len(windows))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)  # no thread outlives the call, also on error or cancel
    return next_id, time.perf_counter() - t_start - in_callback
