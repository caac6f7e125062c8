"""Batches of prepared inputs through a model: the engine's device / AMP / OOM back-off machinery for
inputs that are not tiles of a plane (classifier crops and images).

    run_batches(model, produce, ...)  produce() yields (keys, (B, C, S, S) float32 numpy); returns [(keys, outputs)]

On a GPU (CUDA, MPS) a producer thread makes the next batches (reading, cropping, normalising)
while the device computes the current one. On the CPU the batches are made in the calling thread
between forwards: the forward already uses every core, and a producer thread beside it only
contends for them (classifying the 28,554 objects of the 4096 x 4096 benchmark image took 85 s
with a producer thread, against 53 s for the bare forward and about 8 s to make the crops). On CUDA the batch is pinned and copied asynchronously under bf16/fp16 autocast in
``channels_last``, and results are copied back without a sync per batch (a batch is collected only
after the next one was queued). Out of GPU memory: the batch is halved, then the CPU takes over
with a warning, as in :func:`~napari_impc_dl.inference.engine.predict_plane`.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from contextlib import nullcontext
from typing import Callable, Iterable

import numpy as np

from ..errors import CancelToken
from .allocator import reuse_large_buffers
from .engine import _autocast, _is_oom, put_unless


class Prefetch(threading.Thread):
    """Runs ``items`` (an iterable, e.g. a generator of batches) on a thread, ``depth`` items ahead.

    Each item goes through ``convert`` on the thread (numpy -> torch, pinning). The consumer reads
    ``q``: items, then ``None`` at the end, or the exception the iterable raised. ``nice`` lowers
    the thread's priority (Linux) so it takes what the compute threads leave. :meth:`close` stops
    and joins it. Used by classification (``run_batches`` on a GPU) and by the training loop.
    """

    def __init__(self, items: Iterable, convert: Callable, *, depth: int = 3, name: str = "impc-batch-producer", nice: int | None = None):
        super().__init__(daemon=True, name=name)
        self.items, self.convert, self.nice = items, convert, nice
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def run(self) -> None:
        if self.nice is not None:
            _lower_priority(self.nice)
        try:
            for item in self.items:
                if self.stop.is_set():
                    return
                self._put(self.convert(item))
            self._put(None)
        except BaseException as exc:  # hand it to the consumer
            self._put(exc)

    def _put(self, item) -> None:
        put_unless(self.q, item, self.stop.is_set)

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=10)


def _lower_priority(nice: int) -> None:
    """Make the calling thread yield the CPU to the compute threads (Linux: threads have their own nice value)."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not allowed: the default priority is fine
        pass


def _as_tensor(pin: bool):
    def convert(item):
        import torch

        keys, arr = item
        x = torch.from_numpy(np.ascontiguousarray(arr, np.float32))
        return keys, (x.pin_memory() if pin else x)

    return convert


class _Inline:
    """The producer's interface, in the calling thread (CPU: nothing to overlap with)."""

    def __init__(self, produce: Callable[[], Iterable]):
        self._it = iter(produce())
        self._convert = _as_tensor(pin=False)
        self.q = self

    def get(self):
        try:
            return self._convert(next(self._it))
        except StopIteration:
            return None

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class BatchStats:
    """What a run did: batches, items, seconds, seconds the model waited for the producer (on the CPU: the
    time spent making batches), fallbacks."""

    def __init__(self) -> None:
        self.batches = self.items = 0
        self.seconds = self.wait_s = 0.0
        self.fallbacks: list[str] = []


@reuse_large_buffers()  # a forward's big buffers stay in the heap between batches (no page faults per batch)
def run_batches(
    model,
    produce: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    *,
    total: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    stats: BatchStats | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run ``model.forward`` over every batch ``produce()`` yields; return ``[(keys, float32 outputs)]`` in order."""
    import torch

    stats = stats if stats is not None else BatchStats()
    t0 = time.perf_counter()
    device = model.device
    cuda = device.type == "cuda"
    prod = Prefetch(produce(), _as_tensor(pin=cuda)) if device.type != "cpu" else _Inline(produce)
    prod.start()
    results: list = []
    pending: list = []  # (keys, host tensor, event)
    done = 0
    sub = None
    try:
        # events and pinned copies on the model's own CUDA device (cuda:N), not the current one
        with torch.inference_mode(), _autocast(device), (torch.cuda.device(device) if cuda else nullcontext()):
            while True:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                tw = time.perf_counter()
                item = prod.q.get()
                stats.wait_s += time.perf_counter() - tw
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                keys, x = item
                sub = sub or len(keys)
                i = 0
                while i < len(keys):
                    xs = x[i : i + sub]
                    try:
                        xd = xs.to(model.device, non_blocking=cuda).contiguous(memory_format=torch.channels_last)
                        y = model.forward(xd).float()
                    except (RuntimeError, MemoryError) as exc:
                        if not (model.device.type == "cuda" and _is_oom(exc)):
                            raise
                        torch.cuda.empty_cache()
                        if sub > 1:
                            sub //= 2
                            stats.fallbacks.append(f"batch->{sub}")
                            continue
                        warnings.warn("GPU out of memory with a batch of one: continuing on the CPU (slower)", RuntimeWarning, stacklevel=2)
                        stats.fallbacks.append("cpu")
                        model.to("cpu")
                        cuda = False
                        continue
                    part = keys[i : i + len(xs)]
                    if cuda:
                        host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
                        host.copy_(y, non_blocking=True)
                        ev = torch.cuda.Event()
                        ev.record()
                        pending.append((part, host, ev))
                        while len(pending) > 2:
                            results.append(_collect(pending.pop(0)))
                    else:  # CPU, or MPS (whose tensors must come to the host first)
                        results.append((part, y.cpu().numpy()))
                    i += len(xs)
                    done += len(xs)
                    stats.batches += 1
                if progress is not None:
                    progress(done, total if total is not None else done)
            while pending:
                results.append(_collect(pending.pop(0)))
    finally:
        prod.close()
    stats.items = done
    stats.seconds += time.perf_counter() - t0
    return results


def _collect(entry):
    keys, host, ev = entry
    ev.synchronize()
    return keys, host.numpy()
