"""Instances from models without a distance head (inference.seeds): one object per round object at any size,
touching objects split, the method chosen from a package's outputs, seam-free blocks, and packages shaped like
Model Zoo U-Nets (foreground only; foreground + boundary) close to our two-head starter."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from napari_impc_dl.inference.instances import InstanceParams, labels_from_probabilities
from napari_impc_dl.inference.pipeline import plane_params
from napari_impc_dl.inference.seeds import choose_method


def _blob(shape, centres, diameter, rng, wobble=0.06):
    """A soft foreground probability (uint8, (1, H, W)) of slightly irregular disks, noisy at their edges."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    p = np.zeros(shape)
    for cy, cx in centres:
        ang = np.arctan2(yy - cy, xx - cx)
        rr = diameter / 2 * (1 + wobble * np.sin(3 * ang + rng.uniform(0, 6)) + 0.04 * np.sin(5 * ang + rng.uniform(0, 6)))
        p = np.maximum(p, 1 / (1 + np.exp((np.hypot(yy - cy, xx - cx) - rr) / 1.0)))
    p = np.clip(p + rng.normal(0, 0.15, shape) * ((p > 0.05) & (p < 0.95)), 0, 1)
    return (ndimage.gaussian_filter(p, 0.7) * 255 + 0.5).astype(np.uint8)[None]


def _instances(probs, method="distance-transform", **kw):
    params = plane_params(replace(InstanceParams(), method=method, **kw), probs)
    out = np.zeros(probs.shape[1:], np.int32)
    labels_from_probabilities(probs, out, params)
    return out, params


@pytest.mark.parametrize("diameter", [8, 11, 16, 24, 36, 54, 80, 120])
def test_a_round_isolated_object_is_one_object_at_any_size(diameter):
    rng = np.random.default_rng(diameter)
    n = diameter * 2 + 40
    for _ in range(3):
        c = (n / 2 + rng.uniform(-1, 1), n / 2 + rng.uniform(-1, 1))
        labels, params = _instances(_blob((n, n), [c], diameter, rng))
        assert labels.max() == 1, f"diameter {diameter}: {labels.max()} objects"
        assert abs(params.diameter - diameter) <= 0.15 * diameter + 2  # the estimate is close to the truth


@pytest.mark.parametrize("diameter", [12, 30, 70])
def test_two_touching_round_objects_are_two(diameter):
    rng = np.random.default_rng(1)
    n = diameter * 3 + 40
    gap = 0.8 * diameter  # centres 1.6 radii apart: a wide contact
    centres = [(n / 2, n / 2 - gap / 2), (n / 2, n / 2 + gap / 2)]
    probs = _blob((n, n), centres, diameter, rng, wobble=0.0)
    assert ndimage.label(probs[0] > 127)[1] == 1  # one foreground component: only seeds can split it
    labels, _ = _instances(probs)
    assert labels.max() == 2
    assert labels[round(n / 2), round(n / 2 - gap / 2)] != labels[round(n / 2), round(n / 2 + gap / 2)]


def test_threshold_method_does_not_split_and_boundary_method_follows_the_boundary():
    rng = np.random.default_rng(2)
    n = 120
    centres = [(60, 45), (60, 75)]
    fg = _blob((n, n), centres, 34, rng, wobble=0.0)
    assert _instances(fg, "threshold")[0].max() == 1
    boundary = np.zeros_like(fg)
    boundary[0, :, 58:62] = 255  # a boundary line between the two
    labels, params = _instances(np.concatenate([fg, boundary]), "boundary")
    assert labels.max() == 2 and params.diameter is not None


def test_method_from_the_outputs_and_the_users_choice():
    from napari_impc_dl.errors import InputError

    assert choose_method(["foreground", "distance"]) == "distance-head"
    assert choose_method(["foreground"]) == "distance-transform"
    assert choose_method(["foreground", "boundary"]) == "boundary"
    assert choose_method(["foreground", "distance"], "distance") == "distance-head"
    assert choose_method(["foreground", "boundary"], "distance") == "distance-transform"
    assert choose_method(["foreground", "distance"], "threshold") == "threshold"
    with pytest.raises(InputError, match="boundary output"):
        choose_method(["foreground"], "boundary")


