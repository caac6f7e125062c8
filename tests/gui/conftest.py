"""GUI test fixtures: a fixture that fails a test leaving a worker thread behind, and small helpers.

Run under a display: ``bash scripts/test.sh tests/gui`` (installs Xvfb and the GL libraries, runs pytest under xvfb-run).
"""

from __future__ import annotations

import threading
import traceback
from weakref import WeakKeyDictionary

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

# torch and segmentation-models-pytorch are imported here, before any OpenGL context exists: torch imports
# triton lazily, and triton crashes a process that has already loaded Mesa's LLVM (see
# napari_impc_dl._qt.avoid_llvm_clash, which protects real napari sessions the other way round).
import segmentation_models_pytorch  # noqa: E402,F401  # pyflakes: ignore
import torch  # noqa: E402,F401


def _calling_place() -> str:
    frames = [f for f in traceback.extract_stack()[:-2] if "site-packages" not in f.filename]
    return "".join(traceback.format_list(frames[-3:]))


@pytest.fixture(autouse=True)
def _no_dangling_workers(monkeypatch, qtbot):
    """Fail a test that leaves a Qt worker (QThreadPool runnable, QThread) or one of our Python threads running.

    Like napari's ``_dangling_qthreads`` / ``_dangling_qthread_pool`` fixtures: every start is recorded;
    at the end each must have finished. Leftovers are cancelled and waited for, so later tests stay clean.
    """
    from qtpy.QtCore import QThread, QThreadPool

    from napari_impc_dl._qt import _workers

    pools: WeakKeyDictionary = WeakKeyDictionary()
    qthreads: WeakKeyDictionary = WeakKeyDictionary()
    pool_start, thread_start = QThreadPool.start, QThread.start

    def record_pool(self, runnable, priority=0):
        pools.setdefault(self, []).append(_calling_place())
        pool_start(self, runnable, priority)

    def record_thread(self, *args):
        qthreads[self] = _calling_place()
        thread_start(self, *args)

    monkeypatch.setattr(QThreadPool, "start", record_pool)
    monkeypatch.setattr(QThread, "start", record_thread)
    before = {t.ident for t in threading.enumerate()}
    yield
    problems = []
    if _workers.RUNNING:
        problems += [f"job still running at the end of the test: {job.desc}" for job in _workers.RUNNING]
        for job in list(_workers.RUNNING):
            job.cancel()
        qtbot.waitUntil(lambda: not _workers.RUNNING, timeout=30_000)
    for pool, places in pools.items():
        if not pool.waitForDone(5000):
            problems.append("QThreadPool still busy; started at:\n" + "\n".join(places))
    for thread, place in qthreads.items():
        try:
            if thread.isRunning() and not thread.wait(2000):
                problems.append("QThread still running; started at:\n" + place)
        except RuntimeError:  # C++ object already deleted: it is not running
            pass
    ours = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("impc-") and t.is_alive()]
    if ours:
        problems.append(f"threads left running: {ours}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def wait_idle(qtbot):
    """``wait_idle(widget, timeout_s)``: wait until a widget's job (run, relabel, export) has finished."""

    def wait(widget, timeout_s: float = 120):
        qtbot.waitUntil(lambda: not widget.running, timeout=int(timeout_s * 1000))

    return wait
