"""Batches of prepared inputs through a model: the engine's device / AMP / OOM back-off machinery for
inputs that are not tiles of a plane (classifier crops and images).

    run_batches(model, produce, ...)  produce() yields (keys, (B, C, S, S) float32 numpy); returns [(keys, outputs)]

A producer thread makes the next batches (reading, cropping, normalising) while the model computes
the current one. On CUDA the batch is pinned and copied asynchronously under bf16/fp16 autocast in
``channels_last``, and results are copied back without a sync per batch (a batch is collected only
after the next one was queued). Out of GPU memory: the batch is halved, then the CPU takes over
with a warning, as in :func:`~napari_impc_dl.inference.engine.predict_plane`.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from typing import Callable, Iterable

import numpy as np

from ..errors import CancelToken
from .engine import _autocast, _is_oom


class _Producer(threading.Thread):
    def __init__(self, produce: Callable[[], Iterable], pin: bool, depth: int = 3):
        super().__init__(daemon=True, name="impc-batch-producer")
        self.produce, self.pin = produce, pin
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def run(self) -> None:
        import torch

        try:
            for keys, arr in self.produce():
                if self.stop.is_set():
                    return
                x = torch.from_numpy(np.ascontiguousarray(arr, np.float32))
                self._put((keys, x.pin_memory() if self.pin else x))
            self._put(None)
        except BaseException as exc:  # hand it to the consumer
            self._put(exc)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class BatchStats:
    """What a run did: batches, items, seconds, seconds the model waited for the producer, fallbacks."""

    def __init__(self) -> None:
        self.batches = self.items = 0
        self.seconds = self.wait_s = 0.0
        self.fallbacks: list[str] = []


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
    prod = _Producer(produce, pin=cuda)
    prod.start()
    results: list = []
    pending: list = []  # (keys, host tensor, event)
    done = 0
    sub = None
    try:
        with torch.inference_mode(), _autocast(device):
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
                    else:
                        results.append((part, y.numpy()))
                    i += len(xs)
                    done += len(xs)
                    stats.batches += 1
                if progress is not None:
                    progress(done, total if total is not None else done)
            while pending:
                results.append(_collect(pending.pop(0)))
    finally:
        prod.stop.set()
        prod.join(timeout=10)
    stats.items = done
    stats.seconds += time.perf_counter() - t0
    return results


def _collect(entry):
    keys, host, ev = entry
    ev.synchronize()
    return keys, host.numpy()
