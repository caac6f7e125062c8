import threading

import numpy as np
import pytest
import torch

from napari_impc_dl.errors import CancelToken, Cancelled
from napari_impc_dl.inference.engine import predict_plane, resolve_device
from napari_impc_dl.inference.runnable import percentile_normalizer


def _reader(img):
    return lambda t: img[None, t.y0 : t.y1, t.x0 : t.x1]


def _run(model, img, **kw):
    out = np.zeros((2,) + img.shape, np.uint8)
    norm = percentile_normalizer(img.reshape(1, -1), 1, 99.8)
    stats = predict_plane(model, _reader(img), img.shape, out, norm, **kw)
    return out, stats


def test_every_pixel_is_written_and_batches_do_not_change_results(tiny_model):
    img = np.random.default_rng(0).integers(0, 4000, (300, 410)).astype(np.uint16)
    a, s1 = _run(tiny_model, img, tile=128, halo=16, batch=1)
    b, s4 = _run(tiny_model, img, tile=128, halo=16, batch=4)
    assert s1.n_tiles > 4 and s1.wait_s >= 0
    assert np.abs(a.astype(int) - b).max() <= 1  # batched conv may differ in the last bit
    # probabilities of a random net are never exactly 0 everywhere: each core was written
    c, _ = _run(tiny_model, img, tile=128, halo=16, batch=3)
    assert (c.reshape(2, -1).max(1) > 0).all()


class _OOMOnBigBatches:
    """Wraps a Runnable; pretends the GPU runs out of memory for batches larger than one tile."""

    def __init__(self, inner):
        self.inner, self.info = inner, inner.info

    @property
    def device(self):
        return torch.device("cuda")  # make the engine treat this as a GPU

    def to(self, d):
        return self

    def fit_normalizer(self, s):
        return self.inner.fit_normalizer(s)

    def forward(self, x):
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.forward(x.cpu())


def test_out_of_memory_halves_the_batch(tiny_model, monkeypatch):
    import napari_impc_dl.inference.engine as eng

    img = np.random.default_rng(0).integers(0, 4000, (256, 256)).astype(np.uint16)
    ref, _ = _run(tiny_model, img, tile=128, halo=16, batch=1)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    fmt = torch.contiguous_format
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, memory_format=fmt, **k: torch.zeros(*a, **k).contiguous(memory_format=memory_format))
    monkeypatch.setattr(torch.cuda, "Event", lambda: type("E", (), {"record": lambda s, *a: None, "synchronize": lambda s: None})())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: None)
    monkeypatch.setattr(eng, "_device_context", lambda d: __import__("contextlib").nullcontext())
    monkeypatch.setattr(eng, "_autocast", lambda d: __import__("contextlib").nullcontext())
    monkeypatch.setattr(eng, "describe_device", lambda d: "fake-cuda")
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: real_to(self, "cpu") if a and str(a[0]).startswith("cuda") else real_to(self, *a, **k))
    out, stats = _run(_OOMOnBigBatches(tiny_model), img, tile=128, halo=16, batch=4)
    assert "batch->2" in stats.fallbacks and "batch->1" in stats.fallbacks
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_cancel_stops_and_leaves_no_thread(tiny_model):
    img = np.random.default_rng(0).integers(0, 4000, (512, 512)).astype(np.uint16)
    token = CancelToken()
    calls = []

    def progress(done, total):
        calls.append(done)
        token.cancel()

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(Cancelled):
        _run(tiny_model, img, tile=128, halo=16, batch=1, progress=progress, cancel=token)
    assert calls == [1]
    assert not [t for t in threading.enumerate() if t.name == "impc-tile-reader" and t.is_alive()]
    assert {t.name for t in threading.enumerate()} <= before | {"MainThread"}


