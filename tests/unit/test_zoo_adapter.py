"""Packages through our tiled engine: tiling never changes the result; axes, sizes, formats, trust; outputs to labels."""

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.spec")  # the zoo extra

import zoo_packages as Z  # noqa: E402
from napari_impc_dl import api
from napari_impc_dl.config import SegmentConfig
from napari_impc_dl.errors import InputError
from napari_impc_dl.zoo.adapter import choose_format, load_package, predict_image
from napari_impc_dl.zoo.spec import describe
from napari_impc_dl.zoo.package import open_package


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))


@pytest.fixture(scope="session")
def pkgs(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo-pkgs")
    out = {}
    for key, kw in {
        "ts": dict(kind="torchscript"),
        "cl": dict(kind="torchscript", layout="byxc"),
        "fixed": dict(kind="torchscript", size="fixed"),
        "axes": dict(kind="torchscript", size="per_axis"),
        "raw": dict(kind="torchscript", post="none", channel_names=("score",)),
        "smv": dict(kind="torchscript", post="scale_mean_variance"),
        "af": dict(kind="arch_file"),
        "onnx": dict(kind="onnx"),
    }.items():
        out[key], _ = Z.build_v05(d, name=f"pkg-{key}", **kw)
    return out


def _whole(model, img):
    """Reference: the package on the whole image in one forward (no tiles)."""
    t = model.spec.inputs[0]
    x = img[None, None].astype(np.float32)
    if t.dims[-1] == "channel":
        x = x.transpose(0, 2, 3, 1)
    y = model.predict_tensors({t.id: x})[model.spec.outputs[0].id]
    return y.transpose(0, 3, 1, 2)[0] if t.dims[-1] == "channel" else y[0]


@pytest.mark.parametrize("key", ["ts", "cl", "axes", "smv", "onnx"])
def test_tiling_never_changes_the_result(pkgs, key):
    img = Z.test_image((1, 1, 152, 200), seed=7)[0, 0].astype(np.uint16)  # a valid size: whole-image inference needs no padding
    m = load_package(pkgs[key], mode="raw")
    ref = _whole(m, img)
    for tile, halo in ((48, 8), (64, 16), (512, 16)):
        got = predict_image(m, img, tile=tile, halo=halo, batch=3)
        np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5, err_msg=f"{key} tile {tile}")


def test_shape_constraints_reach_the_network(pkgs):
    seen = []
    for key, ok in (("fixed", lambda h, w: (h, w) == (64, 64)), ("axes", lambda h, w: (h - 16) % 8 == 0 and h >= 16 and (w - 24) % 16 == 0 and w >= 24)):
        m = load_package(pkgs[key], mode="raw")
        inner = m.net.module

        class Spy(torch.nn.Module):
            def forward(self, x):
                seen.append((key, tuple(x.shape[-2:])))
                return inner(x)

        m.net.module = Spy()
        out = predict_image(m, Z.test_image((1, 1, 150, 173), seed=2)[0, 0], tile=64, halo=8)
        assert out.shape == (2, 150, 173) and np.isfinite(out).all()
        assert all(ok(*s) for k, s in seen if k == key) and any(k == key for k, _ in seen)
    assert load_package(pkgs["axes"]).info.tiling.step == (8, 16)


def test_segment_runs_packages_of_any_output_kind(pkgs, tmp_path):
    img = Z.test_image((1, 1, 120, 140), seed=4)[0, 0].astype(np.uint16)
    cfg = SegmentConfig(device="cpu", tile=64, halo=8)
    r = api.segment_image(img, str(pkgs["ts"]), cfg)  # probabilities (sigmoid): straight to instances
    # channels foreground + boundary: both kept, instances from the boundary's interiors
    assert r.probabilities.shape == (2, 120, 140) and r.probabilities.dtype == np.uint8 and r.model["name"] == "pkg-ts"
    assert r.params["instances"] == "boundary" and r.params["diameter_source"] == "estimated"
    raw = api.segment_image(img, str(pkgs["raw"]), cfg)  # raw scores: whole-image Otsu mapping
    assert raw.probabilities.shape == (1, 120, 140) and raw.probabilities.max() > 127 > raw.probabilities.min()
    assert raw.labels.max() >= 1 and raw.params["instances"] == "distance-transform"
    smv = api.segment_image(img, str(pkgs["smv"]), cfg)  # needs whole-output statistics: finalised after tiling
    assert smv.probabilities.shape == (2, 120, 140)  # not probabilities: each map Otsu-mapped, the boundary too
    assert all(smv.probabilities[c].max() > 127 > smv.probabilities[c].min() for c in range(2))


def test_formats_trust_and_clear_refusals(pkgs, tmp_path, monkeypatch):
    spec = describe(open_package(pkgs["af"]))
    mark = tmp_path / "executed.txt"
    monkeypatch.setenv("IMPC_ZOO_TEST_MARK", str(mark))
    with pytest.raises(InputError, match="trust"):
        choose_format(spec)
    with pytest.raises(InputError, match="--trust-code"):
        load_package(pkgs["af"])
    assert not mark.exists()  # nothing of the package ran
    m = load_package(pkgs["af"], trust_code=True, mode="raw")
    assert mark.exists() and m.format == "pytorch_state_dict"
    with pytest.raises(InputError, match="no onnx weights"):
        choose_format(spec, "onnx", True)
    with pytest.raises(InputError, match="Unknown weight format"):
        choose_format(spec, "caffe")


def test_onnx_weights_run_through_onnxruntime(pkgs, capsys):
    pytest.importorskip("onnxruntime")
    from napari_impc_dl.cli import main

    assert main(["zoo", "test", str(pkgs["onnx"])]) == 0
    assert "weights: onnx" in capsys.readouterr().out


def test_output_channel_roles():
    from napari_impc_dl.zoo.adapter import _roles

    assert _roles(["foreground", "distance"]) == (0, 1)
    assert _roles(["background", "foreground", "boundary"]) == (1, None)
    assert _roles(["boundaries", "nuclei"]) == (1, None)
    assert _roles(["background"]) == (("1-", 0), None)
    assert _roles(["c0", "c1"]) == (0, None)


def test_per_sample_and_per_dataset_statistics_of_a_stack(pkgs):
    """A stack's planes are the samples: per-sample statistics of one plane, per-dataset ones of all planes, streamed."""
    from napari_impc_dl.io.image import ImageSource
    from napari_impc_dl.zoo import processing as P

    stack = np.stack([Z.test_image((1, 1, 40, 56), seed=s)[0, 0] * (1 + s) for s in range(3)]).astype(np.float32)
    src = ImageSource.from_array(stack, name="stack", axes="ZYX")
    m = load_package(pkgs["ts"], mode="raw")
    for axes, ref in ((("y", "x"), stack[1]), (("batch", "y", "x"), stack)):
        m.pre_ops[m.inp.id] = [P.ZeroMeanUnitVariance("zero_mean_unit_variance", m.inp.id, axes=axes)]
        m.in_measures = P.measures_of(m.pre_ops[m.inp.id])
        got = m.normalizer_for_image(src, (1,), None)(stack[1][None])
        want = (stack[1] - ref.mean(dtype=np.float64)) / (ref.std(dtype=np.float64) + 1e-6)
        np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
