"""Postprocessing overlapped with inference (on by default on a GPU, forced here on the CPU).

The promise: the same labels, tables and ids as running one after the other, postprocessing that
really starts before the model has finished the plane, and an error on either side that stops
the other one with that error.
"""

import threading

import numpy as np
import pytest

from napari_impc_dl.config import SegmentConfig
from napari_impc_dl.errors import Cancelled, CancelToken
from napari_impc_dl.inference.pipeline import segment_image


def _config(**kw):
    return SegmentConfig(**{"device": "cpu", "tile": 256, "block": 256, "block_halo": 48, **kw})


def _no_impc_threads():
    return not [t for t in threading.enumerate() if t.name.startswith("impc-") and t.is_alive()]


def test_overlapped_run_gives_the_same_labels_and_table_and_starts_early(starter, nuclei_768):
    image = nuclei_768[0][:512, :512]
    ref = segment_image(image, starter, _config(overlap=False, tile=128))
    events = []
    res = segment_image(image, starter, _config(overlap=True, tile=128), progress=lambda d, t, stage: events.append((stage, d, t)))
    np.testing.assert_array_equal(res.labels, ref.labels)
    assert res.n_objects == ref.n_objects > 30
    assert res.objects.equals(ref.objects)
    last_inference = max(i for i, e in enumerate(events) if e[0] == "inference")
    first_post = min(i for i, e in enumerate(events) if e[0] == "postprocessing")
    assert first_post < last_inference  # a block was labelled before the model had finished the plane
    assert "postprocess_overlapped_s" in res.timings and res.timings["postprocess_s"] <= res.timings["postprocess_overlapped_s"] + 1e-6
    assert _no_impc_threads()


def test_overlapped_stacks_number_objects_across_planes(starter, nuclei_768):
    stack = np.stack([nuclei_768[0][:256], nuclei_768[0][-256:]])
    ref = segment_image(stack, starter, _config(overlap=False, channel_axis=None))
    res = segment_image(stack, starter, _config(overlap=True, channel_axis=None))
    np.testing.assert_array_equal(res.labels, ref.labels)
    assert res.n_objects == ref.n_objects


def test_default_is_on_only_on_a_gpu_and_never_when_the_diameter_is_estimated(starter):
    from dataclasses import replace

    from napari_impc_dl.inference.instances import InstanceParams
    from napari_impc_dl.inference.overlap import overlapped

    gpu = type("M", (), {"device": type("D", (), {"type": "cuda"})()})()
    head = InstanceParams(method="distance-head")
    assert not overlapped(SegmentConfig(), starter, head)  # CPU: the cores are the model's
    assert overlapped(SegmentConfig(), gpu, head)
    assert not overlapped(SegmentConfig(overlap=False), gpu, head)
    dt = InstanceParams(method="distance-transform")
    assert not overlapped(SegmentConfig(), gpu, dt)  # the diameter comes from the whole plane
    assert overlapped(SegmentConfig(), gpu, replace(dt, diameter=20.0, core_threshold=0.6))


def test_a_postprocessing_error_stops_inference_with_that_error(starter, nuclei_768, monkeypatch):
    import napari_impc_dl.inference.instances as inst

    forwards = []
    real_forward = starter.forward_region
    monkeypatch.setattr(starter, "forward_region", lambda x, keep: forwards.append(1) or real_forward(x, keep))
    monkeypatch.setattr(inst, "local_instances", lambda *a, **k: (_ for _ in ()).throw(ValueError("broken block")))
    with pytest.raises(ValueError, match="broken block"):
        segment_image(nuclei_768[0], starter, _config(overlap=True, tile=128))
    assert 0 < len(forwards) < 36  # stopped early: a 768² plane in 128-pixel tiles is 36 forwards
    assert _no_impc_threads()


def test_an_inference_error_releases_the_waiting_postprocessing(starter, nuclei_768, monkeypatch):
    calls = []
    real_forward = starter.forward_region

    def forward(x, keep):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("device lost")
        return real_forward(x, keep)

    monkeypatch.setattr(starter, "forward_region", forward)
    with pytest.raises(RuntimeError, match="device lost"):
        segment_image(nuclei_768[0], starter, _config(overlap=True, tile=128))
    assert _no_impc_threads()


def test_cancel_stops_both(starter, nuclei_768):
    token = CancelToken()

    def progress(done, total, stage):
        if stage == "postprocessing":
            token.cancel()

    with pytest.raises(Cancelled):
        segment_image(nuclei_768[0], starter, _config(overlap=True, tile=128), progress=progress, cancel=token)
    assert _no_impc_threads()
