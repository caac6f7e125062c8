"""Measure the objects of each finished postprocessing block on worker threads.

:func:`~napari_impc_dl.inference.instances.labels_from_probabilities` hands every block's owned
objects to an ``on_block`` callback. :class:`BlockTables` is that callback: it queues the block
for measurement (shape columns and the intensity of the block's image window) on worker
threads, so measuring block *i* runs beside the postprocessing of the next blocks (both are numpy
work that mostly releases the GIL), and :meth:`BlockTables.collect` returns the tables in block
order. The last blocks' measurements are the only ones nothing overlaps, so they are made short:
each block is measured in ``parts`` ranges of its ids (one per worker), on all workers at once,
and, given as ``on_start`` too (:meth:`BlockTables.start`), it reads each block's image window
while the block's labels are still being computed. At most ``depth`` blocks wait, so memory
stays bounded on images of any size.

(Formatting the tables as CSV text on the worker too was tried and dropped: pandas holds the GIL
while it formats, which slowed the postprocessing thread by as much as it saved.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..config import worker_threads
from .regions import measure_objects


class BlockTables:
    """``on_block`` callback that measures blocks in the background; use as a context manager.

    ``source`` is an :class:`~napari_impc_dl.io.image.ImageSource`; ``plane`` the stack index;
    ``channels`` the channel indices the model used (None: all), named ``names`` in the columns;
    ``stack_axes`` the letters (``"TZ"``) whose indices lead each row.
    """

    def __init__(self, source, plane: tuple[int, ...], channels: list[int] | None, names: list[str], stack_axes: str, *, depth: int = 2, workers: int | None = None) -> None:
        self.source, self.plane, self.channels, self.names = source, plane, channels, names
        self.stack_axes = stack_axes
        self.parts = workers or worker_threads()
        self.depth = depth * self.parts
        self.seconds = 0.0
        """Worker time spent reading intensities and measuring."""
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.parts, thread_name_prefix="impc-measure")
        self._pending: deque[Future] = deque()
        self._done: list = []
        self._reads: dict = {}  # Window -> Future of its image window

    def __enter__(self) -> BlockTables:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)  # no thread outlives the run, also on error/cancel

    def start(self, w) -> None:
        """``on_start`` callback: read block ``w``'s image window while its labels are being computed."""
        self._reads[w] = self._pool.submit(self._read, w)

    def __call__(self, w, glob: np.ndarray, first: int, last: int) -> None:
        while len(self._pending) >= self.depth:
            self._done.append(self._pending.popleft().result())
        n = last - first + 1
        cuts = [first + (n * k) // self.parts for k in range(self.parts + 1)] if n > 0 else [first, first]
        ranges = [(a, b - 1) for a, b in zip(cuts, cuts[1:]) if b > a] or [(first, first - 1)]  # an empty block still gives its (typed, empty) table
        image = self._reads.pop(w, None)  # read ahead by start()
        if image is None and len(ranges) > 1:
            image = self._pool.submit(self._read, w)  # read once, before (FIFO) the parts that share it
        for a, b in ranges:
            self._pending.append(self._pool.submit(self._measure, w, glob, a, b, image))

    def _read(self, w, timed: bool = True) -> np.ndarray:
        t0 = time.perf_counter()
        inten = self.source.read(self.plane, slice(w.y0, w.y1), slice(w.x0, w.x1))
        if timed:
            with self._lock:
                self.seconds += time.perf_counter() - t0
        return inten[self.channels] if self.channels is not None else inten  # the columns are named after these

    def _measure(self, w, glob: np.ndarray, first: int, last: int, image: Future | None):
        import pandas as pd

        t0 = time.perf_counter()
        inten = self._read(w, timed=False) if image is None else image.result()
        frame = pd.DataFrame(measure_objects(glob, first, last, inten, self.names, offset=(w.y0, w.x0)))
        for ax, idx in zip(self.stack_axes, self.plane):
            frame.insert(0, ax.lower(), idx)
        with self._lock:
            self.seconds += time.perf_counter() - t0
        return frame

    def collect(self) -> list:
        """Every block's table (pandas DataFrame), in block order; re-raises a worker's error."""
        while self._pending:
            self._done.append(self._pending.popleft().result())
        return self._done
