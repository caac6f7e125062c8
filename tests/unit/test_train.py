"""The training loop: files written, transfer modes, resume, cancel, and the CLI's train / classify verbs.

Tiny models on 64-128 px synthetic data: each test takes seconds. Accuracy runs that train for
minutes live in benchmarks/eval_training.py.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_impc_dl import api
from napari_impc_dl.errors import CancelToken


@pytest.fixture(scope="module")
def seg_pairs():
    from napari_impc_dl.synthetic import make_nuclei_image

    return [(*make_nuclei_image((96, 96), seed=500 + i), f"n{i}") for i in range(6)]


@pytest.fixture(scope="module")
def shape_items():
    from napari_impc_dl.synthetic.shapes import make_shapes_image

    return [(*make_shapes_image((128, 128), seed=600 + i), f"s{i}") for i in range(5)]


SEG = dict(arch="tiny", patch=64, batch=4, device="cpu", patience=0)
CLS = dict(level="object", arch="tiny", size=32, batch=16, device="cpu", patience=0)


def test_segmentation_run_writes_model_and_reports(tmp_path, seg_pairs):
    steps = []
    r = api.train_segmentation(tmp_path / "m", images=seg_pairs, epochs=2, progress=steps.append, **SEG)
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"model.safetensors", "last.safetensors", "train_state.pt", "history.csv", "curves.png", "report.json", "config.json"} <= names
    assert [h["epoch"] for h in r.history] == [1, 2] and r.stopped == "completed"
    assert {"val_f1", "val_iou", "val_precision", "val_recall", "val_loss", "train_loss", "lr", "seconds"} <= set(r.history[0])
    kinds = {s["kind"] for s in steps}
    assert kinds == {"step", "epoch"} and all(s["eta_s"] >= 0 for s in steps)
    model = api.load_model(tmp_path / "m", device="cpu")  # the folder works as a model
    assert model.card.provenance.training["config"]["patch"] == 64
    assert "f1" in model.card.provenance.metrics
    res = api.segment_image(seg_pairs[0][0], model)
    assert res.labels.shape == (96, 96)


def _encoder_tensors(state, prefix="encoder."):
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def test_head_only_keeps_encoder_bit_identical_and_fine_tune_changes_it(tmp_path, seg_pairs, tiny_checkpoint):
    src = load_file(str(tiny_checkpoint))
    api.train_segmentation(tmp_path / "h", images=seg_pairs, epochs=1, from_model=str(tiny_checkpoint), mode="head-only", **SEG)
    head = load_file(str(tmp_path / "h" / "last.safetensors"))
    enc = _encoder_tensors(src)
    assert enc and all(torch.equal(head[k], v) for k, v in enc.items())  # weights and BatchNorm statistics
    assert any(not torch.equal(head[k], src[k]) for k in src if k.startswith("decoder."))
    api.train_segmentation(tmp_path / "f", images=seg_pairs, epochs=1, from_model=str(tiny_checkpoint), mode="fine-tune", **SEG)
    fine = load_file(str(tmp_path / "f" / "last.safetensors"))
    assert any(not torch.equal(fine[k], v) for k, v in enc.items() if not k.endswith("num_batches_tracked"))


def test_classifier_head_only_from_a_segmentation_encoder(tmp_path, shape_items, tiny_checkpoint):
    r = api.train_classification(tmp_path / "c", data=shape_items, epochs=1, from_model=str(tiny_checkpoint), mode="head-only", input="image", **CLS)
    assert r.transfer["loaded"] > 0.5 * r.transfer["of"]
    seg = load_file(str(tiny_checkpoint))
    out = load_file(str(tmp_path / "c" / "last.safetensors"))
    pairs = [(k, "encoder.model." + k) for k in out if "encoder.model." + k in seg]
    assert len(pairs) > 10 and all(torch.equal(out[k], seg[s]) for k, s in pairs)


def test_resume_continues_epochs_schedule_and_history(tmp_path, seg_pairs):
    straight = api.train_segmentation(tmp_path / "a", images=seg_pairs, epochs=3, **SEG)
    cancel = CancelToken()

    def stop_after_two(rec):
        if rec["kind"] == "epoch" and rec["epoch"] == 2:
            cancel.cancel()

    first = api.train_segmentation(tmp_path / "b", images=seg_pairs, epochs=3, progress=stop_after_two, cancel=cancel, **SEG)
    assert first.stopped == "cancelled" and len(first.history) == 2
    resumed = api.train_segmentation(tmp_path / "b", images=seg_pairs, epochs=3, resume=True, **SEG)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.history, resumed.history):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    with open(tmp_path / "b" / "history.csv") as f:
        assert len(f.read().strip().splitlines()) == 4


def test_cancel_mid_epoch_leaves_a_loadable_last_checkpoint(tmp_path, seg_pairs):
    from napari_impc_dl.models.checkpoint import load_checkpoint

    cancel = CancelToken()

    def stop(rec):
        if rec["kind"] == "step" and rec["step"] == 1:
            cancel.cancel()

    r = api.train_segmentation(tmp_path / "m", images=seg_pairs, epochs=2, progress=stop, cancel=cancel, **SEG)
    assert r.stopped == "cancelled" and r.model is None and r.history == []
    net, card = load_checkpoint(tmp_path / "m" / "last.safetensors")
    assert card.task == "instance-segmentation"


def test_object_classifier_train_classify_and_segment_with_it(tmp_path, shape_items, tiny_checkpoint):
    import pandas as pd
    import tifffile

    r = api.train_classification(tmp_path / "c", data=shape_items, epochs=2, **CLS)
    assert set(r.metrics) >= {"accuracy", "balanced_accuracy", "confusion", "f1_rod", "recall_debris"}
    for f in ("confusion.csv", "confusion.png", "per_class.csv"):
        assert (tmp_path / "c" / f).is_file()
    cm = pd.read_csv(tmp_path / "c" / "confusion.csv", index_col=0)
    assert list(cm.columns) == ["debris", "nucleus", "rod"]
    img, lab, _, name = shape_items[0]
    tifffile.imwrite(tmp_path / "s0.tif", img)
    tifffile.imwrite(tmp_path / "s0_labels.tif", lab)
    rep = api.classify([tmp_path / "s0.tif"], tmp_path / "out", model=tmp_path / "c", labels=tmp_path, device="cpu")
    objects = pd.read_csv(tmp_path / "out" / "objects.csv")
    assert len(objects) == lab.max() and set(objects["class"]) <= {"rod", "nucleus", "debris"}
    assert np.allclose(objects[["p_debris", "p_nucleus", "p_rod"]].sum(1), 1, atol=1e-5)
    counts = pd.read_csv(tmp_path / "out" / "counts.csv")
    assert counts.loc[0, ["n_debris", "n_nucleus", "n_rod"]].sum() == counts.loc[0, "n_objects"]
    seg = api.segment([tmp_path / "s0.tif"], tmp_path / "seg", model=tiny_checkpoint, classifier=tmp_path / "c", device="cpu")
    so = pd.read_csv(seg.objects_csv)
    assert {"class", "p_rod", "classifier_name", "classifier_hash", "model_hash"} <= set(so.columns)
    assert "n_rod" in pd.read_csv(seg.counts_csv).columns


def test_image_classifier_folders_predictions_and_evaluate(tmp_path, capsys):
    import pandas as pd

    from napari_impc_dl.cli import main
    from napari_impc_dl.synthetic.views import write_views_dataset

    write_views_dataset(tmp_path / "train", 6, size=64, seed=1)
    paths = write_views_dataset(tmp_path / "test", 2, size=64, seed=2)
    rc = main(["train", "classification", "--data", str(tmp_path / "train"), "--out", str(tmp_path / "m"), "--arch", "tiny", "--size", "32", "--epochs", "2", "--device", "cpu"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stopped"] == "completed"
    rc = main(["classify", *map(str, paths), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "pred"), "--device", "cpu"])
    assert rc == 0
    pred = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert list(pred.columns) == ["image", "class", "p_dorsoventral", "p_lateral", "model_name", "model_hash"] and len(pred) == 4
    truth = tmp_path / "truth.csv"
    truth.write_text("path,class\n" + "".join(f"{p.name},{p.parent.name}\n" for p in paths))
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(tmp_path / "pred" / "predictions.csv"), "--truth", str(truth)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 4 and 0 <= summary["accuracy"] <= 1 and len(summary["confusion"]) == 2


def test_split_by_image_keeps_images_whole_and_every_class_on_both_sides(shape_items):
    from napari_impc_dl.training.data import Sample, class_counts, split_by_image

    samples = [Sample(n, img[None], lab, objects=cls) for img, lab, cls, n in shape_items]
    tr, va = split_by_image(samples, 0.1, seed=3)
    assert {s.name for s in tr}.isdisjoint({s.name for s in va})
    assert set(class_counts(va)) == set(class_counts(tr)) == {"rod", "nucleus", "debris"}
    assert [s.name for s in split_by_image(samples, 0.1, seed=3)[1]] == [s.name for s in va]


def test_classification_metrics_by_hand():
    from napari_impc_dl.training.tasks import classification_metrics

    m = classification_metrics(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 1, 0]), ["a", "b", "c"])
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["precision_a"] == pytest.approx(2 / 3) and m["recall_c"] == 0


def test_mismatched_weights_are_refused_with_what_does_not_fit(tmp_path):
    from napari_impc_dl.errors import InputError
    from napari_impc_dl.models import registry
    from napari_impc_dl.training.transfer import load_matching

    net = registry.build(registry.architecture("tiny", 1))
    other = registry.build(registry.architecture("resnet18", 1)).state_dict()
    with pytest.raises(InputError, match="do not fit") as e:
        load_matching(net, other, label="The weights of x.pt")
    assert "\n" not in str(e.value)


def test_imagenet_offline_is_one_clear_error(monkeypatch):
    import timm

    from napari_impc_dl.errors import InputError
    from napari_impc_dl.models.classifiers import build_classifier, classifier_architecture

    real = timm.create_model

    def offline(*a, **kw):
        if kw.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(*a, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(InputError, match="Could not download ImageNet weights") as e:
        build_classifier(classifier_architecture("tiny", 3, 2), pretrained="imagenet")
    assert "--from" in str(e.value)


def test_fine_tune_from_a_model_zoo_package(tmp_path, seg_pairs, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))
    pkg = api.export_model(tiny_checkpoint, tmp_path / "tiny.zip", authors=["Test Author"], license="MIT").path
    r = api.train_segmentation(tmp_path / "m", images=seg_pairs, epochs=1, from_model=str(pkg), mode="head-only", **SEG)
    assert r.transfer["loaded"] == r.transfer["of"] and "package" in r.transfer["from"]
    src = load_file(str(tiny_checkpoint))
    out = load_file(str(tmp_path / "m" / "last.safetensors"))
    assert all(torch.equal(out[k], v) for k, v in src.items() if k.startswith("encoder."))
