"""The engine on GPUs it cannot see here: CUDA (also ``cuda:N``) and Apple MPS, faked on the CPU.

A wrapper model reports a GPU device and the device-only torch calls (pinned memory, events,
streams, device contexts) are replaced by recorders, so the engine's GPU code paths run for real:
out-of-memory back-off (also for fixed-size models and on MPS), the CPU fallback's tile and halo,
host copies from MPS, ``cuda:N`` events, and float64 inputs.
"""

import contextlib

import numpy as np
import pytest
import torch

from napari_impc_dl.inference.engine import predict_plane
from napari_impc_dl.inference.runnable import percentile_normalizer


class FakeGPU:
    """A Runnable on a pretend ``device``; ``oom(x)`` says when a forward runs out of memory there."""

    def __init__(self, inner, device="cuda", oom=lambda x: False, fixed=None):
        import dataclasses

        self.inner, self.home, self.oom = inner, torch.device(device), oom
        self.on = self.home
        self.forwards, self.inputs = 0, []
        self.info = inner.info if fixed is None else dataclasses.replace(inner.info, tiling=dataclasses.replace(inner.info.tiling, fixed=fixed))

    @property
    def device(self):
        return self.on

    def to(self, d):
        self.on = torch.device(d)
        return self

    def fit_normalizer(self, s):
        return self.inner.fit_normalizer(s)

    def forward(self, x):
        self.forwards += 1
        self.inputs.append((tuple(x.shape), x.dtype))
        if self.on.type != "cpu" and self.oom(x):
            if self.on.type == "cuda":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)")
        return self.inner.forward(x.cpu())


@pytest.fixture
def fake_gpu(monkeypatch):
    """Device-only torch calls recorded instead of run; returns the record."""
    import napari_impc_dl.inference.engine as eng

    seen = {"streams": [], "contexts": []}
    fmt = torch.contiguous_format
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    if hasattr(torch, "mps"):
        monkeypatch.setattr(torch.mps, "empty_cache", lambda: None)
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, memory_format=fmt, **k: torch.zeros(*a, **k).contiguous(memory_format=memory_format))
    monkeypatch.setattr(torch.cuda, "Event", lambda: type("E", (), {"record": lambda s, stream=None: seen["streams"].append(stream), "synchronize": lambda s: None})())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")

    @contextlib.contextmanager
    def device_context(d):
        seen["contexts"].append(str(d))
        yield

    monkeypatch.setattr(torch.cuda, "device", device_context)
    monkeypatch.setattr(eng, "_autocast", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(eng, "describe_device", lambda d: f"fake-{d}")
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: real_to(self, "cpu") if a and str(a[0]).startswith(("cuda", "mps")) else real_to(self, *a, **k))
    return seen


def _run(model, img, **kw):
    out = np.zeros((2,) + img.shape, np.uint8)
    norm = kw.pop("norm", None) or percentile_normalizer(img.reshape(1, -1), 1, 99.8)
    stats = predict_plane(model, lambda t: img[None, t.y0 : t.y1, t.x0 : t.x1], img.shape, out, norm, **kw)
    return out, stats


IMG = np.random.default_rng(0).integers(0, 4000, (256, 256)).astype(np.uint16)


def test_oom_with_a_fixed_size_model_falls_back_to_the_cpu_at_once(tiny_model, fake_gpu):
    img = IMG[:96, :96]
    ref, _ = _run(FakeGPU(tiny_model, device="cpu", fixed=64), img, tile=64, halo=16, batch=1)
    model = FakeGPU(tiny_model, oom=lambda x: True, fixed=64)  # its tile can never shrink
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        out, stats = _run(model, img, tile=64, halo=16, batch=1)
    assert stats.fallbacks == ["cpu"] and model.forwards < 60  # before: re-planned the same tile forever
    assert np.abs(out.astype(int) - ref).max() <= 1
    assert model.device.type == "cuda"  # back on the GPU for the next image


def test_cpu_fallback_keeps_the_full_tile_and_halo(tiny_model, fake_gpu):
    model = FakeGPU(tiny_model, oom=lambda x: True)
    with pytest.warns(RuntimeWarning):
        _, stats = _run(model, IMG, tile=128, halo=32, batch=2)
    assert "tile" in stats.fallbacks and stats.fallbacks[-1] == "cpu"
    assert stats.halo == 32 and max(stats.tile_shape) >= 128  # not the shrunken tile and halo of the GPU attempts


def test_mps_out_of_memory_halves_the_batch_and_outputs_reach_the_host(tiny_model, fake_gpu, monkeypatch):
    import napari_impc_dl.inference.engine as eng

    ref, _ = _run(tiny_model, IMG, tile=128, halo=16, batch=1)
    copied = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copied.append(1) or real_cpu(self, *a, **k))
    real_write = eng._Writer._write
    monkeypatch.setattr(eng._Writer, "_write", lambda self, entry: (None if copied else pytest.fail("an MPS tensor was handed to numpy")) or real_write(self, entry))
    model = FakeGPU(tiny_model, device="mps", oom=lambda x: x.shape[0] > 1)
    out, stats = _run(model, IMG, tile=128, halo=16, batch=4)
    assert "batch->2" in stats.fallbacks and "batch->1" in stats.fallbacks
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_cuda_n_events_and_work_run_on_device_n(tiny_model, fake_gpu):
    model = FakeGPU(tiny_model, device="cuda:1")
    _run(model, IMG, tile=128, halo=16, batch=2)
    assert fake_gpu["contexts"] == ["cuda:1"]
    assert fake_gpu["streams"] and all(s == "stream of cuda:1" for s in fake_gpu["streams"])


def test_float64_from_a_normaliser_reaches_the_network_as_float32(tiny_model):
    model = FakeGPU(tiny_model, device="cpu")
    base = percentile_normalizer(IMG.reshape(1, -1), 1, 99.8)
    _run(model, IMG, tile=128, halo=16, batch=1, norm=lambda x: np.asarray(base(x), np.float64))
    assert {d for _, d in model.inputs} == {torch.float32}


def test_inference_copies_are_checked_in_full_fp32(tiny_model, monkeypatch):
    """TF32 is off while BatchNorm folding and the strip-wise decoder check themselves (else Ampere+ rejects both)."""
    from napari_impc_dl.models.fuse import fuse_batchnorm
    from napari_impc_dl.models.lean import stripwise

    seen = []
    net = tiny_model.net
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    hook = net.register_forward_pre_hook(lambda m, i: seen.append(torch.backends.cudnn.allow_tf32))
    try:
        fuse_batchnorm(net, 1)
        stripwise(net, 1)
    finally:
        hook.remove()
    assert seen and not any(seen)
    assert torch.backends.cudnn.allow_tf32 is True  # restored afterwards
