"""Folder evaluation: pairing by name (incl. ``_labels``), formats, summary arithmetic, CSV, errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_impc_dl.errors import InputError
from napari_impc_dl.measure.evaluate import CSV_COLUMNS, evaluate_folders


def _labels(boxes, shape=(32, 32)):
    lab = np.zeros(shape, np.uint16)
    for i, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        lab[y0:y1, x0:x1] = i
    return lab


A = _labels([(0, 8, 0, 8), (10, 20, 10, 20)])
B = _labels([(0, 8, 0, 8), (20, 30, 0, 10), (20, 30, 20, 30)])
C = _labels([(5, 15, 5, 15)])


@pytest.fixture
def folders(tmp_path):
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    for name, lab in (("a", A), ("b", B), ("c", C)):
        tifffile.imwrite(truth / f"{name}.tif", lab)
    tifffile.imwrite(pred / "a_labels.tif", A * 3)  # same objects, other ids
    b_pred = B.copy()
    b_pred[b_pred == 3] = 0  # one object missed
    b_pred[0:5, 25:30] = 9  # one false positive
    np.save(pred / "b.npy", b_pred)  # plain same-stem match
    tifffile.imwrite(pred / "extra_labels.tif", C)  # no truth for it
    (pred / ".hidden_labels.tif").write_bytes(b"junk")  # ignored
    return pred, truth


def test_pairs_by_name_scores_and_reports_missing(folders):
    pred, truth = folders
    s = evaluate_folders(pred, truth)
    assert s["n_images"] == 3 and s["iou_threshold"] == 0.5
    assert s["missing_predictions"] == ["c.tif"]
    assert s["unmatched_predictions"] == ["extra_labels.tif"]
    rows = {r["image"]: r for r in s["rows"]}
    assert rows["a"]["f1"] == 1.0 and rows["a"]["pred_file"] == "a_labels.tif"
    assert (rows["b"]["tp"], rows["b"]["fp"], rows["b"]["fn"]) == (2, 1, 1)
    assert (rows["c"]["n_pred"], rows["c"]["fn"], rows["c"]["f1"]) == (0, 1, 0.0)
    assert s["f1_mean"] == pytest.approx((1.0 + 4 / 6 + 0.0) / 3)
    assert (s["tp"], s["fp"], s["fn"]) == (4, 1, 2)
    assert s["f1_pooled"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert s["precision_pooled"] == pytest.approx(4 / 5) and s["recall_pooled"] == pytest.approx(4 / 6)
    assert s["iou_matched_pooled"] == 1.0
    assert s["iou_matched_mean"] == pytest.approx((1 + 1 + 0) / 3)


def test_labels_suffix_wins_and_threshold_is_passed_on(folders):
    pred, truth = folders
    tifffile.imwrite(pred / "a.tif", np.zeros_like(A))  # would score 0 if it were used
    shifted = np.roll(A, 3, axis=1)  # IoU 5/11 for the 8 px box, 7/13 for the 10 px box
    tifffile.imwrite(pred / "a_labels.tif", shifted)
    rows = {r["image"]: r for r in evaluate_folders(pred, truth)["rows"]}
    assert rows["a"]["pred_file"] == "a_labels.tif" and rows["a"]["tp"] == 1
    rows = {r["image"]: r for r in evaluate_folders(pred, truth, iou_threshold=0.4)["rows"]}
    assert rows["a"]["tp"] == 2


def test_zarr_png_and_ome_tif_inputs(tmp_path):
    import imageio.v3 as iio
    import zarr

    truth, pred = tmp_path / "t", tmp_path / "p"
    truth.mkdir()
    pred.mkdir()
    tifffile.imwrite(truth / "z.tif", A)
    tifffile.imwrite(truth / "g.ome.tif", B)
    tifffile.imwrite(truth / "q.tiff", C)
    arr = zarr.create_array(store=str(pred / "z_labels.zarr"), shape=A.shape, dtype="uint16", zarr_format=3)
    arr[:] = A
    group = zarr.open_group(str(pred / "g_labels.zarr"), mode="w")  # OME-Zarr-like: level "0"
    group.create_array("0", shape=(1,) + B.shape, dtype="uint16")[:] = B[None]
    iio.imwrite(pred / "q_labels.png", C.astype(np.uint8))
    s = evaluate_folders(pred, truth)
    assert s["n_images"] == 3 and s["missing_predictions"] == [] and s["f1_mean"] == 1.0


def test_csv_is_written_atomically(folders, monkeypatch):
    pred, truth = folders
    out = pred.parent / "out" / "scores.csv"
    s = evaluate_folders(pred, truth, out_csv=out)
    assert s["out_csv"] == str(out)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["image"] for r in rows] == ["a", "b", "c"]
    assert float(rows[1]["f1"]) == pytest.approx(4 / 6, abs=1e-6)
    before = out.read_bytes()

    def broken(self, row):
        raise RuntimeError("disk pulled out")

    monkeypatch.setattr(csv.DictWriter, "writerow", broken)
    with pytest.raises(RuntimeError):
        evaluate_folders(pred, truth, out_csv=out)
    assert out.read_bytes() == before  # the old table is untouched
    assert [p.name for p in out.parent.iterdir()] == ["scores.csv"]  # no temp file left


def test_missing_folder_and_no_pairs(tmp_path, folders):
    pred, truth = folders
    with pytest.raises(InputError, match="does not exist"):
        evaluate_folders(tmp_path / "nope", truth)
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "zzz_labels.tif", A)
    with pytest.raises(InputError) as err:
        evaluate_folders(other, truth)
    msg = str(err.value)
    assert "a.tif" in msg and "zzz_labels.tif" in msg and "_labels" in msg


def test_shape_mismatch_names_the_file(folders):
    pred, truth = folders
    tifffile.imwrite(pred / "a_labels.tif", np.zeros((16, 16), np.uint16))
    with pytest.raises(InputError, match="a_labels.tif"):
        evaluate_folders(pred, truth)


def test_unreadable_file_is_input_error(folders):
    pred, truth = folders
    (pred / "a_labels.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="a_labels.tif"):
        evaluate_folders(pred, truth)
