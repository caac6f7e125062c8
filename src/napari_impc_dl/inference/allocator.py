"""Keep big freed buffers for reuse during a run (glibc), instead of paying page faults for each.

A U-Net forward on a 1024 x 1024 tile allocates and frees tens of buffers of 10-70 MB. glibc
serves allocations above ``M_MMAP_THRESHOLD`` (at most 32 MB, adaptively) with fresh ``mmap``
pages and unmaps them on free, and trims the heap top above ``M_TRIM_THRESHOLD``; so every
forward touches fresh pages that the kernel must fault in and zero. Measured on a 2-core CPU with
the starter model (``python benchmarks/bench_allocator.py``): 1.4-1.5 MP/s at 1024 x 1024 tiles with
about 180k page faults per forward; 2.5-2.6 MP/s and none with the thresholds raised. numpy
postprocessing on 2048-pixel blocks gains too.

:func:`reuse_large_buffers` raises both thresholds while a run lasts, then restores glibc's
defaults and gives the freed memory back to the system (``malloc_trim``), so a long napari
session does not keep the run's peak; :func:`release_free_memory` does the same between phases.
Nested and concurrent uses are counted; only the outermost exit restores. On other C libraries
(macOS, Windows, musl) both do nothing.

It also caps glibc's number of malloc arenas at one per core (glibc allows eight per core). With
the thresholds raised, every thread that allocates big buffers (tile reader, zarr's codec
threads, postprocessing and measuring workers) keeps its own arena's peak for the whole run: on
an 8192 x 8192 image that was about 150 MB of the run's peak. The cap only takes effect while
the process has not yet sized its arena list (a fresh CLI or script process does not have, a
napari session usually has), and cannot be undone; threads then share arenas, which costs
nothing measurable for this workload of few, large allocations.

A process that starts with this package (the command line, the benchmark, a script that calls
:func:`share_one_arena` first) goes further: every thread allocates from glibc's main arena. Then
postprocessing reuses the very pages the forward freed, so nothing needs to be given back between
the phases, and the heap is kept from one image (or run) to the next: no image's first tile
faults in its ~340 MB of working memory again. Measured with the benchmark's child process
(``benchmarks/bench_inference.py``, same hour): peak 1479 MB instead of 1606 MB on the 4k image
(1 + 5 runs) and 1383 MB instead of 1571 MB on 16k. The memory is given back when the process
ends (or by ``release_free_memory(force=True)``). napari sessions keep the per-run behaviour: their
threads have arenas of their own long before a run starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading
from contextlib import contextmanager
from functools import lru_cache

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_RUN_MMAP_THRESHOLD = 1 << 30  # 1 GiB: any tensor of a tile forward stays in the heap
_RUN_TRIM_THRESHOLD = (1 << 31) - 1  # never trim the heap top during the run
_DEFAULT_MMAP_THRESHOLD = 128 * 1024  # glibc's defaults
_DEFAULT_TRIM_THRESHOLD = 128 * 1024

_lock = threading.Lock()
_depth = 0
_one_arena = False


@lru_cache(maxsize=1)
def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # pragma: no cover - unusual libc
        return None


def release_free_memory(force: bool = False) -> None:
    """Give the heap's free memory back to the OS now (between phases of a run: the forward's buffers
    are not needed by postprocessing, and holding them would add to the run's peak).

    With one shared arena (:func:`share_one_arena`) the next phase reuses those pages instead, so
    this does nothing unless ``force``.
    """
    libc = _libc()
    if libc is not None and (force or not _one_arena):
        libc.malloc_trim(0)


def _arena_count(libc) -> int:
    """How many malloc arenas the process has (glibc's ``malloc_info`` report)."""
    import tempfile

    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    fd, path = tempfile.mkstemp(prefix="malloc-info-")
    try:
        f = libc.fdopen(fd, b"w")
        libc.malloc_info(0, f)
        libc.fclose(f)
        with open(path) as text:
            return text.read().count("<heap nr=")
    finally:
        os.unlink(path)


def share_one_arena() -> bool:
    """Make every thread of this process allocate from glibc's main arena (see the module docstring).

    Takes effect only while no thread has yet been given an arena of its own, so call it first
    thing in a process, before torch, zarr or any thread pool starts; returns whether it did. Large
    buffers are then kept for reuse for the rest of the process (``reuse_large_buffers`` no longer
    gives memory back on exit). Does nothing (False) on other C libraries.
    """
    global _one_arena
    libc = _libc()
    if libc is None:
        return False
    with _lock:
        if not _one_arena:
            try:
                alone = _arena_count(libc) == 1
            except (OSError, AttributeError):  # pragma: no cover - unusual libc
                return False
            if not alone:
                return False
            libc.mallopt(_M_ARENA_MAX, 1)
            _one_arena = True
    return True


@contextmanager
def reuse_large_buffers():
    """Inside: freed large buffers are reused, not returned to the OS. On exit: memory is given back
    (kept, with :func:`share_one_arena`, for the process's next run).

    Also usable as a decorator: ``@reuse_large_buffers()``.
    """
    global _depth
    libc = _libc()
    with _lock:
        _depth += 1
        if _depth == 1 and libc is not None:
            if not _one_arena:
                libc.mallopt(_M_ARENA_MAX, max(2, os.cpu_count() or 1))
            libc.mallopt(_M_MMAP_THRESHOLD, _RUN_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _RUN_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and libc is not None and not _one_arena:
                libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
