"""`zoo export`: a spec 0.5 package that reproduces itself, and export -> import gives the same predictions."""

import json
import zipfile

import numpy as np
import pytest

pytest.importorskip("bioimageio.spec")  # the zoo extra

from napari_impc_dl import api  # noqa: E402
from napari_impc_dl.cli import main
from napari_impc_dl.config import SegmentConfig


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))


@pytest.fixture(scope="session")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-nuclei.zip"
    rc = main([
        "zoo", "export", str(tiny_checkpoint), "--out", str(out), "--name", "Tiny nuclei", "--description", "A tiny test U-Net",
        "--authors", "Ada Lovelace", "Alan Turing", "--license", "MIT", "--cite", "Doe et al. 2024 | 10.1234/abcd.5678", "--tags", "test",
    ])
    assert rc == 0
    return out


def test_package_contents(exported):
    import yaml
    from PIL import Image

    with zipfile.ZipFile(exported) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
        cover = Image.open(z.open("cover.png"))
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "weights.pt", "weights.torchscript"} <= names
    assert rdf["format_version"].startswith("0.5") and rdf["name"] == "Tiny nuclei" and rdf["license"] == "MIT"
    assert [a["name"] for a in rdf["authors"]] == ["Ada Lovelace", "Alan Turing"]
    assert rdf["cite"][0] == {"text": "Doe et al. 2024", "doi": "10.1234/abcd.5678"}
    assert {"napari-impc-dl", "instance-segmentation", "test"} <= set(rdf["tags"])
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["import_from"] == "segmentation_models_pytorch"
    assert all(len(rdf["weights"][f]["sha256"]) == 64 for f in rdf["weights"])
    pre = [p["id"] for p in rdf["inputs"][0]["preprocessing"]]
    assert "scale_range" in pre and [p["id"] for p in rdf["outputs"][0]["postprocessing"]][0] == "sigmoid"
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["foreground", "distance"]
    assert rdf["config"]["napari_impc_dl"]["card"]["name"] == "tiny-test"
    assert cover.size == (512, 256)
    for section in ("## Training data", "## Metrics", "## Limits", "## How to run"):
        assert section in readme


@pytest.mark.parametrize("fmt", ["torchscript", "pytorch_state_dict"])
def test_export_passes_its_own_test(exported, capsys, fmt):
    assert main(["zoo", "test", str(exported), "--weights", fmt]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_export_then_import_gives_identical_predictions(exported, tiny_checkpoint, tmp_path):
    from napari_impc_dl.synthetic import make_nuclei_image

    img, _ = make_nuclei_image((200, 264), seed=5)
    cfg = SegmentConfig(device="cpu", tile=128)
    ours = api.segment_image(img, str(tiny_checkpoint), cfg)
    rep = api.import_model(exported)
    pkg = api.segment_image(img, rep.name, cfg)
    assert np.array_equal(ours.labels, pkg.labels) and ours.n_objects == pkg.n_objects
    d = np.abs(ours.probabilities.astype(int) - pkg.probabilities)
    assert d.max() <= 1 and (d > 0).mean() < 1e-3  # float rounding at a quantisation boundary, at most
    assert pkg.params["foreground_threshold"] == ours.params["foreground_threshold"]  # defaults travel in the card
    meta = json.loads((rep.folder / ".napari-impc-dl.json").read_text())
    assert meta["package_name"] == "Tiny nuclei" and meta["formats"] == ["torchscript", "pytorch_state_dict"]


def test_export_refuses_bad_arguments(tiny_checkpoint, tmp_path, capsys):
    for args, words in (
        (["--authors", "A B", "--license", "not-a-licence"], "license"),
        (["--license", "MIT", "--authors", " "], "author"),
        (["--license", "MIT", "--authors", "A", "--cite", "no reference here"], "DOI or URL"),
    ):
        rc = main(["zoo", "export", str(tiny_checkpoint), "--out", str(tmp_path / "x.zip"), *args])
        err = capsys.readouterr().err
        assert rc == 2 and words.lower() in err.lower(), err
    assert main(["zoo", "export", str(tiny_checkpoint), "--out", str(tmp_path / "x.tar")]) == 2
    assert not any(tmp_path.iterdir())  # no partial package, no staging folder left behind