def test_reader_errors_reach_the_caller(tiny_model):
    def bad_read(t):
        raise OSError("disk went away")

    out = np.zeros((2, 256, 256), np.uint8)
    with pytest.raises(OSError, match="disk went away"):
        predict_plane(tiny_model, bad_read, (256, 256), out, lambda x: x.astype(np.float32), tile=128, halo=16)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        from napari_impc_dl.errors import InputError

        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(starter):
    from napari_impc_dl import api

    img = np.random.default_rng(0).integers(0, 4000, (600, 700)).astype(np.uint16)
    cpu, _ = _run(starter, img, tile=256, halo=16)
    gpu_model = api.load_model("nuclei", device="cuda")
    gpu, stats = _run(gpu_model, img, tile=256, halo=16, batch=4)
    assert "cuda" in stats.device
    assert np.mean(np.abs(cpu.astype(int) - gpu)) < 2  # bf16 autocast


def test_float_outputs_are_written_raw(tiny_model):
    img = np.random.default_rng(0).integers(0, 4000, (200, 300)).astype(np.uint16)
    q, _ = _run(tiny_model, img, tile=128, halo=16)
    f = np.zeros((2,) + img.shape, np.float32)
    norm = percentile_normalizer(img.reshape(1, -1), 1, 99.8)
    predict_plane(tiny_model, _reader(img), img.shape, f, norm, tile=128, halo=16)
    assert f.dtype == np.float32 and 0 <= f.min() and f.max() <= 1
    assert np.abs(np.round(f * 255) - q).max() <= 1


@pytest.mark.parametrize("band_limit", [1 << 30, 1000])  # a band per grid row / too big: tile by tile
def test_reader_cuts_tiles_from_row_bands_and_reads_each_row_once(monkeypatch, band_limit):
    from napari_impc_dl.inference import engine
    from napari_impc_dl.inference.tiling import plan_tiles

    monkeypatch.setattr(engine, "_BAND_BYTES", band_limit)
    img = np.random.default_rng(0).integers(0, 4000, (300, 410)).astype(np.uint16)
    plan = plan_tiles(img.shape, 128, 16, step=8, min_tile=32)
    calls = []

    def read(t):
        calls.append((t.y0, t.y1, t.x0, t.x1))
        return img[None, t.y0 : t.y1, t.x0 : t.x1]

    norm = percentile_normalizer(img.reshape(1, -1), 1, 99.8)
    reader = engine._Reader(read, plan, norm, 1, pin=False)
    for t in plan.tiles:
        expected = np.pad(img[None, t.y0 : t.y1, t.x0 : t.x1], ((0, 0), (0, t.py), (0, t.px)), mode="reflect")
        assert np.array_equal(reader._load(t), norm(expected))
    rows = len({(t.y0, t.y1) for t in plan.tiles})
    if band_limit > 1000:
        assert len(calls) == 1 + rows  # the first tile (to learn the dtype), then one band per grid row
    else:
        assert len(calls) == len(plan.tiles)


class _WholeTiles:
    """Wraps a Runnable and hides its ``forward_region``: the engine then computes whole tiles and crops them."""

    def __init__(self, inner):
        self.inner, self.info = inner, inner.info

    @property
    def device(self):
        return self.inner.device

    def fit_normalizer(self, s):
        return self.inner.fit_normalizer(s)

    def forward(self, x):
        return self.inner.forward(x)


def test_computing_only_the_cores_changes_no_output(starter, monkeypatch):
    """The engine asks the starter model for each tile's core only; the probabilities are those of whole tiles, cropped."""
    img = np.random.default_rng(4).integers(0, 4000, (520, 700)).astype(np.uint16)
    windows = []
    region = starter.forward_region
    monkeypatch.setattr(starter, "forward_region", lambda x, keep: windows.append((tuple(x.shape[2:]), keep)) or region(x, keep), raising=False)
    got, stats = _run(starter, img, tile=256, halo=32, batch=2)
    want, _ = _run(_WholeTiles(starter), img, tile=256, halo=32, batch=2)
    assert stats.n_tiles >= 6 and len(windows) == -(-stats.n_tiles // 2)
    assert any(keep != (0, shape[0], 0, shape[1]) for shape, keep in windows)  # cores smaller than tiles were asked for
    assert np.array_equal(got, want)

