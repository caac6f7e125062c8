"""Decoded storage chunks kept for reuse while an image is being segmented.

One segmentation reads each part of the image several times: the pixel sample for normalisation,
tile bands that overlap by the halo and share storage chunks with the next band, and the windows
of the postprocessing blocks that are measured. A zarr array (or a tiled TIFF read through
tifffile's zarr store) decodes every chunk a read touches, each time: on the 4096 x 4096 benchmark
image (16 zstd chunks of 1024 x 1024) a run decoded chunks 80 times, at 5-8 ms each; now 16.
:class:`ChunkCache` serves reads from whole decoded chunks, keeping the most recently used ones up
to a byte budget, so neighbouring reads share the decoding.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

CACHE_BYTES = 64 * 2**20
"""Decoded chunks kept per image. Only images whose planes fit are cached (a 4096 x 4096 uint16
plane is 32 MB): each of their chunks is then decoded once per run. On a 16384 x 16384 image a
64-128 MB cache of the chunk rows that consecutive tile bands share saved nothing measurable and
raised the run's peak memory by 120-200 MB (1571 -> 1693-1778 MB), so bigger planes are read directly."""

MIN_CHUNK_BYTES = 256 * 2**10
"""Smaller chunks (e.g. TIFF strips of a few rows) are read directly: per-chunk bookkeeping would cost more than it saves."""


def chunk_shape(array: Any) -> tuple[int, ...] | None:
    """The storage chunk shape (one int per axis) of a zarr array or a regularly chunked dask array, or None
    (contiguous storage: numpy, memmap)."""
    chunks = getattr(array, "chunksize", None) or getattr(array, "chunks", None)
    if not isinstance(chunks, tuple) or len(chunks) != len(array.shape):
        return None
    if not all(isinstance(c, (int, np.integer)) and c > 0 for c in chunks):
        return None
    return tuple(int(c) for c in chunks)


class ChunkCache:
    """Reads windows of a chunked array through an LRU cache of decoded chunks (thread-safe).

    ``read(selection)`` takes a tuple with one int or step-1 slice per axis and returns what
    ``array[selection]`` returns (as a new numpy array).
    """

    def __init__(self, array: Any, chunks: tuple[int, ...], max_bytes: int = CACHE_BYTES) -> None:
        self.array, self.chunks = array, chunks
        self.shape = tuple(int(s) for s in array.shape)
        self.max_bytes = max_bytes
        self.dtype = np.dtype(array.dtype)
        self._lru: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.decoded = 0
        """Chunks decoded so far (for tests and benchmarks)."""

    @classmethod
    def for_array(cls, array: Any, plane_bytes: int, max_bytes: int = CACHE_BYTES) -> ChunkCache | None:
        """A cache for ``array`` when it is chunked, its chunks are worth caching and a plane
        (``plane_bytes``, all channels) fits in ``max_bytes``; else None."""
        chunks = chunk_shape(array)
        if chunks is None or plane_bytes > max_bytes:
            return None
        nbytes = math.prod(chunks) * np.dtype(array.dtype).itemsize
        if nbytes < MIN_CHUNK_BYTES or nbytes > max_bytes // 4:
            return None
        return cls(array, chunks, max_bytes)

    def read(self, selection: tuple) -> np.ndarray:
        ranges, out_shape, dst_axes = [], [], []
        for ax, (sel, n, c) in enumerate(zip(selection, self.shape, self.chunks, strict=True)):
            if isinstance(sel, slice):
                a, b, _ = sel.indices(n)
                b = max(a, b)
                ranges.append((a, b))
                out_shape.append(b - a)
                dst_axes.append(ax)
            else:
                i = int(sel) + (n if int(sel) < 0 else 0)
                if not 0 <= i < n:
                    raise IndexError(f"index {sel} is out of bounds for axis {ax} with size {n}")
                ranges.append((i, i + 1))
        out = np.empty(tuple(out_shape), self.dtype)
        if out.size == 0:
            return out
        per_axis = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(ranges, self.chunks)]
        for key in itertools.product(*per_axis):
            block = self._chunk(key)
            src, dst = [], []
            for ax, (k, c, (a, b)) in enumerate(zip(key, self.chunks, ranges)):
                lo, hi = max(a, k * c), min(b, (k + 1) * c)
                src.append(slice(lo - k * c, hi - k * c))
                if ax in dst_axes:
                    dst.append(slice(lo - a, hi - a))
            target = out[tuple(dst)]  # a view: int-indexed axes are dropped from the chunk's part
            target[...] = block[tuple(src)].reshape(target.shape)
        return out

    def _chunk(self, key: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            block = self._lru.get(key)
            if block is not None:
                self._lru.move_to_end(key)
                return block
        sel = tuple(slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(key, self.chunks, self.shape))
        block = np.asarray(self.array[sel])  # decoded outside the lock: threads decode different chunks at once
        with self._lock:
            self.decoded += 1
            if key not in self._lru:
                self._lru[key] = block
                self._bytes += block.nbytes
            while self._bytes > self.max_bytes and len(self._lru) > 1:
                _, old = self._lru.popitem(last=False)
                self._bytes -= old.nbytes
        return block

    def clear(self) -> None:
        """Drop every kept chunk."""
        with self._lock:
            self._lru.clear()
            self._bytes = 0

