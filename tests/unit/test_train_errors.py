"""Bad training input: one clear line on stderr, exit status 2, and nothing half-written in --out."""

import numpy as np
import pytest
import tifffile

from napari_impc_dl.cli import main


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err.strip()


def _clean(rc, err, out, *words):
    assert rc == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w.lower() in err.lower(), err
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture(scope="module")
def seg_dir(tmp_path_factory):
    from napari_impc_dl.synthetic import write_nuclei_dataset

    d = tmp_path_factory.mktemp("seg")
    write_nuclei_dataset(d, 4, size=64, seed=1)
    return d


SEG_FAST = ("--arch", "tiny", "--patch", "32", "--batch", "2", "--epochs", "1", "--device", "cpu")


def _seg(capsys, images, masks, out, *extra):
    return _run(capsys, "train", "segmentation", "--images", images, "--masks", masks, "--out", out, *SEG_FAST, *extra)


def test_masks_that_do_not_pair(tmp_path, capsys, seg_dir):
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in sorted((seg_dir / "masks").iterdir())[:3]:
        (masks / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    _clean(*_seg(capsys, seg_dir / "images", masks, out), out, "do not pair", "without a mask")


@pytest.mark.parametrize("bad,word", [("float", "not an instance mask"), ("shape", "but its image is"), ("binary", "binary")])
def test_masks_that_are_not_instance_masks(tmp_path, capsys, seg_dir, bad, word):
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in sorted((seg_dir / "masks").iterdir()):
        m = tifffile.imread(p)
        if p.name.endswith("0001.tif"):
            m = {"float": m.astype(np.float32), "shape": m[:40], "binary": (m > 0).astype(np.uint8)}[bad]
        tifffile.imwrite(masks / p.name, m)
    out = tmp_path / "out"
    _clean(*_seg(capsys, seg_dir / "images", masks, out), out, word)


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    out = tmp_path / "out"
    _clean(*_seg(capsys, tmp_path / "i", tmp_path / "m", out), out, "holds no images")


def test_weights_that_do_not_fit(tmp_path, capsys, seg_dir):
    import torch

    from napari_impc_dl.models import registry

    torch.save(registry.build(registry.architecture("resnet18", 1)).state_dict(), tmp_path / "other.pt")
    out = tmp_path / "out"
    _clean(*_seg(capsys, seg_dir / "images", seg_dir / "masks", out, "--from", tmp_path / "other.pt"), out, "do not fit")


def test_out_inside_a_file(tmp_path, capsys, seg_dir):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" / "out"
    _clean(*_seg(capsys, seg_dir / "images", seg_dir / "masks", out), out, "cannot write")


def test_unwritable_out(tmp_path, capsys, seg_dir):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if __import__("os").access(ro, __import__("os").W_OK):
            pytest.skip("running as a user who can write anywhere")
        out = ro / "out"
        _clean(*_seg(capsys, seg_dir / "images", seg_dir / "masks", out), out, "cannot write")
    finally:
        ro.chmod(0o700)


def test_time_limit_shorter_than_one_step(tmp_path, capsys, seg_dir):
    out = tmp_path / "out"
    _clean(*_seg(capsys, seg_dir / "images", seg_dir / "masks", out, "--time-limit", "0.00001"), out, "shorter than one training step")


def test_resume_with_other_settings(tmp_path, capsys, seg_dir):
    out = tmp_path / "out"
    assert _seg(capsys, seg_dir / "images", seg_dir / "masks", out)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rc, err = _seg(capsys, seg_dir / "images", seg_dir / "masks", out, "--resume", "--lr", "0.01")
    assert rc == 2 and err.startswith("error: ") and "other settings" in err and "lr" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    rc, err = _seg(capsys, seg_dir / "images", seg_dir / "masks", out)
    assert rc == 2 and "already holds a trained model" in err


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory):
    from napari_impc_dl.synthetic.views import write_views_dataset

    d = tmp_path_factory.mktemp("views")
    write_views_dataset(d, 3, size=64, seed=1)
    return d


CLS_FAST = ("--arch", "tiny", "--size", "32", "--epochs", "1", "--device", "cpu")


def test_one_class_only(tmp_path, capsys, class_dir):
    data = tmp_path / "data"
    (data / "lateral").mkdir(parents=True)
    for p in (class_dir / "lateral").iterdir():
        (data / "lateral" / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    _clean(*_run(capsys, "train", "classification", "--data", data, "--out", out, *CLS_FAST), out, "only one class")


def test_class_with_no_examples(tmp_path, capsys, class_dir):
    data = tmp_path / "data"
    for c in ("lateral", "dorsoventral"):
        (data / c).mkdir(parents=True)
        for p in (class_dir / c).iterdir():
            (data / c / p.name).write_bytes(p.read_bytes())
    (data / "ventrodorsal").mkdir()
    out = tmp_path / "out"
    _clean(*_run(capsys, "train", "classification", "--data", data, "--out", out, *CLS_FAST), out, "holds no images", "ventrodorsal")


def test_object_csv_naming_missing_objects(tmp_path, capsys):
    from napari_impc_dl.synthetic.shapes import write_shapes_dataset

    write_shapes_dataset(tmp_path / "s", 3, size=128, seed=4)
    csv = tmp_path / "s" / "classes.csv"
    csv.write_text(csv.read_text() + f"{sorted((tmp_path / 's' / 'images').iterdir())[0].name},999,rod\n")
    out = tmp_path / "out"
    rc, err = _run(capsys, "train", "classification", "--level", "object", "--classes", csv, "--images", tmp_path / "s" / "images", "--labels", tmp_path / "s" / "labels", "--out", out, *CLS_FAST)
    _clean(rc, err, out, "do not exist in the mask")
