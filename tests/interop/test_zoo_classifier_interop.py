"""Against the real bioimageio.core, offline: its test_model accepts our exported classifiers (image and object
level, every weight format in the package: timm state dict and torchscript)."""

import warnings

import pytest

from napari_impc_dl import api
from napari_impc_dl.cli import main

pytestmark = pytest.mark.interop

core = pytest.importorskip("bioimageio.core")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))
    monkeypatch.setenv("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")
    from loguru import logger

    logger.disable("bioimageio")


def _data(level: str):
    if level == "image":
        from napari_impc_dl.synthetic.views import make_view_image

        return [(make_view_image(v, 64, s), v, f"{v}-{s}") for s in range(6) for v in ("dorsoventral", "lateral")]
    from napari_impc_dl.synthetic.shapes import make_shapes_image

    return [(*make_shapes_image((128, 128), s), f"shapes-{s}") for s in range(4)]


@pytest.mark.parametrize("level", ["image", "object"])
def test_exported_classifier_passes_bioimageio_core_offline(tmp_path, level):
    api.train_classification(tmp_path / "run", data=_data(level), level=level, arch="tiny", size=32, epochs=1, batch=8, device="cpu")
    out = tmp_path / f"{level}-classifier.zip"
    assert main(["zoo", "export", str(tmp_path / "run"), "--out", str(out), "--name", f"Tiny {level} classifier", "--authors", "Test Author", "--license", "MIT"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = core.test_model(out)  # every weight format in the package
    errors = [f"{d.name}: {[e.msg[:300] for e in d.errors]}" for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", errors
