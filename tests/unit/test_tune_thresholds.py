"""The trainer picks the foreground / seed thresholds on the validation images (StarDist's optimize_thresholds)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_impc_dl.inference.instances import InstanceParams  # noqa: E402
from napari_impc_dl.training.data import Sample  # noqa: E402
from napari_impc_dl.training.tasks import SegmentationTask  # noqa: E402


def _two_touching_discs(bridge: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A 64² mask of two touching discs and the (foreground, distance) probabilities a model that is unsure at
    their contact would give: the distance map stays at 0.6 across a bridge between the centres, so seeds from
    0.5 join the two into one object, seeds from 0.6 (153 of 255: above the bridge) keep them apart."""
    yy, xx = np.mgrid[0:64, 0:64]
    mask = np.zeros((64, 64), np.int32)
    dist = np.zeros((64, 64), np.float32)
    for k, cx in enumerate((22, 42)):
        r = np.hypot(yy - 32, xx - cx)
        inside = r < 11
        mask[inside & (mask == 0)] = k + 1
        dist = np.maximum(dist, np.where(inside, 1.0 - r / 11, 0.0).astype(np.float32))
    if bridge:
        band = (np.abs(yy - 32) <= 2) & (xx >= 22) & (xx <= 42)
        dist[band] = np.maximum(dist[band], 0.6)
    fg = np.where(mask > 0, 0.95, 0.02).astype(np.float32)
    return mask, np.stack([fg, dist])


class _Fixed(torch.nn.Module):
    """A 'network' that returns the same probability maps whatever it is given."""

    def __init__(self, probs: np.ndarray):
        super().__init__()
        p = torch.from_numpy(np.clip(probs, 1e-4, 1 - 1e-4))
        self.register_buffer("logits", torch.log(p / (1 - p))[None])

    def forward(self, x):
        return self.logits[..., : x.shape[-2], : x.shape[-1]]


def _task(mask: np.ndarray) -> SegmentationTask:
    img = (mask > 0).astype(np.float32)[None] * 100 + 10
    s = Sample("a", img, mask)
    return SegmentationTask([s], [s], patch=64, batch=1, min_foreground=0.0, augment_kinds=(), step=8, params=InstanceParams())


def test_tuning_finds_the_seed_threshold_that_separates_touching_objects():
    mask, probs = _two_touching_discs()
    task, net = _task(mask), _Fixed(probs)
    at_default = task.validate(net, "cpu", contextlib.nullcontext)
    assert at_default["f1"] < 0.7  # one merged object: it matches one disc at most
    params, metrics = task.tune_thresholds(net, "cpu", contextlib.nullcontext)
    assert (params.foreground_threshold, params.seed_threshold) == (0.5, 0.6)  # the nearest pair that separates them
    assert metrics["f1"] == pytest.approx(1.0)
    assert metrics["loss"] == pytest.approx(at_default["loss"])


def test_tuning_keeps_the_defaults_when_nothing_beats_them():
    mask, probs = _two_touching_discs(bridge=False)
    task, net = _task(mask), _Fixed(probs)
    assert task.validate(net, "cpu", contextlib.nullcontext)["f1"] == pytest.approx(1.0)
    params, _ = task.tune_thresholds(net, "cpu", contextlib.nullcontext)
    assert (params.foreground_threshold, params.seed_threshold) == (0.5, 0.5)


def test_tuning_turns_the_convex_merge_on_for_a_disc_the_seeds_cut_in_two():
    """A disc whose distance map holds at 0.28 along its middle column: no seed threshold of the grid (from 0.3)
    reaches across it, but the border's mean is above the merge level and the joined disc is convex."""
    from napari_impc_dl.training.tasks import CONVEX_MERGE

    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(yy - 32, xx - 32)
    mask = (r < 20).astype(np.int32)
    dist = np.where(mask > 0, 1.0 - r / 20, 0.0).astype(np.float32)
    dist[:, 32] = np.minimum(dist[:, 32], 0.28)
    probs = np.stack([np.where(mask > 0, 0.95, 0.02).astype(np.float32), dist])
    task, net = _task(mask), _Fixed(probs)
    assert task.validate(net, "cpu", contextlib.nullcontext)["f1"] < 0.7  # two halves: one matches the disc at most
    params, metrics = task.tune_thresholds(net, "cpu", contextlib.nullcontext)
    assert (params.merge_threshold, params.merge_min_solidity) == (CONVEX_MERGE["merge_threshold"], CONVEX_MERGE["merge_min_solidity"])
    assert metrics["f1"] == pytest.approx(1.0)


def test_tuning_turns_off_a_merge_that_joins_touching_objects():
    mask, probs = _two_touching_discs(bridge=False)
    img = (mask > 0).astype(np.float32)[None] * 100 + 10
    s = Sample("a", img, mask)
    task = SegmentationTask([s], [s], patch=64, batch=1, min_foreground=0.0, augment_kinds=(), step=8, params=InstanceParams(merge_threshold=0.01))
    net = _Fixed(probs)
    assert task.validate(net, "cpu", contextlib.nullcontext)["f1"] < 0.7  # the merge joins the two discs
    params, metrics = task.tune_thresholds(net, "cpu", contextlib.nullcontext)
    assert params.merge_threshold is None and metrics["f1"] == pytest.approx(1.0)
