"""Training augmentations: what each kind does to a sample, and what it must leave alone."""

from __future__ import annotations

import numpy as np
import pytest

from napari_impc_dl.training import augment as A


def _sample(seed: int = 0, channels: int = 1) -> np.ndarray:
    """Bright discs on a dark background, normalised to about 0..1, with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96]
    img = np.zeros((96, 96), np.float32)
    for cy, cx in rng.uniform(10, 86, (12, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 1.0
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.stack([img] * channels)


def _high_freq(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, axis=-1)).mean())


def _first_seed(kind: str, check) -> int:
    """The first rng seed for which ``kind`` fires (each fires on about half of the samples)."""
    x = _sample()
    for seed in range(50):
        y = A.intensity(x, (kind,), np.random.default_rng(seed))
        if check(x, y):
            return seed
    raise AssertionError(f"{kind} never changed the sample in 50 draws")


def test_segmentation_defaults_hold_blur_and_illumination_classification_defaults_do_not():
    assert {"blur", "illumination"} <= set(A.DEFAULTS["segmentation"])
    assert not {"blur", "illumination"} & (set(A.DEFAULTS["object"]) | set(A.DEFAULTS["image"]))


def test_blur_takes_the_edges_off_and_keeps_the_mean():
    x = _sample()
    fired = 0
    for seed in range(20):
        y = A.intensity(x, ("blur",), np.random.default_rng(seed))
        if not np.array_equal(x, y):
            fired += 1
            assert _high_freq(y) < 0.75 * _high_freq(x)
            assert abs(float(y.mean()) - float(x.mean())) < 0.01
    assert 4 <= fired <= 16  # about half of the samples


def test_illumination_is_smooth_and_bounded():
    x = _sample()
    seed = _first_seed("illumination", lambda a, b: not np.array_equal(a, b))
    y = A.intensity(x, ("illumination",), np.random.default_rng(seed))
    bg = x[0] < 0.5  # the background: what was added there is smooth (a field, not noise)
    added = (y - x)[0]
    assert float(np.abs(np.diff(added, axis=-1))[bg[:, 1:] & bg[:, :-1]].mean()) < 0.02
    assert float(added.max()) <= 0.6 + 0.05 and float(y.min()) >= -0.05
    assert A.intensity(x, ("illumination",), np.random.default_rng(seed)).tobytes() == y.tobytes()  # same seed, same sample


def test_smooth_field_spans_zero_to_one():
    for seed in range(10):
        f = A._smooth_field((40, 70), np.random.default_rng(seed))
        assert f.shape == (40, 70) and f.dtype == np.float32
        assert float(f.min()) == pytest.approx(0.0) and float(f.max()) == pytest.approx(1.0)


def test_intensity_kinds_never_touch_mask_channels_nor_the_input():
    x = _sample(channels=3)
    x[2] = (x[2] > 0.5).astype(np.float32)  # a mask channel (object crops: image + mask)
    before = x.copy()
    kinds = ("illumination", "blur", "intensity", "noise")
    for seed in range(10):
        y = A.intensity(x, kinds, np.random.default_rng(seed), n_image_channels=2)
        assert np.array_equal(y[2], before[2])
        assert y.dtype == np.float32 and np.isfinite(y).all()
    assert np.array_equal(x, before)


def test_geometric_moves_image_and_target_together():
    x = _sample()
    t = (x > 0.5).astype(np.float32)
    for seed in range(8):
        xa, ta = A.geometric([x, t], ("flips", "rot90"), np.random.default_rng(seed))
        assert np.array_equal(xa > 0.5, ta > 0.5)


def test_zoom_draws_windows_around_the_patch_side_on_half_of_the_samples():
    sides = [A.zoom_side(128, ("zoom",), np.random.default_rng(seed)) for seed in range(200)]
    same = sum(s == 128 for s in sides)
    assert 60 <= same <= 140
    assert min(sides) >= round(128 / A.ZOOM_RANGE[1]) and max(sides) <= round(128 / A.ZOOM_RANGE[0])
    assert A.zoom_side(128, ("flips",), np.random.default_rng(0)) == 128


def test_resize_keeps_image_and_labels_on_top_of_each_other():
    x = _sample()  # discs of radius 6 on 96 px
    t = (x > 0.5).astype(np.float32)
    for side in (64, 150):
        xr, tr = A.resize([x, t], side, orders=[1, 0])
        assert xr.shape == (1, side, side) and tr.shape == (1, side, side) and xr.dtype == np.float32
        agree = float(((xr > 0.5) == (tr > 0.5)).mean())
        assert agree > 0.97
        area = float(tr.mean())  # the share of foreground survives the resampling
        assert abs(area - float(t.mean())) < 0.02
