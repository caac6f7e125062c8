"""The Export widget and the napari writers / reader / sample data, in a real napari window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui

PLUGIN = "napari-impc-dl"
CLI_OBJECT_COLUMNS_HEAD = ["image", "label", "area", "centroid_y", "centroid_x"]


def segment(viewer, qtbot, wait_idle, image, name):
    """A Labels layer made by the real Segment widget (bundled model) from ``image``."""
    viewer.add_image(image, name=name)
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    seg.image_combo.setCurrentText(name)
    qtbot.mouseClick(seg.run_button, Qt.MouseButton.LeftButton)
    wait_idle(seg, 180)
    return viewer.layers[f"{name} labels"]


def export(qtbot, wait_idle, widget, folder, masks="tif", names=None):
    widget.folder.setText(str(folder))
    widget.masks.setCurrentIndex(widget.masks.findData(masks))
    if names is not None:
        widget.set_chosen(names)
    qtbot.mouseClick(widget.export_button, Qt.MouseButton.LeftButton)
    wait_idle(widget, 120)


@pytest.fixture
def crop(nuclei_768):
    return nuclei_768[0][:384, :384], nuclei_768[1][:384, :384]


def test_export_rows_match_features_and_masks_match_layer(make_napari_viewer, qtbot, wait_idle, tmp_path, crop):
    viewer = make_napari_viewer()
    layer = segment(viewer, qtbot, wait_idle, crop[0], "crop")
    viewer.add_labels(crop[1], name="truth")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    assert widget.chosen_names() == ["crop labels"]  # results of the Segment widget start ticked

    export(qtbot, wait_idle, widget, tmp_path / "tif", "tif")
    objects = pd.read_csv(tmp_path / "tif" / "objects.csv")
    features = layer.features
    assert len(objects) == len(features) == layer.metadata["napari_impc_dl"]["n_objects"]
    assert list(objects.columns[:5]) == CLI_OBJECT_COLUMNS_HEAD and list(objects.columns[-2:]) == ["model_name", "model_hash"]
    assert "index" not in objects.columns
    for col in ("label", "area", "centroid_y", "centroid_x", "mean_intensity_c0"):
        np.testing.assert_allclose(objects[col].to_numpy(), features[col].to_numpy())
    rec = layer.metadata["napari_impc_dl"]
    assert set(objects["image"]) == {"crop"}
    assert set(objects["model_name"]) == {rec["model"]["name"]} and set(objects["model_hash"].astype(str)) == {rec["model"]["hash"]}
    counts = pd.read_csv(tmp_path / "tif" / "counts.csv")
    assert counts.loc[0, "n_objects"] == len(features) and counts.loc[0, "image"] == "crop"
    assert counts.loc[0, "foreground_threshold"] == rec["params"]["foreground_threshold"]
    assert np.array_equal(tifffile.imread(tmp_path / "tif" / "crop_labels.tif"), np.asarray(layer.data))
    assert not [p for p in (tmp_path / "tif").iterdir() if p.name.startswith(".")], "no staging left"

    # export all: the drawn / ground-truth layer is measured on the way; masks as OME-Zarr, read back by our reader
    widget.all_layers.setChecked(True)
    export(qtbot, wait_idle, widget, tmp_path / "zarr", "ome-zarr")
    objects = pd.read_csv(tmp_path / "zarr" / "objects.csv")
    assert sorted(set(objects["image"])) == ["crop", "truth"]
    assert (objects["image"] == "truth").sum() == len(np.unique(crop[1])) - 1
    viewer.open(str(tmp_path / "zarr" / "crop_labels.ome.zarr"), plugin=PLUGIN)
    back = viewer.layers[-1]
    assert back.__class__.__name__ == "Labels"
    assert np.array_equal(np.asarray(back.data), np.asarray(layer.data))


def test_export_never_overwrites_an_input(make_napari_viewer, qtbot, wait_idle, tmp_path, crop):
    viewer = make_napari_viewer()
    segment(viewer, qtbot, wait_idle, crop[0], "crop")
    opened = tmp_path / "crop_labels.tif"  # exactly the name the export would write
    tifffile.imwrite(opened, crop[1])
    viewer.open(str(opened), plugin=PLUGIN)
    before = opened.read_bytes()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    export(qtbot, wait_idle, widget, tmp_path, "tif", names=["crop labels"])
    assert "overwrite an input" in widget.status.text()
    assert opened.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crop_labels.tif"], "nothing written"


def test_writers_save_labels_and_table(make_napari_viewer, qtbot, wait_idle, tmp_path, crop):
    viewer = make_napari_viewer()
    layer = segment(viewer, qtbot, wait_idle, crop[0], "crop")
    out = layer.save(str(tmp_path / "masks.tif"), plugin=PLUGIN)
    assert np.array_equal(tifffile.imread(out[0]), np.asarray(layer.data))
    out = layer.save(str(tmp_path / "masks.zarr"), plugin=PLUGIN)
    viewer.open(out[0], plugin=PLUGIN)
    assert np.array_equal(np.asarray(viewer.layers[-1].data), np.asarray(layer.data))
    out = layer.save(str(tmp_path / "objects.csv"), plugin=PLUGIN)
    table = pd.read_csv(out[0])
    assert len(table) == len(layer.features) and table.columns[0] == "image" and table.columns[-1] == "model_hash"


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "nuclei")
    image, truth = viewer.layers
    assert image.data.shape == truth.data.shape == (1024, 1024) and truth.data.max() > 100
    viewer.open_sample(PLUGIN, "coins")
    viewer.open_sample(PLUGIN, "cell")
    assert [layer.name for layer in viewer.layers][-2:] == ["coins", "cell"]


def test_export_outlines_for_fiji_and_qupath_with_the_layers_class_colours(make_napari_viewer, qtbot, wait_idle, tmp_path, crop):
    """A classified labels layer exported as a ROI set, GeoJSON and masks CSV: class names and the colours the
    layer shows travel into the GeoJSON; the ROIs and masks give the objects back."""
    import json

    import roifile

    from napari_impc_dl._qt._annotate import colour_of, recolour
    from napari_impc_dl.io.shape_exports import decode_masks_csv

    viewer = make_napari_viewer()
    truth = crop[1]
    layer = viewer.add_labels(truth, name="spread")
    ids = np.unique(truth)[1:]
    layer.features = pd.DataFrame({"index": ids, "class": np.where(ids % 3 == 0, "debris", "chromosome")})
    recolour(layer, ["chromosome", "debris"])
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    for key in ("roi", "geojson", "rle"):
        widget.shape_boxes[key].setChecked(True)
    export(qtbot, wait_idle, widget, tmp_path / "out", "none", names=["spread"])
    out = tmp_path / "out"
    assert "spread_rois.zip" in widget.status.text() and "spread.geojson" in widget.status.text()
    rois = roifile.roiread(out / "spread_rois.zip")
    assert len(rois) == len(ids) and rois[2].name == f"{ids[2]:05d} debris"
    features = json.loads((out / "spread.geojson").read_text())["features"]
    cls = {f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"] for f in features}
    hexes = {k: "#" + "".join(f"{v:02x}" for v in rgb) for k, rgb in cls.items()}
    assert hexes == {"chromosome": colour_of(0), "debris": colour_of(1)}
    assert np.array_equal(decode_masks_csv(out / "masks.csv")["spread"], truth)