@pytest.mark.parametrize("method", ["distance-transform", "boundary"])
def test_blocks_give_the_whole_image_labels(method):
    """Seam-free: small postprocessing blocks give exactly the labels of one whole-image block."""
    from napari_impc_dl.synthetic.nuclei import make_nuclei_image

    _, gt = make_nuclei_image((600, 640), seed=5, density=0.35)
    mask = gt > 0
    d = ndimage.distance_transform_edt(mask)
    fg = (ndimage.gaussian_filter(mask.astype(float), 1.0) * 255 + 0.5).astype(np.uint8)
    edge = ndimage.morphological_gradient(gt, size=3) > 0
    second = (edge * 255).astype(np.uint8)
    probs = np.stack([fg, second]) if method == "boundary" else fg[None]
    params = plane_params(replace(InstanceParams(), method=method), probs)
    whole = np.zeros(gt.shape, np.int32)
    labels_from_probabilities(probs, whole, replace(params, block=2048))
    tiled = np.zeros(gt.shape, np.int32)
    labels_from_probabilities(probs, tiled, replace(params, block=256, halo=96), workers=2)
    from napari_impc_dl.measure.matching import match_instances

    assert whole.max() > 30 and d.max() > 3
    assert tiled.max() == whole.max()  # ids differ (raster order of blocks), objects do not
    m = match_instances(tiled, whole)
    assert m.fp == 0 and m.fn == 0 and min(iou for _, _, iou in m.matched) == 1.0


def test_the_diameter_bounds_the_minimum_size_for_our_own_models(tmp_path):
    from napari_impc_dl import api
    from napari_impc_dl.config import SegmentConfig
    from napari_impc_dl.synthetic.nuclei import make_nuclei_image

    img, _ = make_nuclei_image((192, 192), seed=3, density=0.2)
    plain = api.segment_image(img, "nuclei")
    sized = api.segment_image(img, "nuclei", SegmentConfig(diameter=40))
    assert plain.params["instances"] == "distance-head" and plain.params["diameter"] is None
    assert sized.params["diameter"] == 40 and sized.params["diameter_source"] == "given"
    assert sized.params["min_size"] == round(np.pi / 4 * 10**2)
    assert sized.objects["area"].min() >= sized.params["min_size"]
    assert sized.n_objects < plain.n_objects


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    pytest.importorskip("bioimageio.spec")  # the zoo extra
    from zoo_packages import build_starter_variant

    folder = tmp_path_factory.mktemp("variants")
    return {v: build_starter_variant(folder, v) for v in ("foreground", "boundary")}


@pytest.mark.parametrize("density", [0.45, 0.08], ids=["dense", "sparse"])
def test_foreign_shaped_packages_are_close_to_our_two_head_model(variants, density):
    """The starter as a foreground-only and as a foreground + boundary package, through `segment`: F1@0.5
    within 0.05 of the two-head model on held-out synthetic nuclei (seeds our training never used)."""
    from napari_impc_dl import api
    from napari_impc_dl.inference.loading import load_model
    from napari_impc_dl.measure.matching import match_instances
    from napari_impc_dl.synthetic.nuclei import make_nuclei_image
    from napari_impc_dl.zoo.adapter import load_package

    models = {"head": load_model("nuclei", device="cpu"), **{v: load_package(p) for v, p in variants.items()}}
    f1 = {k: [] for k in models}
    for seed in range(3):
        img, gt = make_nuclei_image((224, 224), seed=7000 + seed, density=density)
        for k, m in models.items():
            res = api.segment_image(img, m)
            f1[k].append(match_instances(res.labels, gt).f1)
            if k != "head":
                assert res.params["instances"] == ("distance-transform" if k == "foreground" else "boundary")
                assert res.params["diameter_source"] == "estimated"
    mean = {k: float(np.mean(v)) for k, v in f1.items()}
    assert mean["head"] > 0.9, mean
    assert mean["foreground"] >= mean["head"] - 0.05, mean
    assert mean["boundary"] >= mean["head"] - 0.05, mean


def test_segment_cli_takes_instances_and_diameter(variants, tmp_path, capsys):
    import pandas as pd
    import tifffile

    from napari_impc_dl.cli import main
    from napari_impc_dl.synthetic.nuclei import make_nuclei_image

    img, _ = make_nuclei_image((160, 160), seed=11, density=0.3)
    tifffile.imwrite(tmp_path / "a.tif", img)
    assert main(["segment", str(tmp_path / "a.tif"), "--model", str(variants["foreground"]), "--out", str(tmp_path / "o1"), "--diameter", "14"]) == 0
    assert main(["segment", str(tmp_path / "a.tif"), "--model", str(variants["boundary"]), "--out", str(tmp_path / "o2"), "--instances", "threshold"]) == 0
    c1, c2 = pd.read_csv(tmp_path / "o1" / "counts.csv"), pd.read_csv(tmp_path / "o2" / "counts.csv")
    assert (c1.instances[0], c1.diameter[0], c1.diameter_source[0]) == ("distance-transform", 14, "given")
    assert c2.instances[0] == "threshold" and c2.n_objects[0] < c1.n_objects[0]
