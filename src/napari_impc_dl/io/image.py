"""Open any input image lazily: :func:`open_image` returns an :class:`ImageSource`.

An image here is a stack of 2D planes, each with one or more channels. The rest of the package
asks an :class:`ImageSource` for windows of one plane (``read``) and for a pixel sample (``sample``,
for percentile normalisation), never for the whole image, so a 16384 x 16384 TIFF or zarr costs
only the memory of the tiles being worked on.

>>> with open_image("cells.ome.tif") as img:          # doctest: +SKIP
...     img.axes, img.n_channels, img.spatial_shape    # ('CYX', 2, (16384, 16384))
...     for plane in img.planes():                     # () for a 2D image, (z,) for a Z stack
...         tile = img.read(plane, slice(0, 512), slice(0, 512))   # (C, 512, 512)

How axes are decided (metadata, heuristics, the ``channel_axis`` override) is documented in
:mod:`napari_impc_dl.io._axes`; which formats open and how they stay lazy in
:mod:`napari_impc_dl.io._formats`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._axes import resolve_axes
from ._chunks import ChunkCache, chunk_shape
from ._formats import SUFFIXES, _nothing, _reason, check_dtype, open_by_suffix

_STACK = "TZ"


class ImageSource:
    """A lazily-read image with known axes. Never reads the whole image unless asked.

    Attributes:
        path: the file or folder it came from (``None`` for in-memory data).
        name: file stem used for output names (``"cells"`` for ``cells.ome.tif`` / ``cells.zarr``).
        axes: one letter per axis of the underlying array, from ``TZCYX``, in the array's order.
        dtype: the dtype :meth:`read` returns: the file's, in native byte order; bool is read as uint8.
        shape: the underlying array's shape, in ``axes`` order.
        n_channels: size of the C axis, 1 when there is none.
        spatial_shape: ``(Y, X)``.
        stack_shape: sizes of the stack axes (``T``, ``Z``) in array order; ``()`` for a 2D image.
        lazy_array: the underlying read-only array-like (numpy, ``np.memmap`` or ``zarr.Array``)
            for napari and dask. Note it has the file's axes order and dtype.
    """

    def __init__(self, array: Any, axes: str, *, path: Path | None, name: str, closer=_nothing) -> None:
        self.lazy_array = array
        self.path = path
        self.name = name
        self.axes = axes
        self.shape = tuple(int(s) for s in array.shape)
        native = np.dtype(array.dtype).newbyteorder("=")
        self.dtype = np.dtype(np.uint8) if native.kind == "b" else native
        self.n_channels = self.shape[axes.index("C")] if "C" in axes else 1
        self.spatial_shape = (self.shape[axes.index("Y")], self.shape[axes.index("X")])
        self.stack_shape = tuple(s for a, s in zip(axes, self.shape, strict=True) if a in _STACK)
        self._closer = closer
        self.slide: dict | None = None
        """Of a level of a pyramidal file: ``level``, ``n_levels``, ``downsample`` (full-resolution pixels per
        pixel here) and ``pixel_size_um`` (here; None when the file does not say)."""
        self._samples: dict[tuple, np.ndarray] = {}  # sample() memo: input checks and normalisation share one read
        self._closed = False
        self._label = f"'{path}'" if path is not None else f"'{name}'"
        # decoded chunks of files, shared by the sample, overlapping tiles and measured windows (not of
        # in-memory arrays, which a napari user may edit between runs)
        plane_bytes = self.n_channels * math.prod(self.spatial_shape) * np.dtype(array.dtype).itemsize
        self._cache = ChunkCache.for_array(array, plane_bytes) if path is not None else None

    @classmethod
    def from_array(
        cls, data: Any, *, name: str = "image", channel_axis: int | None | str = "auto", axes: str | None = None
    ) -> ImageSource:
        """Wrap in-memory or lazy data (numpy, dask, zarr: e.g. a napari layer's data).

        ``axes`` (letters from ``TZCYX``, ``?`` for unknown) replaces the heuristics when given.
        """
        check_dtype(data.dtype, f"'{name}'")
        resolved = resolve_axes(tuple(data.shape), axes, channel_axis, f"'{name}'")
        return cls(data, resolved, path=None, name=name)

    # ------------------------------------------------------------------ reading

    def planes(self) -> Iterator[tuple[int, ...]]:
        """Every stack index, in order: ``()`` once for a 2D image, ``(z,)`` for a Z stack, ``(t, z)`` ..."""
        return itertools.product(*(range(n) for n in self.stack_shape))

    def read(self, plane: tuple[int, ...], ys: slice, xs: slice) -> np.ndarray:
        """Read one window of one plane as a new ``(C, h, w)`` array of :attr:`dtype`.

        Only the storage chunks (tiles, strips, zarr chunks) the window touches are read.
        ``ys``/``xs`` follow numpy slicing (clipped at the image border, step 1 only).
        """
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        plane = self._check_plane(plane)
        for s in (ys, xs):
            if not isinstance(s, slice) or s.step not in (None, 1):
                raise ValueError(f"ys and xs must be slices with step 1, got {s!r}")
        stack = iter(plane)
        selection = tuple(
            ys if a == "Y" else xs if a == "X" else slice(None) if a == "C" else next(stack) for a in self.axes
        )
        try:
            data = self._cache.read(selection) if self._cache is not None else np.asarray(self.lazy_array[selection])
        except MemoryError:
            raise
        except Exception as exc:
            raise InputError(
                f"Cannot read {self._label} (plane {plane}, rows {ys.start}:{ys.stop}, columns {xs.start}:{xs.stop}): "
                f"{_reason(exc)}",
                "The file may be damaged or truncated; re-export or re-copy it",
            ) from exc
        kept = [a for a in self.axes if a in "CYX"]
        if "C" not in kept:
            data, kept = data[np.newaxis], ["C", *kept]
        data = np.transpose(data, [kept.index(a) for a in "CYX"])
        return np.array(data, dtype=self.dtype, order="C", copy=True)

    def sample(self, plane: tuple[int, ...] = (), max_pixels: int = 2**20) -> np.ndarray:
        """A ``(C, N)`` pixel sample (``N <= max_pixels``) for percentile normalisation and content checks.

        Pixels come from a grid of windows spread evenly over the plane, each window inside one
        storage chunk, so a large chunked image is touched in only a few chunks. A plane of at most
        ``max_pixels`` pixels is returned whole. With ``plane=()`` on a stack, up to 8 planes spread
        over the stack share the budget. The sample is read once per ``(plane, max_pixels)`` and
        returned read-only afterwards.
        """
        if max_pixels < 1:
            raise ValueError("max_pixels must be >= 1")
        key = (tuple(plane), max_pixels)
        if key in self._samples:
            return self._samples[key]
        if plane or not self.stack_shape:
            chosen = [self._check_plane(plane)]
        else:
            total = math.prod(self.stack_shape)
            flat = np.unique(np.linspace(0, total - 1, min(8, total)).round().astype(int))
            chosen = [tuple(int(i) for i in np.unravel_index(f, self.stack_shape)) for f in flat]
        budget = max(1, max_pixels // len(chosen))
        out = np.concatenate([self._sample_plane(p, budget) for p in chosen], axis=1)
        out.flags.writeable = False
        if len(self._samples) >= 16:
            self._samples.pop(next(iter(self._samples)))
        self._samples[key] = out
        return out

    def _sample_plane(self, plane: tuple[int, ...], budget: int) -> np.ndarray:
        ny, nx = self.spatial_shape
        c = self.n_channels
        if ny * nx <= budget:
            return self.read(plane, slice(None), slice(None)).reshape(c, -1)
        side = max(16, math.isqrt(budget // 16))  # aim: about 16 windows of side x side
        chunks = self._chunk_yx()
        cy, cx = chunks or (side, side)  # no chunks (memmap, numpy): a side x side grid
        cy, cx = min(cy, ny), min(cx, nx)
        if cy * cx <= side * side:  # small chunks: windows of whole chunks, grouped to about side x side
            mx = max(1, side // cx)
            my = max(1, min(side // cy, side * side // (cy * cx * mx)))
            step = (wy, wx) = (min(cy * my, ny), min(cx * mx, nx))
        else:  # big chunks or strips: one window per chosen chunk, so each chunk is decoded once
            area = budget // min(16, math.ceil(ny / cy) * math.ceil(nx / cx))
            wy = min(cy, max(16, math.isqrt(area)))
            wx = min(cx, max(wy, area // wy))
            step, wy = (cy, cx), min(cy, max(wy, area // wx))
        rows, cols = math.ceil(ny / step[0]), math.ceil(nx / step[1])
        n = max(1, budget // (wy * wx))
        gy = min(rows, n, max(1, round(math.sqrt(n * rows / cols))))
        gx = min(cols, max(1, round(n / gy)))
        windows = []
        for k, (r, q) in enumerate(itertools.product(_spread(rows, gy), _spread(cols, gx))):
            # Inside a chunk larger than the window, vary the offset (not every strip sampled at x=0).
            oy = r * step[0] + int((((k + 0.5) * 0.618) % 1) * max(0, min(step[0], ny - r * step[0]) - wy))
            ox = q * step[1] + int((((k + 0.5) * 0.382) % 1) * max(0, min(step[1], nx - q * step[1]) - wx))
            windows.append((slice(oy, oy + wy), slice(ox, ox + wx)))
        read = lambda w: self.read(plane, *w).reshape(c, -1)  # noqa: E731
        if chunks is not None and len(windows) > 1:  # chunk decoding releases the GIL: one window per core at once
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="impc-sample") as pool:
                parts = list(pool.map(read, windows))
        else:
            parts = [read(w) for w in windows]
        out = np.concatenate(parts, axis=1)
        if out.shape[1] > budget:
            out = out[:, np.linspace(0, out.shape[1] - 1, budget).astype(int)]
        return out

    def _chunk_yx(self) -> tuple[int, int] | None:
        """The storage chunk's (Y, X) size, or None when storage is contiguous (numpy, memmap)."""
        chunks = chunk_shape(self.lazy_array)
        if chunks is None:
            return None
        return chunks[self.axes.index("Y")], chunks[self.axes.index("X")]

    def _check_plane(self, plane: tuple[int, ...]) -> tuple[int, ...]:
        plane = tuple(int(i) for i in plane)
        if len(plane) != len(self.stack_shape) or any(not 0 <= i < n for i, n in zip(plane, self.stack_shape)):
            raise IndexError(f"plane {plane} is not a stack index of {self._label} (stack shape {self.stack_shape})")
        return plane

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the file (safe to call twice). Windows already read stay valid."""
        closer, self._closer, self._closed = self._closer, _nothing, True
        self._samples.clear()
        if self._cache is not None:
            self._cache.clear()
        closer()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ImageSource({self._label}, axes={self.axes!r}, shape={self.shape}, dtype={self.dtype})"


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included."""
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def image_name(path: Path) -> str:
    """The stem used for output names: ``cells`` for cells.ome.tif, cells.zarr, cells.png."""
    lower = path.name.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return path.stem or path.name


def open_image(path: str | Path, *, channel_axis: int | None | str = "auto", level: int | None = None, pixel_size_um: float | None = None) -> ImageSource:
    """Open an image file or ``.zarr`` folder lazily.

    Formats: TIFF / OME-TIFF / ImageJ TIFF / Aperio SVS / NDPI (first series; of a pyramid, the level
    ``level``, or the coarsest with pixels of at most ``pixel_size_um``; default full resolution), ``.zarr`` (plain array,
    single-array group, OME-Zarr v0.4/v0.5 full resolution), ``.npy`` (memory-mapped), PNG/JPEG/BMP
    (read whole). ``channel_axis``: ``"auto"`` (metadata, then heuristics), an axis index of the
    stored array that holds the channels, or ``None`` for no channel axis.
    Raises :class:`InputError` for a missing, unsupported, damaged or unusable input.
    """
    path = Path(path).expanduser()
    label = f"'{path}'"
    if not path.exists():
        raise InputError(f"{label} does not exist", "Check the path and the spelling of the file name")
    if (level or pixel_size_um) and not path.name.lower().endswith((".tif", ".tiff", ".svs", ".ndpi")):
        raise InputError(f"{label} is not a pyramidal TIFF, so --level / --pixel-size do not apply", "Leave them out for this file")
    opened = open_by_suffix(path, label, level=level, pixel_size_um=pixel_size_um)
    try:
        check_dtype(opened.array.dtype, label)
        axes = resolve_axes(tuple(int(s) for s in opened.array.shape), opened.known_axes, channel_axis, label)
    except BaseException:
        opened.close()
        raise
    src = ImageSource(opened.array, axes, path=path, name=image_name(path), closer=opened.close)
    if opened.slide is not None:
        src.slide = opened.slide
    return src
