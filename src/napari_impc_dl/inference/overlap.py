"""Postprocess a plane while the model is still computing it: the GPU never waits for the CPU.

On a GPU the forward of a 16k² plane takes seconds and its postprocessing (seeds, flood, labels,
measurements) as long or longer on the CPU. Run one after the other, the GPU idles through the
postprocessing; here they run together:

* the engine writes tiles in raster order and says, through ``on_rows(r)``, that rows ``0:r`` of
  the probabilities are final (:func:`~napari_impc_dl.inference.engine.predict_plane`);
* :class:`RowGate` stands for the probabilities in
  :func:`~napari_impc_dl.inference.instances.labels_from_probabilities`: reading a block's window
  waits until the engine has passed the window's last row, so the block sees exactly the values
  a sequential run would see, and the labels are the same;
* the postprocessing runs on a thread of its own, with its usual worker threads; an error on
  either side stops the other (the engine checks the postprocessing's error with the user's
  cancel flag; the gate releases waiting readers with the engine's error).

Not possible when the postprocessing needs the whole plane first: estimating the object
diameter from all of it (models without a distance head, when no diameter is given).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import Cancelled, CancelToken


def overlapped(config, model, params) -> bool:
    """Whether a plane's postprocessing may overlap its inference: ``config.overlap``, by default on a GPU,
    and only when the postprocessing needs nothing of the whole plane up front."""
    from .seeds import needs_diameter

    want = config.overlap if config.overlap is not None else model.device.type != "cpu"
    if not want or params is None:
        return False
    if needs_diameter(params.method) and (params.diameter is None or (params.method == "distance-transform" and params.core_threshold is None)):
        return False  # the diameter (or core level) is estimated from the whole plane first
    return True


class RowGate:
    """A read-only view of ``arr`` ``(K, H, W)`` whose reads wait until the rows they need are final.

    ``ready(r)`` (from the engine's writer) says rows ``0:r`` are final; ``fail(exc)`` releases every
    waiting and later reader with ``exc``.
    """

    def __init__(self, arr) -> None:
        self.arr = arr
        self.shape, self.dtype = tuple(arr.shape), arr.dtype
        self._rows = 0
        self._error: BaseException | None = None
        self._cv = threading.Condition()
        self.waited_s = 0.0
        """Time readers spent waiting for rows (summed over threads)."""

    def ready(self, rows: int) -> None:
        with self._cv:
            if rows > self._rows:
                self._rows = rows
                self._cv.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cv:
            self._error = exc
            self._cv.notify_all()

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        ys = key[1] if len(key) > 1 else slice(None)
        need = self.shape[1] if ys.stop is None else min(self.shape[1], ys.stop if ys.stop >= 0 else self.shape[1] + ys.stop)
        t0 = time.perf_counter()
        with self._cv:
            while self._rows < need and self._error is None:
                self._cv.wait(timeout=0.5)
            if self._rows < need:
                raise Cancelled("inference stopped before these rows were computed") from self._error
            self.waited_s += time.perf_counter() - t0
        return self.arr[key]


class _Both:
    """The cancel flag the engine checks: the user's, and whether the postprocessing failed."""

    def __init__(self, user: CancelToken | None) -> None:
        self.user, self.error = user, None

    def raise_if_cancelled(self) -> None:
        if self.user is not None:
            self.user.raise_if_cancelled()
        if self.error is not None:
            raise self.error


@dataclass
class Overlapped:
    inference: Any
    """What the inference returned (the engine's stats)."""
    postprocessing: Any
    """What the postprocessing returned."""
    tail_s: float
    """Postprocessing time after the inference ended: the part inference did not hide."""


def infer_while_postprocessing(
    infer: Callable[[Callable[[int], None], Any], Any],
    postprocess: Callable[[RowGate], Any],
    probs,
    cancel: CancelToken | None = None,
) -> Overlapped:
    """Run ``infer(on_rows, cancel)`` on this thread and ``postprocess(gate)`` beside it on another.

    ``infer`` writes ``probs`` and calls ``on_rows(r)`` as rows become final; ``postprocess`` reads
    them through the :class:`RowGate`. Returns both results once both are done; the first error of
    either is raised (the other side is stopped, and its thread joined, first).
    """
    gate = RowGate(probs)
    both = _Both(cancel)
    box: dict = {}

    def work() -> None:
        try:
            box["result"] = postprocess(gate)
        except BaseException as exc:  # noqa: BLE001 - handed to the inference thread
            box["error"] = exc
            both.error = exc

    thread = threading.Thread(target=work, daemon=True, name="impc-postprocess")
    thread.start()
    try:
        stats = infer(gate.ready, both)
    except BaseException as exc:
        gate.fail(exc)
        thread.join()
        first = box.get("error")
        if first is not None and first is not exc and not isinstance(first, Cancelled):
            raise first from exc  # the postprocessing failed first: its error is the one to show
        raise
    gate.ready(gate.shape[1])  # every row is final now (also rows a re-plan kept)
    t_end = time.perf_counter()
    thread.join()
    if "error" in box:
        raise box["error"]
    return Overlapped(stats, box["result"], time.perf_counter() - t_end)
