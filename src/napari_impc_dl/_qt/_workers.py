"""Run a core call in a napari ``thread_worker`` with a progress bar and a cancel token.

Core functions take ``progress(done, total, stage)`` and ``cancel`` (a
:class:`~napari_impc_dl.errors.CancelToken`). :class:`Job` runs one in a napari generator worker:
each progress call becomes a ``yielded`` signal (queued to the GUI thread by Qt), which moves a
bar in napari's activity dock; the bar's own Cancel button and :meth:`Job.cancel` both set the
token, and the core stops at its next tile or block. The worker never touches the viewer: its
return value reaches ``on_done`` in the GUI thread, which makes the layers.

Errors: :class:`~napari_impc_dl.errors.InputError` becomes a napari error notification (its
message says what to do), :class:`~napari_impc_dl.errors.Cancelled` an info notification; anything
else is a bug and is re-raised in the GUI thread (napari shows it with its traceback).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from napari.utils.progress import cancelable_progress

from ..errors import CancelToken, Cancelled, InputError
from . import avoid_llvm_clash

log = logging.getLogger(__name__)

#: every job that has started and not yet finished (tests wait on these; widgets cancel them on close)
RUNNING: set[Job] = set()


class JobProgress(cancelable_progress):
    """A bar in napari's activity dock whose Cancel button cancels the job's token."""

    def __init__(self, token: CancelToken, desc: str) -> None:
        self._token = token
        self._title = desc
        super().__init__(total=0, desc=desc)

    def cancel(self) -> None:
        super().cancel()
        self._token.cancel()

    def show(self, done: int, total: int, stage: str) -> None:
        """Move the bar (GUI thread only). ``total`` 0 shows a busy bar."""
        desc = f"{self._title}: {stage}" if stage else self._title
        if desc != self.desc:
            self.set_description(desc)
        if total != self.total:
            self.total = total
        if done != self.n:
            self.n = done
            self.events.value(value=done)


def show_progress(bar, done: int, total: int, stage: str, counts: bool = True) -> None:
    """Move a widget's own ``QProgressBar`` (GUI thread): ``total`` 0 is a busy bar; ``counts`` shows ``done/total``."""
    bar.setRange(0, max(total, 0))
    bar.setValue(min(done, total) if total else 0)
    bar.setFormat(f"{stage} %v/%m" if total and counts else stage)


class Job:
    """One call ``fn(progress, cancel)`` in a worker thread.

    ``on_done(value)`` gets its return value, ``on_failed(exc)`` (optional) any exception before
    it is reported, ``on_discard(value)`` a value that arrived after a cancel (to free it), and
    ``on_progress(done, total, stage)`` mirrors the bar (e.g. in the widget), and ``on_finished()``
    runs last in every case. All callbacks run in the GUI thread.
    """

    def __init__(
        self,
        fn: Callable[[Callable[[int, int, str], None], CancelToken], Any],
        *,
        desc: str,
        on_done: Callable[[Any], None],
        on_failed: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        on_discard: Callable[[Any], None] | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
        quiet_cancel: bool = False,
        owner=None,
    ) -> None:
        self.token = CancelToken()
        self._owner = owner
        self.desc = desc
        self._on_done, self._on_failed, self._on_finished, self._on_discard = on_done, on_failed, on_finished, on_discard
        self._quiet_cancel = quiet_cancel
        self._on_progress = on_progress
        self.pbar: JobProgress | None = None
        self.finished = False
        holder: dict[str, Any] = {}

        def emit(done: int, total: int, stage: str) -> None:  # worker thread: Qt queues the signal to the GUI
            worker = holder["worker"]
            if worker.abort_requested:  # napari asked the worker to quit (e.g. closing the window): stop the core too
                self.token.cancel()
            worker.yielded.emit((int(done), int(total), str(stage)))

        def run():
            return fn(emit, self.token)
            yield  # noqa: unreachable - makes this a generator, so napari shows a GeneratorWorker's progress

        run.__name__ = run.__qualname__ = desc  # what napari's task status shows
        self.worker = create_worker(run, _start_thread=False, _ignore_errors=True)
        holder["worker"] = self.worker
        self.worker.yielded.connect(self._progress)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finish)

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def start(self) -> Job:
        avoid_llvm_clash()  # before the worker may import torch (see napari_impc_dl._qt)
        self.pbar = JobProgress(self.token, self.desc)
        RUNNING.add(self)
        if self._owner is not None:  # the widget closes: stop the work (its results would have nowhere to go)
            self._owner.destroyed.connect(lambda *_: self.token.cancel())
        self.worker.start()
        return self

    def cancel(self) -> None:
        self.token.cancel()

    # ------------------------------------------------------------------ GUI thread

    def _owner_gone(self) -> bool:
        """The widget that started the job was closed and deleted: its callbacks must not run."""
        if self._owner is None:
            return False
        try:
            self._owner.objectName()
        except RuntimeError:  # wrapped C/C++ object has been deleted
            return True
        return False

    def _progress(self, value) -> None:
        if self.finished or self._owner_gone():
            return
        if self.pbar is not None:
            self.pbar.show(*value)
        if self._on_progress is not None:
            self._on_progress(*value)

    def _returned(self, value) -> None:
        if self._owner_gone():
            if self._on_discard is not None:
                self._on_discard(value)
            return
        if self.token.cancelled:  # finished anyway, but the user asked to cancel: drop the result
            if self._on_discard is not None:
                self._on_discard(value)
            self._errored(Cancelled("cancelled by the user"))
            return
        self._on_done(value)

    def _errored(self, exc: BaseException) -> None:
        if self._owner_gone():
            if not isinstance(exc, (Cancelled, InputError)):
                raise exc
            return
        if self._on_failed is not None:
            self._on_failed(exc)
        if isinstance(exc, Cancelled):
            if not self._quiet_cancel:
                show_info(f"{self.desc}: cancelled")
        elif isinstance(exc, InputError):
            show_error(f"{self.desc}: {exc}")
        elif isinstance(exc, MemoryError):
            show_error(f"{self.desc}: out of memory. Use a smaller tile or batch size (Advanced), or close other programs")
        else:
            raise exc

    def _finish(self) -> None:
        self.finished = True
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        RUNNING.discard(self)
        if self._on_finished is not None and not self._owner_gone():
            self._on_finished()
