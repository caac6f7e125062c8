"""The engine's writer: zarr writes off the feeding thread, rows handed on in order, errors and re-plans.

``on_rows(r)`` promises that rows ``0:r`` of the output are final: the pipeline starts
postprocessing them while the model is still computing the rest, so a row handed on too early (or
rewritten after a re-plan) would silently change labels.
"""

import threading

import numpy as np
import pytest
import torch
import zarr

from napari_impc_dl.inference.engine import predict_plane
from napari_impc_dl.inference.runnable import percentile_normalizer

from test_engine_devices import IMG, FakeGPU, fake_gpu  # noqa: F401 - the fixture is used by name

NORM = percentile_normalizer(IMG.reshape(1, -1), 1, 99.8)


def _read(t):
    return IMG[None, t.y0 : t.y1, t.x0 : t.x1]


def _reference(model, **kw):
    out = np.zeros((2,) + IMG.shape, np.uint8)
    predict_plane(model, _read, IMG.shape, out, NORM, **kw)
    return out


class Recording:
    """A zarr-like output that records which thread writes and snapshots what was final at each ``on_rows``."""

    def __init__(self, fail_after: int | None = None):
        self.arr = np.zeros((2,) + IMG.shape, np.uint8)
        self.shape, self.dtype = self.arr.shape, self.arr.dtype
        self.threads: set[str] = set()
        self.writes, self.fail_after = 0, fail_after
        self.snapshots: list[tuple[int, np.ndarray]] = []

    def __setitem__(self, key, value):
        self.threads.add(threading.current_thread().name)
        self.writes += 1
        if self.fail_after is not None and self.writes > self.fail_after:
            raise OSError("disk full")
        self.arr[key] = value

    def on_rows(self, r):
        self.snapshots.append((r, self.arr[:, :r].copy()))


def test_zarr_outputs_are_written_by_the_writer_thread_and_equal_numpy(tiny_model, tmp_path):
    ref = _reference(tiny_model, tile=128, halo=16)
    z = zarr.open_array(str(tmp_path / "p.zarr"), mode="w", shape=ref.shape, chunks=(1, 64, 64), dtype=np.uint8)
    predict_plane(tiny_model, _read, IMG.shape, z, NORM, tile=128, halo=16)
    np.testing.assert_array_equal(z[...], ref)
    rec = Recording()
    predict_plane(tiny_model, _read, IMG.shape, rec, NORM, tile=128, halo=16)
    assert rec.threads == {"impc-tile-writer"}
    assert not [t for t in threading.enumerate() if t.name.startswith("impc-tile")]


def test_rows_are_handed_on_in_order_only_when_final(tiny_model):
    ref = _reference(tiny_model, tile=96, halo=16)
    rec = Recording()
    predict_plane(tiny_model, _read, IMG.shape, rec, NORM, tile=96, halo=16, on_rows=rec.on_rows)
    rows = [r for r, _ in rec.snapshots]
    assert rows == sorted(rows) and rows[-1] == IMG.shape[0] and len(set(rows)) > 2  # several grid rows, in order
    for r, snap in rec.snapshots:
        np.testing.assert_array_equal(snap, ref[:, :r])  # nothing above r changes after it was handed on


def test_a_write_error_stops_the_run_with_that_error(tiny_model):
    rec = Recording(fail_after=2)
    with pytest.raises(OSError, match="disk full"):
        predict_plane(tiny_model, _read, IMG.shape, rec, NORM, tile=96, halo=16)
    assert not [t for t in threading.enumerate() if t.name.startswith("impc-tile")]


def test_a_replan_after_out_of_memory_does_not_rewrite_rows_already_handed_on(tiny_model, fake_gpu):  # noqa: F811
    calls = {"n": 0}

    def oom(x):  # the first batches fit, then the GPU runs out of memory: re-plan with smaller tiles
        calls["n"] += 1
        return calls["n"] > 2 and x.shape[-1] > 100

    model = FakeGPU(tiny_model, oom=oom)
    rec = Recording()
    stats = predict_plane(model, _read, IMG.shape, rec, NORM, tile=128, halo=16, batch=1, on_rows=rec.on_rows)
    assert "tile" in stats.fallbacks and "cpu" not in stats.fallbacks, stats.fallbacks
    rows = [r for r, _ in rec.snapshots]
    assert rows == sorted(rows) and rows[-1] == IMG.shape[0]
    first_final = next(r for r in rows if r > 0)
    kept = next(s for r, s in rec.snapshots if r == first_final)
    np.testing.assert_array_equal(rec.arr[:, :first_final], kept)  # the re-plan left them as they were handed on
    small = _reference(tiny_model, tile=stats.tile_shape[0], halo=stats.halo)
    assert (small[:, :first_final] != kept).any()  # (the smaller plan would have written other values there)
