"""The tiled inference engine: image plane in, probability maps out.

    read (prefetch thread) -> normalise -> batch -> forward (AMP, channels_last) -> crop cores -> write

* A reader thread reads and normalises the next batches while the model computes the current one
  (numpy and zarr release the GIL while they copy and decompress).
* On CUDA the input batch is pinned and copied asynchronously; outputs are quantised to uint8 on the
  device and copied back into pinned buffers without waiting; a batch is written out only after the
  next one has been queued, so there is no host sync per tile.
* Models with ``forward_region`` compute only the window of each batch that holds the tiles'
  cores: the halo is context for the encoder, and most of the decoder skips it.
* Finished batches are written out by a writer thread (:class:`_Writer`) on CUDA and whenever
  ``out`` is not a numpy array (a zarr store compresses and writes chunks): the thread that
  feeds the GPU never waits for a copy or a write.
* ``on_rows(rows)`` (optional) is told, in increasing order, that rows ``0:rows`` of ``out`` are
  final: tiles are written in raster order, so postprocessing can start on the top of a plane
  while the model computes the bottom (:mod:`.pipeline` overlaps them on a GPU).
* Out of memory: halve the batch, then the tile, then fall back to the CPU with a warning.
* ``progress(done, total)`` is called after every batch; ``cancel`` (a :class:`CancelToken`) is
  checked between batches.

When ``out`` is uint8, outputs are probabilities stored as ``round(p * 255)``: a quarter of
float32's memory and IO, and finer than any threshold a user sets. Any other ``out`` dtype (e.g.
float32 for models whose outputs are not probabilities) receives the raw values.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import GPU_BATCH
from ..errors import CancelToken
from .allocator import release_free_memory
from .runnable import Normalizer, Runnable
from .tiling import Tile, TilePlan, plan_tiles

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


def resolve_device(device: str = "auto"):
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    import torch

    from ..errors import InputError

    d = (device or "auto").lower()
    if d == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"Device '{device}' was requested but no CUDA GPU is visible", "Use --device auto or --device cpu")
    if d == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise InputError("Device 'mps' was requested but Apple MPS is not available", "Use --device auto or --device cpu")
    if d not in ("cpu", "mps") and not d.startswith("cuda"):
        raise InputError(f"Unknown device '{device}'", "Use auto, cpu, cuda, cuda:N or mps")
    return torch.device(d)


def describe_device(device) -> str:
    """Human-readable device name (the GPU's name on CUDA)."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@dataclass
class EngineStats:
    """What a run did, for logs and benchmarks."""

    n_tiles: int = 0
    tile_shape: tuple[int, int] = (0, 0)
    halo: int = 0
    batch: int = 0
    device: str = "cpu"
    overhead: float = 1.0
    seconds: float = 0.0
    wait_s: float = 0.0
    """Time the model waited for the reader (0 = the reader kept up)."""
    fallbacks: list[str] = field(default_factory=list)


class _Retry(Exception):
    """Internal: re-plan the plane with a smaller tile or another device."""


_BAND_BYTES = 64 * 2**20
"""A row of tiles is read as one band when the band is at most this big (in the image's dtype)."""


class _Reader(threading.Thread):
    """Reads, pads and normalises batches of tiles ahead of the model.

    Tiles of one grid row are cut from one read of the whole band of rows (when it is at most
    :data:`_BAND_BYTES`): neighbouring tiles overlap and share storage chunks, so reading tile by
    tile would decode most chunks of a zarr / tiled TIFF two to four times. The reader's CPU time
    is taken from the model's threads, so it matters beyond its own share.
    """

    def __init__(self, read: Callable[[Tile], np.ndarray], plan: TilePlan, normalize: Normalizer, batch: int, pin: bool, depth: int = 2):
        super().__init__(daemon=True, name="impc-tile-reader")
        self.read, self.plan, self.normalize, self.batch, self.pin = read, plan, normalize, batch, pin
        self.band_bytes: int | None = None
        """Bytes of one band of rows, known after the first read."""
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self._band: tuple[tuple[int, int], np.ndarray] | None = None

    def _window(self, tile: Tile) -> np.ndarray:
        if self.band_bytes is None:  # the first tile tells the channels and dtype
            x = self.read(tile)
            self.band_bytes = x.nbytes * self.plan.shape[1] // max(1, tile.x1 - tile.x0)
            return x
        if self.band_bytes > _BAND_BYTES or tile.x1 - tile.x0 >= self.plan.shape[1]:
            return self.read(tile)
        if self._band is None or self._band[0] != (tile.y0, tile.y1):
            w = self.plan.shape[1]
            self._band = ((tile.y0, tile.y1), self.read(Tile(tile.y0, tile.y1, 0, w, tile.y0, tile.y1, 0, w)))
        return self._band[1][:, :, tile.x0 : tile.x1]

    def _load(self, tile: Tile) -> np.ndarray:
        x = self._window(tile)
        py, px = tile.py, tile.px
        if py or px:
            mode = "reflect" if (x.shape[1] > py and x.shape[2] > px) else "edge"
            x = np.pad(x, ((0, 0), (0, py), (0, px)), mode=mode)
        return self.normalize(x)

    def run(self) -> None:
        import torch

        try:
            tiles = self.plan.tiles
            for i in range(0, len(tiles), self.batch):
                if self.stop.is_set():
                    return
                group = tiles[i : i + self.batch]
                arr = np.stack([self._load(t) for t in group])
                if arr.dtype != np.float32:  # e.g. float64 from a package's preprocessing: MPS rejects it, CUDA convolutions refuse it
                    arr = arr.astype(np.float32)
                x = torch.from_numpy(arr)
                if self.pin:
                    x = x.pin_memory()
                self._put((group, x))
            self._put(None)
        except BaseException as exc:  # hand the error to the consumer
            self._put(exc)

    def _put(self, item) -> None:
        put_unless(self.q, item, self.stop.is_set)


def put_unless(q: queue.Queue, item, stopped: Callable[[], bool]) -> bool:
    """Put ``item`` into the bounded queue ``q``, waiting for room, unless ``stopped()`` turns true first
    (checked every 0.1 s, so a producer never blocks on a consumer that has gone). True when put."""
    while not stopped():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _ints(v) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _autocast(device):
    import torch

    if device.type == "cuda":
        from ..devices import native_bf16

        dtype = torch.bfloat16 if native_bf16() else torch.float16  # fp16 where bf16 would only be emulated
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def _is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the RuntimeError MPS raises ("MPS backend out of memory")."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _empty_cache(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _device_context(device):
    """``torch.cuda.device(device)`` on CUDA (so ``cuda:N`` streams, events and pinned copies are device N's), else nothing."""
    import torch

    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def predict_plane(
    model: Runnable,
    read: Callable[[Tile], np.ndarray],
    shape: tuple[int, int],
    out,
    normalize: Normalizer,
    *,
    tile: int | None = None,
    halo: int | None = None,
    batch: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> EngineStats:
    """Run ``model`` over one ``(H, W)`` plane in tiles and write its outputs to ``out`` ``(K, H, W)``.

    uint8 ``out``: probabilities quantised to 0..255; other dtypes: raw output values.

    ``read(tile)`` returns the raw ``(C, h, w)`` window ``[tile.y0:tile.y1, tile.x0:tile.x1]``.
    ``out`` is any writable array (numpy, zarr). Tile and halo default to the model's own; the
    batch to 1 on the CPU and :data:`~napari_impc_dl.config.GPU_BATCH` on a GPU.
    ``on_rows(rows)``: rows ``0:rows`` of ``out`` are final (called from the writer thread). After
    an out-of-memory re-plan those rows are not written again, so what was handed on stays true.
    """
    rules = model.info.tiling
    tile = rules.tile if tile is None else tile
    halo = rules.halo if halo is None else halo
    first_tile, first_halo, home = tile, halo, model.device
    if batch is None:
        batch = 1 if model.device.type == "cpu" else GPU_BATCH
    stats = EngineStats()
    t0 = time.perf_counter()
    final = [0]  # rows already final (and handed on): a re-plan leaves them alone

    def rows(r: int) -> None:
        final[0] = r
        if on_rows is not None:
            on_rows(r)

    try:
        while True:
            plan = plan_tiles(shape, tile, halo, step=rules.step, min_tile=rules.min_tile, fixed=rules.fixed)
            try:
                _run_plan(model, read, plan, out, normalize, batch, progress, cancel, stats, on_rows=rows, floor=final[0])
                break
            except _Retry as r:
                action = str(r)
                step, min_tile = max(_ints(rules.step)), max(_ints(rules.min_tile))  # per-axis rules: the larger
                smaller = max(min_tile, (tile // 2) // step * step)
                if action == "tile" and (rules.fixed or smaller >= max(plan.tile_shape)):
                    action = "cpu"  # a fixed-size model, or a tile already at its minimum: it cannot shrink
                stats.fallbacks.append(action)
                if action == "tile":
                    tile = smaller
                    halo = min(halo, max(0, (tile - step) // 4))
                    batch = 1
                elif action == "cpu":
                    warnings.warn("GPU out of memory even with a batch of one minimal tile: continuing on the CPU (slower)", RuntimeWarning, stacklevel=2)
                    model.to("cpu")
                    tile, halo, batch = first_tile, first_halo, 1  # the CPU has room: the model's own tile and full halo again
                else:
                    raise AssertionError(action) from None
    finally:
        if model.device != home:  # the next image tries the GPU again
            model.to(home)
    release_free_memory()  # the forward's buffers: what comes next (postprocessing) should not sit on top of them
    stats.seconds = time.perf_counter() - t0
    return stats


def predict_tiles(
    model: Runnable,
    read: Callable[[Tile], np.ndarray],
    plan: TilePlan,
    out,
    normalize: Normalizer,
    *,
    batch: int,
    keep_size: tuple[int, int] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> EngineStats:
    """Run ``model`` over exactly the tiles of ``plan``, ``batch`` at a time, into ``out`` (as :func:`predict_plane`).

    For part of a plane computed elsewhere, e.g. one batch of a huge image's tiles on a dask
    worker: given tiles of the whole plane's plan (grouped as its batches) and that plan's
    ``keep_size`` (:func:`keep_window_size`), every forward is one of the whole-plane run, so the
    probabilities are the same. Nothing is re-planned: running out of GPU memory even with a
    batch of one is an error here.
    """
    stats = EngineStats()
    t0 = time.perf_counter()
    try:
        _run_plan(model, read, plan, out, normalize, batch, progress, cancel, stats, keep_size=keep_size)
    except _Retry:
        raise MemoryError(f"out of GPU memory with a batch of one {plan.tile_shape[0]} x {plan.tile_shape[1]} tile") from None
    stats.seconds = time.perf_counter() - t0
    return stats


def keep_window_size(plan: TilePlan, batch: int) -> tuple[int, int]:
    """The window size every forward of ``plan`` in batches of ``batch`` computes (models with ``forward_region``)."""
    return _keep_size(plan, batch)


def _run_plan(model, read, plan: TilePlan, out, normalize, batch, progress, cancel, stats: EngineStats, keep_size=None, on_rows=None, floor: int = 0) -> None:
    import torch

    device = model.device
    cuda = device.type == "cuda"
    gpu = device.type in ("cuda", "mps")
    if cuda:
        torch.backends.cudnn.benchmark = True  # a plan has one or two tile shapes: cuDNN's fastest kernels for them
    stats.n_tiles, stats.tile_shape, stats.halo = len(plan.tiles), plan.tile_shape, plan.halo
    stats.overhead, stats.device, stats.batch = plan.overhead, describe_device(device), batch
    quantize = np.dtype(out.dtype) == np.uint8
    region = getattr(model, "forward_region", None)  # computes only the tiles' cores (less work over the halo)
    size = _keep_size(plan, batch) if keep_size is None else tuple(keep_size)
    reader = _Reader(read, plan, normalize, batch, pin=cuda)
    reader.start()
    writer = _Writer(out, plan, on_rows, floor, threaded=cuda or not isinstance(out, np.ndarray))
    done = 0
    sub = batch  # current sub-batch size (halved on OOM)
    try:
        with torch.inference_mode(), _device_context(device), _autocast(device):
            while True:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                tw = time.perf_counter()
                item = reader.q.get()
                stats.wait_s += time.perf_counter() - tw
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                group, x = item
                i = 0
                while i < len(group):
                    xs = x[i : i + sub]
                    part = group[i : i + sub]
                    keep = _keep(part, plan.tile_shape, size) if region is not None else None
                    try:
                        xd = xs.to(device, non_blocking=cuda).contiguous(memory_format=torch.channels_last)
                        y = model.forward(xd) if keep is None else region(xd, keep)
                        y8 = torch.add(0.5, y.float(), alpha=255.0).clamp_(0, 255).to(torch.uint8) if quantize else y.float()
                    except (RuntimeError, MemoryError) as exc:
                        if not (gpu and _is_oom(exc)):
                            raise
                        _empty_cache(device)
                        if sub > 1:
                            sub //= 2
                            stats.fallbacks.append(f"batch->{sub}")
                            continue
                        raise _Retry("tile" if plan.tile_shape[0] > 2 * 64 else "cpu") from None
                    if cuda:  # the copy is queued behind the forward; the writer waits for it, not this thread
                        host = torch.empty(y8.shape, dtype=y8.dtype, pin_memory=True)
                        host.copy_(y8, non_blocking=True)
                        ev = torch.cuda.Event()
                        ev.record(torch.cuda.current_stream(device))  # this device's stream (cuda:N), not device 0's
                        writer.put((part, keep, host, ev))
                    else:  # CPU (a no-op) or MPS: numpy needs host memory
                        writer.put((part, keep, y8.cpu(), None))
                    i += len(xs)
                    done += len(xs)
                if progress is not None:
                    progress(done, len(plan.tiles))
        writer.close()  # every batch written (and handed on) before the plan counts as done
    finally:
        writer.abort()  # on an error: stop without waiting for the rest (a no-op after close)
        reader.stop.set()
        reader.join(timeout=10)


def _union(tiles) -> tuple[int, int, int, int]:
    """The window of a batch's tiles (tile coordinates) that holds every tile's core."""
    return (
        min(t.cy0 - t.y0 for t in tiles),
        max(t.cy1 - t.y0 for t in tiles),
        min(t.cx0 - t.x0 for t in tiles),
        max(t.cx1 - t.x0 for t in tiles),
    )


def _keep_size(plan: TilePlan, batch: int) -> tuple[int, int]:
    """One window size for every batch of the plan: the largest batch's cores (see :func:`_keep`)."""
    wins = [_union(plan.tiles[i : i + batch]) for i in range(0, len(plan.tiles), batch)]
    return max(w[1] - w[0] for w in wins), max(w[3] - w[2] for w in wins)


def _keep(tiles, tile_shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The window of a batch's tiles to compute: it holds every tile's core, grown to ``size`` inside the tile.

    All batches asking for windows of one size means every forward of a run has the same tensor
    shapes: the allocator reuses the same buffers (on the starter at 1408 px, a heap of 512 MB
    instead of 749 MB with three window shapes) and each kernel is set up once.
    """
    y0, y1, x0, x1 = _union(tiles)

    def grow(a: int, b: int, want: int, n: int) -> tuple[int, int]:
        a = min(max(0, a - (want - (b - a)) // 2), max(0, n - want))
        return a, min(n, a + want)

    (y0, y1), (x0, x1) = grow(y0, y1, size[0], tile_shape[0]), grow(x0, x1, size[1], tile_shape[1])
    return y0, y1, x0, x1


class _Writer:
    """Writes finished batches into ``out`` in the order they were put, inline or on its own thread.

    Threaded (``impc-tile-writer``), :meth:`put` only queues (at most ``depth`` batches wait, so
    memory stays bounded and the model is slowed only if writing is the slower side); an error in
    the thread is raised by the next :meth:`put` or by :meth:`close`. After each batch, when every
    tile before the first unwritten one is written, ``on_rows(rows)`` is called with the first
    row that is not final yet (tiles are in raster order, so that is the next tile's ``cy0``).
    Rows below ``floor`` were made final by an earlier plan and are not written again.
    """

    def __init__(self, out, plan: TilePlan, on_rows, floor: int, *, threaded: bool, depth: int = 3) -> None:
        self.out, self.plan, self.on_rows, self.floor = out, plan, on_rows, floor
        self.written = 0  # tiles written, in plan order
        self.error: BaseException | None = None
        self.thread = None
        if threaded:
            self.q: queue.Queue = queue.Queue(maxsize=depth)
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._loop, daemon=True, name="impc-tile-writer")
            self.thread.start()

    def put(self, entry) -> None:
        if self.thread is None:
            self._write(entry)
            return
        if not put_unless(self.q, entry, lambda: self.error is not None):
            raise self.error

    def close(self) -> None:
        """Write everything queued; raise the thread's error if it had one."""
        if self.thread is not None:
            self.put(None)
            self.thread.join()
            self.thread = None
            if self.error is not None:
                raise self.error

    def abort(self) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join(timeout=10)
            self.thread = None

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    entry = self.q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if entry is None:
                    return
                self._write(entry)
        except BaseException as exc:  # handed to the feeding thread
            self.error = exc

    def _write(self, entry) -> None:
        tiles, keep, y8, ev = entry
        if ev is not None:
            ev.synchronize()
        arr = y8.numpy()
        ky, kx = (0, 0) if keep is None else (keep[0], keep[2])  # the outputs start at the window's corner
        out, floor = self.out, self.floor
        for k, t in enumerate(tiles):
            cy0 = max(t.cy0, floor)
            if cy0 < t.cy1:
                oy, ox = cy0 - t.y0 - ky, t.cx0 - t.x0 - kx
                out[:, cy0 : t.cy1, t.cx0 : t.cx1] = arr[k, :, oy : oy + t.cy1 - cy0, ox : ox + t.cx1 - t.cx0]
        self.written += len(tiles)
        if self.on_rows is not None:
            tiles_all = self.plan.tiles
            rows = tiles_all[self.written].cy0 if self.written < len(tiles_all) else self.plan.shape[0]
            self.on_rows(max(rows, self.floor))
