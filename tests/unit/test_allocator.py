"""Large buffers come from the reusable heap inside ``reuse_large_buffers``, and are given back after."""

import ctypes
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_impc_dl.inference import allocator
from napari_impc_dl.inference.allocator import reuse_large_buffers

glibc = pytest.mark.skipif(allocator._libc() is None, reason="glibc-only tuning")
MB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mapped_bytes() -> int:
    """Bytes glibc currently serves with their own mmap (returned to the OS on free, re-faulted on reuse)."""
    libc = allocator._libc()
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _big_buffer_is_mmapped(mb: int = 48) -> bool:
    before = _mapped_bytes()
    a = np.ones(mb * MB // 8)
    mapped = _mapped_bytes() - before >= mb * MB
    del a
    return mapped


def _in_fresh_process(body: str) -> None:
    """Run ``body`` (with this module's helpers) in a new interpreter: glibc's choice between heap and
    mmap depends on what the heap already holds, so the checks need a heap that nothing has used."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom test_allocator import MB, _big_buffer_is_mmapped, _rss, allocator, np, reuse_large_buffers\n{textwrap.dedent(body)}"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


@glibc
def test_big_buffers_come_from_the_heap_inside_and_are_given_back_after():
    _in_fresh_process("""
        assert _big_buffer_is_mmapped()  # glibc's default: fresh pages, faulted in on every use
        with reuse_large_buffers():
            assert not _big_buffer_is_mmapped()
            a = np.ones(96 * MB // 8)
            del a
            held = _rss()
        assert _rss() < held - 64 * MB  # malloc_trim returned the freed heap to the OS
    """)


@glibc
def test_nested_uses_restore_only_at_the_outermost_exit():
    _in_fresh_process("""
        with reuse_large_buffers():
            with reuse_large_buffers():
                pass
            assert allocator._depth == 1
            assert not _big_buffer_is_mmapped()
        assert allocator._depth == 0
    """)


def test_is_a_harmless_no_op_elsewhere(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    with reuse_large_buffers():
        assert allocator._depth == 1
    assert allocator._depth == 0


@reuse_large_buffers()
def _decorated():
    return allocator._depth


def test_works_as_a_decorator():
    assert _decorated() == 1 and allocator._depth == 0


@glibc
def test_release_free_memory_returns_the_heap_between_phases():
    _in_fresh_process("""
        with reuse_large_buffers():
            a = np.ones(96 * MB // 8)
            del a
            held = _rss()
            allocator.release_free_memory()
            assert _rss() < held - 64 * MB
            assert not _big_buffer_is_mmapped()  # still tuned for the next phase
    """)


_COUNT_ARENAS = """
    import ctypes, os, tempfile, threading
    def arenas():
        libc = allocator._libc()
        libc.fdopen.restype = ctypes.c_void_p
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        fd, path = tempfile.mkstemp()
        f = libc.fdopen(fd, b"w")
        libc.malloc_info(0, f)
        libc.fclose(f)
        text = open(path).read()
        os.unlink(path)
        return text.count("<heap nr=")
    def crowd(n=2 * (os.cpu_count() or 1) + 4):  # threads allocating big buffers at the same time (tile reader, zarr codecs, workers)
        go = threading.Barrier(n)
        def work():
            go.wait()
            for _ in range(20):
                a = np.ones(2 * MB // 8)
                del a
        ts = [threading.Thread(target=work) for _ in range(n)]
        for t in ts: t.start()
        for t in ts: t.join()
"""


@glibc
def test_threads_share_a_few_arenas_during_a_run():
    """Inside a run, glibc makes at most one arena per core (at least 2), so worker threads cannot each keep a heap's peak."""
    _in_fresh_process(_COUNT_ARENAS + """
        with reuse_large_buffers():
            crowd()
        assert arenas() <= max(2, os.cpu_count()), arenas()
    """)
    _in_fresh_process(_COUNT_ARENAS + """
        crowd()  # glibc's default, for comparison: the same threads make more arenas
        assert arenas() > max(2, os.cpu_count()), arenas()
    """)


@glibc
def test_one_shared_arena_keeps_the_heap_for_the_next_phase_and_run():
    """``share_one_arena`` first thing in a process: every thread allocates from the main arena, nothing is
    given back between phases or at the end of a run (the next reuses it), unless forced."""
    _in_fresh_process(_COUNT_ARENAS + """
        assert allocator.share_one_arena() and allocator.share_one_arena()  # idempotent
        with reuse_large_buffers():
            crowd()
            a = np.ones(96 * MB // 8)
            del a
            held = _rss()
            allocator.release_free_memory()  # between phases: kept
            assert _rss() > held - 16 * MB
        assert arenas() == 1, arenas()
        assert _rss() > held - 16 * MB and not _big_buffer_is_mmapped()  # after the run: kept, still tuned
        allocator.release_free_memory(force=True)
        assert _rss() < held - 64 * MB
    """)


@glibc
def test_one_shared_arena_is_refused_once_threads_have_their_own():
    _in_fresh_process(_COUNT_ARENAS + """
        crowd()
        assert arenas() > 1
        assert not allocator.share_one_arena() and not allocator._one_arena
        with reuse_large_buffers():
            a = np.ones(96 * MB // 8)
            del a
            held = _rss()
        assert _rss() < held - 64 * MB  # the usual behaviour: given back
    """)


def test_the_command_line_asks_for_one_arena_first(monkeypatch, tmp_path):
    from napari_impc_dl import cli

    calls = []
    monkeypatch.setattr(allocator, "share_one_arena", lambda: calls.append(1) or False)
    assert cli.main(["synth", "nuclei", "--n", "1", "--size", "64", "--out", str(tmp_path)]) == 0
    assert calls == [1]
