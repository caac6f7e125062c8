"""Against the real bioimageio.core, offline: its test_model accepts the packages we test and the ones we export,
its processing ops agree with ours, and its blockwise predict agrees with our tiled engine."""

import warnings

import numpy as np
import pytest

import zoo_packages as Z
from napari_impc_dl.cli import main

pytestmark = pytest.mark.interop

core = pytest.importorskip("bioimageio.core")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))
    monkeypatch.setenv("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")
    from loguru import logger

    logger.disable("bioimageio")


def _core_test(source, weight_format=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = core.test_model(source, weight_format=weight_format)
    errors = [f"{d.name}: {[e.msg[:300] for e in d.errors]}" for d in s.details if d.status != "passed"]
    return s.status, errors


@pytest.fixture(scope="session")
def packages(tmp_path_factory):
    d = tmp_path_factory.mktemp("interop-pkgs")
    return {
        "v05-torchscript": Z.build_v05(d, kind="torchscript", name="interop-ts")[0],
        "v05-state-dict": Z.build_v05(d, kind="state_dict", name="interop-sd")[0],
        "v04-yaml": Z.build_v04(d, name="interop-04"),
        "url-state-dict": Z.build_url_state_dict(d),
    }


@pytest.mark.parametrize("key", ["v05-torchscript", "v05-state-dict", "v04-yaml"])
def test_packages_pass_zoo_test_and_bioimageio_core(packages, key, capsys):
    assert main(["zoo", "test", str(packages[key])]) == 0
    out = capsys.readouterr().out
    assert "max abs difference" in out and "PASSED" in out
    status, errors = _core_test(packages[key])
    assert status == "passed", errors


def test_url_listed_state_dict_runs_offline_from_local_torchscript(packages, tmp_path, capsys):
    pkg = packages["url-state-dict"]
    assert main(["zoo", "test", str(pkg)]) == 0
    assert "weights: torchscript" in capsys.readouterr().out
    assert main(["zoo", "import", str(pkg)]) == 0
    import tifffile

    tifffile.imwrite(tmp_path / "img.tif", Z.test_image((1, 1, 90, 120))[0, 0].astype(np.uint16))
    assert main(["segment", str(tmp_path / "img.tif"), "--out", str(tmp_path / "res"), "--model", "urlpkg"]) == 0
    assert (tmp_path / "res" / "img_labels.tif").exists()


def test_exported_package_passes_bioimageio_core_offline(tiny_checkpoint, tmp_path):
    """The bundled starter preset (or, before it is built, a tiny checkpoint): export, then core's full test."""
    from napari_impc_dl.presets import DATA, PRESETS

    model = "nuclei" if PRESETS["nuclei"].model_path.is_file() else str(tiny_checkpoint)
    out = tmp_path / "exported.zip"
    assert main(["zoo", "export", model, "--out", str(out), "--authors", "Test Author", "--license", "BSD-3-Clause"]) == 0
    status, errors = _core_test(out)  # every weight format in the package
    assert status == "passed", errors


def _core_proc(descr, member):
    from bioimageio.core.proc_ops import get_proc

    return get_proc(descr, member)


def test_processing_agrees_with_bioimageio_core():
    """Each op of ours against core's implementation of the same spec 0.5 description."""
    from bioimageio.core import Sample, Tensor
    from bioimageio.core.stat_calculators import compute_measures
    from bioimageio.spec.model import v0_5

    from napari_impc_dl.zoo import processing as P

    rng = np.random.default_rng(0)
    x = (rng.gamma(2.0, 300.0, (1, 2, 40, 52))).astype(np.float32)
    dims = ("batch", "channel", "y", "x")
    ax = [v0_5.AxisId("y"), v0_5.AxisId("x")]
    descrs = [
        v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=ax)),
        v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=None)),
        v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=ax, min_percentile=1.0, max_percentile=99.8)),
        v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=[v0_5.AxisId("channel"), *ax], min_percentile=5.0, max_percentile=95.0)),
        v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min_percentile=2.0, max_percentile=98.0, axes=ax)),
        v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=100.0, max=900.0)),
        v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearAlongAxisKwargs(axis=v0_5.AxisId("channel"), gain=[2.0, 0.5], offset=[1.0, -3.0])),
        v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(axis=v0_5.AxisId("channel"), mean=[500.0, 600.0], std=[100.0, 200.0])),
        v0_5.SigmoidDescr(),
        v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=550.0)),
    ]
    for d in descrs:
        op_core = _core_proc(d, _FakeTensorDescr())
        sample = Sample(members={"t": Tensor(x.copy(), dims=dims)}, stat={}, id=0)
        sample.stat.update(compute_measures(op_core.required_measures, [sample]))
        op_core(sample)
        want = sample.members["t"].data.to_numpy()
        ours = P.parse_op(d.model_dump(mode="json"), "t", dims, "0.5")
        got = ours(x.copy(), dims, P.compute_stats(ours.measures, {"t": (x, dims)}))
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=2e-6, atol=1e-6, err_msg=d.id)


def _FakeTensorDescr():
    """What core's ``get_proc`` needs of a tensor description: a 0.5 input descriptor with id ``t``."""
    from bioimageio.spec.model import v0_5

    return v0_5.InputTensorDescr.model_construct(id=v0_5.TensorId("t"), axes=[], preprocessing=[])


def test_tiled_engine_agrees_with_bioimageio_core_predict(packages):
    """Same package, same image: our tiled run vs core's blockwise predict, away from the border."""
    from bioimageio.core import create_prediction_pipeline, load_description, predict

    from napari_impc_dl.zoo.adapter import load_package, predict_image, with_tiling

    img = Z.test_image((1, 1, 160, 224), seed=9)[0, 0]
    ours = predict_image(with_tiling(load_package(packages["v05-torchscript"], mode="raw"), fixed=64, halo=8), img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp = create_prediction_pipeline(load_description(packages["v05-torchscript"]), weight_format="torchscript")
        res = predict(model=pp, inputs={"raw": img[None, None]}, input_block_shape={"raw": {"batch": 1, "channel": 1, "y": 64, "x": 64}})
    theirs = res.members["prob"].data.to_numpy()[0]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours[:, 8:-8, 8:-8], theirs[:, 8:-8, 8:-8], atol=1e-5)


def test_relative_zoo_export_passes_the_reference_test(tmp_path, monkeypatch):
    """`zoo export nuclei --out nuclei.zip` with a relative --out, from another working directory: the package
    passes bioimageio.core's own test."""
    from napari_impc_dl.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["zoo", "export", "nuclei", "--out", "nuclei.zip", "--authors", "Test Author"]) == 0
    status, errors = _core_test(tmp_path / "nuclei.zip")
    assert status == "passed", errors
