"""Outlines and masks for Fiji, QuPath and the DSB's CSV: each written, read back with the format's own library
(roifile, json + shapely, our RLE decoder) and rasterised by pixel centres, gives every object back (IoU 1)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_impc_dl.io import shape_exports as S
from napari_impc_dl.io.outlines import iter_outlines, rasterize


@pytest.fixture(scope="module")
def labels():
    """Crowded synthetic nuclei plus the hard cases: a hole with an island in it, two pieces, diagonal contact."""
    from napari_impc_dl.synthetic.nuclei import make_nuclei_image

    _, lab = make_nuclei_image((260, 300), seed=3, density=0.45)
    lab[180:230, 220:270] = 900
    lab[192:218, 232:258] = 0  # a hole ...
    lab[200:210, 240:250] = 901  # ... with another object in it
    lab[5:9, 5:9] = 902
    lab[9:13, 9:13] = 902  # touching only at a corner: one 8-connected object, two pieces of outline
    lab[30:36, 150:156] = 903
    lab[42:48, 150:156] = 903  # two pieces (a chromosome half hidden by another)
    return lab


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_outlines_give_every_object_back_exactly(labels):
    outs = {o.label: o for o in iter_outlines(labels)}
    assert set(outs) == set(np.unique(labels)[1:])
    for lab, o in outs.items():
        assert o.geometry.is_valid
        assert _iou(rasterize(o.geometry, labels.shape), labels == lab) == 1.0, lab
    # pixels meeting only at a corner: two pieces touching at that point (outlines run along pixel edges only)
    assert (outs[900].n_holes, outs[901].n_holes, outs[902].n_parts, outs[903].n_parts) == (1, 0, 2, 2)
    for o in outs.values():  # every vertex on the pixel grid
        for part in (o.geometry.geoms if hasattr(o.geometry, "geoms") else [o.geometry]):
            xy = np.asarray(part.exterior.coords)
            assert np.allclose(xy, np.round(xy))


def test_outlines_of_a_zarr_label_image_cut_by_bounding_box_equal_the_numpy_ones(labels, tmp_path):
    import zarr

    from napari_impc_dl.measure.regions import measure_objects

    ids = np.unique(labels)[1:]
    relab = np.searchsorted(np.concatenate([[0], ids]), labels).astype(np.int32)  # consecutive ids for the measurer
    z = zarr.open_array(tmp_path / "l.zarr", mode="w", shape=labels.shape, chunks=(64, 64), dtype=relab.dtype)
    z[:] = relab
    objects = pd.DataFrame(measure_objects(relab, 1, len(ids), None, []))
    a = {o.label: o.geometry for o in iter_outlines(z, objects)}
    b = {o.label: o.geometry for o in iter_outlines(relab)}
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)


def test_roi_set_read_by_roifile(labels, tmp_path):
    import roifile

    objects = pd.DataFrame({"label": [900, 903], "class": ["ring", "chromosome"]})
    path, n = S.write_roi_zip(tmp_path / "x_rois.zip", iter_outlines(labels), objects)
    rois = roifile.roiread(path)
    assert n == len(rois) == len(np.unique(labels)) - 1
    names = [r.name for r in rois]
    assert "00900 ring" in names and "00903 chromosome" in names and "00001" in names
    composite = {r.name for r in rois if r.composite}
    assert composite == {"00900 ring", "00902", "00903 chromosome"}  # holes and pieces: shape ROIs; the rest polygons
    for name, mask in S.read_roi_zip(path, labels.shape).items():
        assert _iou(mask, labels == int(name.split()[0])) >= 0.98, name


def test_geojson_is_qupath_detections_with_classes_colours_and_measurements(labels, tmp_path):
    from shapely.geometry import shape

    ids = np.unique(labels)[1:]
    objects = pd.DataFrame({"label": ids, "class": ["a" if i % 2 else "b" for i in ids], "area": [(labels == i).sum() for i in ids], "mean_c0": 1.5})
    path, n = S.write_geojson(tmp_path / "x.geojson", iter_outlines(labels), objects, {"a": "#ff0000", "b": "#00ff00"})
    g = json.loads(path.read_text())
    assert g["type"] == "FeatureCollection" and n == len(g["features"]) == len(ids)
    for f in g["features"]:
        p = f["properties"]
        lab = int(p["name"])
        assert p["objectType"] == "detection"
        assert p["classification"] == {"name": "a" if lab % 2 else "b", "color": [255, 0, 0] if lab % 2 else [0, 255, 0]}
        assert p["measurements"]["area"] == (labels == lab).sum() and p["measurements"]["mean_c0"] == 1.5
        assert _iou(rasterize(shape(f["geometry"]), labels.shape), labels == lab) == 1.0
    kinds = {int(f["properties"]["name"]): f["geometry"]["type"] for f in g["features"]}
    assert kinds[903] == "MultiPolygon" and kinds[900] == "Polygon" and len(next(f for f in g["features"] if f["properties"]["name"] == "900")["geometry"]["coordinates"]) == 2


def test_run_length_encoding_follows_the_dsb_convention_and_round_trips(labels, tmp_path):
    tiny = np.zeros((4, 3), np.int32)
    tiny[1:3, 0] = 1  # column 0, rows 1-2 -> pixels 2, 3 (1-based, down the columns)
    tiny[3, 0] = tiny[0, 1] = 2  # a run that wraps from the bottom of column 0 to the top of column 1
    rows = S.rle_rows("tiny", tiny)
    assert rows == [["tiny", 1, 4, 3, "2 2"], ["tiny", 2, 4, 3, "4 2"]]
    path, n = S.write_masks_csv(tmp_path / "masks.csv", S.rle_rows("nuclei", labels) + rows)
    back = S.decode_masks_csv(path)
    assert np.array_equal(back["nuclei"], labels) and np.array_equal(back["tiny"], tiny)
    assert n == len(np.unique(labels)) - 1 + 2


def test_evaluate_reads_a_masks_csv(labels, tmp_path):
    import tifffile

    from napari_impc_dl import api

    (tmp_path / "truth").mkdir()
    tifffile.imwrite(tmp_path / "truth" / "nuclei.tif", labels)
    S.write_masks_csv(tmp_path / "masks.csv", S.rle_rows("nuclei", labels))
    summary = api.evaluate(tmp_path / "masks.csv", tmp_path / "truth")
    assert summary["n_images"] == 1 and summary["f1_mean"] == 1.0 and summary["rows"][0]["pred_file"] == "masks.csv#nuclei"


def test_segment_export_and_the_export_api(tmp_path):
    import roifile
    import tifffile

    from napari_impc_dl import api
    from napari_impc_dl.errors import InputError
    from napari_impc_dl.synthetic.nuclei import make_nuclei_image

    img, _ = make_nuclei_image((160, 160), seed=8, density=0.3)
    tifffile.imwrite(tmp_path / "a.tif", img)
    rep = api.segment([tmp_path / "a.tif"], tmp_path / "out", model="nuclei", export=["roi", "geojson", "rle"], device="cpu")
    out = tmp_path / "out"
    n = rep.counts[0]["n_objects"]
    assert len(roifile.roiread(out / "a_rois.zip")) == n
    assert len(json.loads((out / "a.geojson").read_text())["features"]) == n
    labels = tifffile.imread(out / "a_labels.tif")
    assert np.array_equal(S.decode_masks_csv(out / "masks.csv")["a"], labels)
    res = api.measure_labels(labels, img, name="a")
    rep2 = api.export([res], tmp_path / "exp", masks="none", tables=False, shapes=["geojson", "rle"])
    assert sorted(p.name for p in rep2.files) == ["a.geojson", "masks.csv"]
    stack = api.measure_labels(np.stack([labels, labels]), None, name="s", stack_axes="Z")
    with pytest.raises(InputError, match="2D"):
        api.export([stack], tmp_path / "exp2", shapes=["roi"])
    with pytest.raises(InputError, match="Unknown export format"):
        api.export([res], tmp_path / "exp3", shapes=["svg"])
    assert not (tmp_path / "exp2").exists() or not any((tmp_path / "exp2").iterdir())
