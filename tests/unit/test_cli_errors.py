"""Bad input: one clear line on stderr, exit status 2, and no output files at all."""

import numpy as np
import pytest
import tifffile

from napari_impc_dl.cli import main


def _segment(capsys, inputs, out, *extra):
    rc = main(["segment", *map(str, inputs), "--out", str(out), *map(str, extra)])
    err = capsys.readouterr().err.strip()
    return rc, err


def _assert_clean_failure(rc, err, out, *words):
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    for w in words:
        assert w.lower() in err.lower(), err
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture
def good_tif(tmp_path):
    from napari_impc_dl.synthetic import make_nuclei_image

    img, _ = make_nuclei_image((128, 128), seed=3)
    p = tmp_path / "good.tif"
    tifffile.imwrite(p, img)
    return p


def test_corrupt_file(tmp_path, capsys, tiny_checkpoint):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x13" * 64)
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [bad], out, "--model", tiny_checkpoint), out, "broken.tif")


def test_truncated_tiff(tmp_path, capsys, tiny_checkpoint, good_tif):
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good_tif.read_bytes()[:2000])
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [cut], out, "--model", tiny_checkpoint), out, "cut.tif")


def test_unsupported_dimensions(tmp_path, capsys, tiny_checkpoint):
    p = tmp_path / "line.npy"
    np.save(p, np.arange(100, dtype=np.uint16))
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [p], out, "--model", tiny_checkpoint), out, "line.npy")


@pytest.mark.parametrize("value", [0, 1234])
def test_constant_image(tmp_path, capsys, tiny_checkpoint, value):
    p = tmp_path / "flat.tif"
    tifffile.imwrite(p, np.full((64, 64), value, np.uint16))
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [p], out, "--model", tiny_checkpoint), out, "constant")


def test_empty_image(tmp_path, capsys, tiny_checkpoint):
    p = tmp_path / "empty.npy"
    np.save(p, np.zeros((0, 0), np.uint16))
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [p], out, "--model", tiny_checkpoint), out, "empty.npy")


def test_wrong_channel_count_names_the_fix(tmp_path, capsys, tiny_checkpoint):
    from imageio.v3 import imwrite

    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    p = tmp_path / "rgb.png"
    imwrite(p, rgb)
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [p], out, "--model", tiny_checkpoint), out, "3", "--channel")
    rc, err = _segment(capsys, [p], out, "--model", tiny_checkpoint, "--channel", "1")  # and the fix works
    assert rc == 0 and (out / "rgb_labels.tif").exists()


def test_output_folder_not_writable(tmp_path, capsys, tiny_checkpoint, good_tif):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "results"
    rc, err = _segment(capsys, [good_tif], out, "--model", tiny_checkpoint)
    _assert_clean_failure(rc, err, out, "output folder", "--out")


def test_nan_filled_float_image(tmp_path, capsys, tiny_checkpoint):
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, np.full((64, 64), np.nan, np.float32))
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [p], out, "--model", tiny_checkpoint), out, "NaN")


def test_one_bad_input_among_good_ones_writes_nothing(tmp_path, capsys, tiny_checkpoint, good_tif):
    bad = tmp_path / "zz_flat.tif"
    tifffile.imwrite(bad, np.zeros((64, 64), np.uint16))
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [good_tif, bad], out, "--model", tiny_checkpoint), out, "zz_flat")


def test_missing_file_and_unknown_preset(tmp_path, capsys, good_tif):
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [tmp_path / "nope.tif"], out, "--model", str(tmp_path / "m.safetensors")), out, "m.safetensors")
    _assert_clean_failure(*_segment(capsys, [good_tif], out, "--preset", "mitochondria"), out, "mitochondria", "nuclei")


def test_bad_parameters(tmp_path, capsys, tiny_checkpoint, good_tif):
    out = tmp_path / "out"
    _assert_clean_failure(*_segment(capsys, [good_tif], out, "--model", tiny_checkpoint, "--tile", "8"), out, "tile")
    _assert_clean_failure(*_segment(capsys, [good_tif], out, "--model", tiny_checkpoint, "--device", "tpu"), out, "device")
    _assert_clean_failure(*_segment(capsys, [good_tif], out, "--model", tiny_checkpoint, "--foreground-threshold", "1.5"), out, "threshold")
