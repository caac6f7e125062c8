"""Classifiers and the BioImage Model Zoo: export (image and object level), the package's own test with both
weight formats, and import back: the same probabilities as the checkpoint, our own and foreign-looking packages."""

import shutil
import zipfile

import numpy as np
import pytest

pytest.importorskip("bioimageio.spec")  # the zoo extra

import zoo_packages as Z  # noqa: E402
from napari_impc_dl import api  # noqa: E402
from napari_impc_dl.classify.predict import classify_images, classify_objects  # noqa: E402
from napari_impc_dl.cli import main  # noqa: E402
from napari_impc_dl.errors import InputError  # noqa: E402
from napari_impc_dl.io.image import ImageSource  # noqa: E402


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))


def _export(folder, out, name):
    rc = main(["zoo", "export", str(folder), "--out", str(out), "--name", name, "--authors", "Ada Lovelace", "--license", "MIT", "--tags", "test"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def image_level(tmp_path_factory):
    """A tiny image-level classifier (training folder) and its package."""
    from napari_impc_dl.synthetic.views import make_view_image

    d = tmp_path_factory.mktemp("cls-image")
    data = [(make_view_image(v, 64, s), v, f"{v}-{s}") for s in range(6) for v in ("dorsoventral", "lateral")]
    api.train_classification(d / "run", data=data, level="image", arch="tiny", size=32, epochs=1, batch=8, device="cpu")
    return d / "run", _export(d / "run", d / "views.zip", "Tiny view classifier")


@pytest.fixture(scope="module")
def object_level(tmp_path_factory):
    """A tiny object-level classifier (image + mask crops) and its package."""
    from napari_impc_dl.synthetic.shapes import make_shapes_image

    d = tmp_path_factory.mktemp("cls-object")
    data = [(*make_shapes_image((128, 128), s), f"shapes-{s}") for s in range(4)]
    api.train_classification(d / "run", data=data, level="object", arch="tiny", size=32, epochs=1, batch=8, device="cpu")
    return d / "run", _export(d / "run", d / "shapes.zip", "Tiny shapes classifier")


def _views():
    from napari_impc_dl.synthetic.views import make_view_image

    # portrait and landscape planes: the resize rule matters
    return [ImageSource.from_array(make_view_image(v, 72, 100 + s)[:, 6:60] if s % 2 else make_view_image(v, 72, 100 + s)[8:64], name=f"{v}-{s}") for s in range(3) for v in ("dorsoventral", "lateral")]


def _p(table):
    return table[[c for c in table.columns if c.startswith("p_")]].to_numpy()


def test_image_package_contents(image_level):
    import yaml

    with zipfile.ZipFile(image_level[1]) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
        x = np.load(z.open("test_input.npy"))
        y = np.load(z.open("test_output.npy"))
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert [a["size"] for a in inp["axes"][2:]] == [32, 32]  # fixed: the classifier's input size
    assert "scale_range" in [p["id"] for p in inp["preprocessing"]]
    assert [a["type"] for a in out["axes"]] == ["batch", "channel"] and out["axes"][1]["channel_names"] == ["dorsoventral", "lateral"]
    assert out["postprocessing"][0] == {"id": "softmax", "kwargs": {"axis": "channel"}}
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["import_from"] == "timm" and arch["callable"] == "create_model" and arch["kwargs"]["pretrained"] is False
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert {"classification", "image-classification", "napari-impc-dl", "test"} <= set(rdf["tags"])
    assert rdf["config"]["napari_impc_dl"]["card"]["task"] == "classification"
    assert x.shape == (2, 1, 32, 32) and y.shape == (2, 2) and np.allclose(y.sum(1), 1, atol=1e-5)
    for text in ("## Classes", "| dorsoventral |", "Resize rule `pad`", "scale_range", "| accuracy |", "| balanced accuracy |", "| class | precision | recall | F1 |"):
        assert text in readme


def test_object_package_contents(object_level):
    import yaml

    with zipfile.ZipFile(object_level[1]) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
        x = np.load(z.open("test_input.npy"))
    inp = rdf["inputs"][0]
    assert [p["id"] for p in inp["preprocessing"]] == ["ensure_dtype"]  # the input is the prepared crop batch
    assert "prepared crops" in inp["description"] and inp["axes"][1]["channel_names"][-1] == "mask"
    assert x.shape == (4, 2, 32, 32) and set(np.unique(x[:, -1])) <= {0.0, 1.0}
    assert {"classification", "object-classification"} <= set(rdf["tags"])
    assert set(rdf["outputs"][0]["axes"][1]["channel_names"]) == {"debris", "nucleus", "rod"}
    for text in ("prepared crops", "whole image", "Window:", "| balanced accuracy |"):
        assert text in readme


@pytest.mark.parametrize("level", ["image", "object"])
@pytest.mark.parametrize("fmt", ["torchscript", "pytorch_state_dict"])
def test_package_validates_and_passes_its_test(request, level, fmt):
    from napari_impc_dl.zoo.adapter import resolve
    from napari_impc_dl.zoo.spec import describe

    pkg = request.getfixturevalue(f"{level}_level")[1]
    describe(resolve(pkg))  # bioimageio.spec validation, through our reader
    rep = api.test_package(pkg, weights=fmt)  # a state dict builds from timm without --trust-code
    assert rep.passed, rep.lines()
    assert rep.outputs[0].shape == rep.outputs[0].expected_shape and len(rep.outputs[0].shape) == 2
    assert main(["zoo", "test", str(pkg), "--weights", fmt]) == 0


@pytest.mark.parametrize("fmt", ["torchscript", "pytorch_state_dict"])
def test_image_package_gives_the_checkpoints_probabilities(image_level, fmt):
    run, pkg = image_level
    ours, theirs = api.load_classifier(run, device="cpu"), api.load_classifier(pkg, device="cpu", weights=fmt)
    assert theirs.classes == ours.classes and theirs.spec == ours.spec and theirs.info.output_names == ours.classes
    assert theirs.info.extra["weights"] == fmt and not theirs.info.extra["softmax_added"]
    srcs = _views()
    assert np.array_equal(theirs.prepare_image(srcs[1]), ours.prepare_image(srcs[1]))
    a, b = classify_images(ours, srcs), classify_images(theirs, srcs)
    assert list(a["class"]) == list(b["class"])
    np.testing.assert_allclose(_p(b), _p(a), atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "pytorch_state_dict"])
def test_object_package_gives_the_checkpoints_probabilities(object_level, fmt):
    from napari_impc_dl.synthetic.shapes import make_shapes_image

    run, pkg = object_level
    ours, theirs = api.load_classifier(run, device="cpu"), api.load_classifier(pkg, device="cpu", weights=fmt)
    assert theirs.spec == ours.spec and theirs.spec.level == "object"
    img, labels, _ = make_shapes_image((160, 176), seed=11)
    src = ImageSource.from_array(img, name="shapes")
    sample = src.sample(())
    probe = img[None, :40, :40].astype(np.float32)
    assert np.array_equal(theirs.fit_normalizer(sample)(probe), ours.fit_normalizer(sample)(probe))
    a, b = classify_objects(ours, src, labels), classify_objects(theirs, src, labels)
    assert len(a) == len(np.unique(labels)) - 1 and list(a["label"]) == list(b["label"])
    np.testing.assert_allclose(_p(b), _p(a), atol=1e-5)


def test_imported_package_runs_by_library_name(image_level, tmp_path):
    import tifffile

    from napari_impc_dl.synthetic.views import make_view_image

    rep = api.import_model(image_level[1])
    tifffile.imwrite(tmp_path / "view.tif", make_view_image("lateral", 64, 5))
    r = api.classify([tmp_path / "view.tif"], tmp_path / "out", model=rep.name, device="cpu")
    ref = api.classify([tmp_path / "view.tif"], tmp_path / "ref", model=image_level[0], device="cpu")
    np.testing.assert_allclose(_p(r.table), _p(ref.table), atol=1e-5)


@pytest.mark.parametrize("post", ["softmax", "none", "scale_then_softmax"])
def test_foreign_classification_package(image_level, tmp_path, post, monkeypatch):
    """Without our card: image level, size from the input, classes from the output's channel names, the
    package's own preprocessing; a softmax is added when the package outputs raw scores."""
    run, pkg = image_level
    folder = tmp_path / "foreign"
    with zipfile.ZipFile(pkg) as z:
        z.extractall(folder)

    def strip(rdf):
        rdf.pop("config", None)
        if post == "none":
            rdf["outputs"][0]["postprocessing"] = []
            rdf["outputs"][0]["data"] = {"type": "float32"}  # raw scores: no declared range
        if post == "scale_then_softmax":  # an op beyond softmax / sigmoid: runs in torch too, on the batch's device
            steps = rdf["outputs"][0]["postprocessing"]
            key = "id" if str(rdf.get("format_version", "0.5")).startswith("0.5") else "name"
            steps.insert(0, {key: "scale_linear", "kwargs": {"gain": 1.0, "offset": 3.0}})  # softmax ignores a shift

    Z.edit_rdf(folder, strip)
    ours, theirs = api.load_classifier(run, device="cpu"), api.load_classifier(folder, device="cpu")
    assert theirs.card.classification.level == "image" and theirs.spec.input_size == 32 and theirs.classes == ["dorsoventral", "lateral"]
    assert theirs.info.extra["softmax_added"] == (post == "none")
    srcs = _views()
    np.testing.assert_allclose(theirs.prepare_image(srcs[0]), ours.prepare_image(srcs[0]), atol=1e-5)  # scale_range's eps
    if post == "scale_then_softmax":
        import torch

        assert theirs.torch_post is None  # not the softmax-only shortcut: the general torch ops
        x = torch.from_numpy(np.stack([theirs.prepare_image(s) for s in srcs]).astype(np.float32))
        monkeypatch.setattr(torch.Tensor, "numpy", lambda *a, **k: pytest.fail("postprocessing went to the host"))
        y = theirs.forward(x)
        monkeypatch.undo()
        assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    np.testing.assert_allclose(_p(classify_images(theirs, srcs)), _p(classify_images(ours, srcs)), atol=1e-5)
    shutil.rmtree(folder)


def test_segmentation_package_is_refused_as_a_classifier(tmp_path):
    seg, _ = Z.build_v05(tmp_path, kind="torchscript", name="segpkg")
    with pytest.raises(InputError, match="is a segmentation model, not a classifier") as e:
        api.load_classifier(seg, device="cpu")
    assert "segment --model" in e.value.hint


def test_classifier_package_is_refused_as_a_segmentation_model(image_level):
    with pytest.raises(InputError, match="is a classifier .*not a segmentation model"):
        api.load_model(image_level[1], device="cpu")


def test_timm_architecture_needs_trust_only_for_hub_or_files():
    from napari_impc_dl.zoo.adapter import _arch_trusted

    kw = {"model_name": "mobilenetv3_small_050", "pretrained": False, "num_classes": 2, "in_chans": 1}
    lib = {"kind": "library", "import_from": "timm", "callable": "create_model"}
    assert _arch_trusted({**lib, "kwargs": kw})
    assert not _arch_trusted({**lib, "kwargs": {**kw, "model_name": "hf-hub:someone/model"}})
    assert not _arch_trusted({**lib, "kwargs": {**kw, "checkpoint_path": "weights.pth"}})
    assert not _arch_trusted({"kind": "library", "import_from": "timmy", "callable": "create_model", "kwargs": kw})
