"""The skeletal workflow (mouse X-rays) in the Segment widget, and the two X-ray samples.

The bundled skeletal models are starters trained on phantoms (and may be retrained), so these tests check
the structure of what the widget shows, never exact counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_segment_widget import click, open_segment

pytestmark = pytest.mark.gui

PLUGIN = "napari-impc-dl"
PARAMETERS = {f"IMPC_XRY_{i:03d}_001" for i in range(8, 18)}


@pytest.fixture(autouse=True)
def _library(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "home"))


def _models_installed() -> bool:
    from napari_impc_dl.skeletal.models import installed

    return installed()


needs_models = pytest.mark.skipif(not _models_installed(), reason="the bundled skeletal models are not in this installation")


def _rgba(colour, alpha=1.0):
    from napari_impc_dl._qt._skeletal_view import _rgba

    return np.asarray(_rgba(colour, alpha))


def test_xray_samples_open_with_their_truth(make_napari_viewer):
    from npe2 import PluginManifest

    names = {s.key: s.display_name for s in PluginManifest.from_distribution(PLUGIN).contributions.sample_data}
    assert names["xray_dv"] == "Mouse X-ray, dorso-ventral (phantom)"
    assert names["xray_lateral"] == "Mouse X-ray, lateral (phantom)"
    viewer = make_napari_viewer()
    for view in ("dv", "lateral"):
        viewer.open_sample(PLUGIN, f"xray_{view}")
        image, truth = viewer.layers[f"sample_xray_{view}"], viewer.layers[f"sample_xray_{view} ground truth"]
        assert image.data.ndim == 2 and truth.data.shape == image.data.shape and int(truth.data.max()) > 20  # a label per bone
        assert not truth.visible
        assert truth.metadata["truth"]["view"] == view and "IMPC_XRY_014_001" in truth.metadata["truth"]


@needs_models
def test_skeletal_menu_entry_shows_only_what_applies(make_napari_viewer):
    viewer = make_napari_viewer()
    seg = open_segment(viewer)
    entries = [seg.model_combo.itemData(i) for i in range(seg.model_combo.count())]
    assert "skeletal" in entries
    seg.set_model("skeletal")
    assert "IMPC parameter table" in seg.model_info.text() and "synthetic phantoms" in seg.model_info.text()
    assert seg.postprocessing.isHidden() and seg.classifier_combo.isHidden() and seg.advanced.isHidden()
    assert not seg.save_button.isHidden() and not seg.save_button.isEnabled()  # nothing to save before a run
    seg.set_model("nuclei")  # back to a segmentation model: its fields return, the save button goes
    assert not seg.postprocessing.isHidden() and not seg.classifier_combo.isHidden() and not seg.advanced.isHidden()
    assert seg.save_button.isHidden() and "hash" in seg.model_info.text()
    # the Train widget's "start from" menu is for segmentation models only: no workflow there
    from napari_impc_dl._qt._library import fill_model_combo
    from qtpy.QtWidgets import QComboBox

    combo = QComboBox()
    fill_model_combo(combo, task="instance-segmentation")
    assert combo.findData("skeletal") < 0


@needs_models
def test_skeletal_run_on_the_dv_sample_shows_layers_summary_and_saves_the_impc_table(make_napari_viewer, qtbot, wait_idle, tmp_path, monkeypatch):
    from napari_impc_dl._qt._skeletal_view import CLASS_COLOURS, RIGHT_RIB
    from napari_impc_dl.synthetic.xray_layout import CLS

    viewer = make_napari_viewer()
    seg = open_segment(viewer)
    viewer.open_sample(PLUGIN, "xray_dv")
    seg.reset_choices()
    seg.image_combo.setCurrentText("sample_xray_dv")
    seg.set_model("skeletal")
    click(qtbot, seg.run_button)
    wait_idle(seg, 600)
    shape = viewer.layers["sample_xray_dv"].data.shape
    regions, bones = viewer.layers["sample_xray_dv regions"], viewer.layers["sample_xray_dv bones"]
    assert regions.data.shape == shape and bones.data.shape == shape
    result = bones.metadata["skeletal"]
    assert regions.metadata["skeletal"] is result and result.name == "sample_xray_dv"
    assert not result.flag, result.flag  # the DV sample is a whole mouse: it must be oriented
    # regions: a fixed colour per class, the background clear
    cmap = regions.colormap
    assert cmap.map(0)[..., 3] == 0
    for name in ("skull", "thoracic", "ribs", "pelvis"):
        np.testing.assert_allclose(cmap.map(CLS[name]).ravel(), _rgba(CLASS_COLOURS[name]), atol=1e-6)
    # bones: each coloured by its region (ribs by the rib colour, the right ones darker)
    table = result.table
    assert set(table["kind"]) <= {"vertebra", "rib"}  # (how many: the starter models decide; none asserted)
    assert set(np.unique(bones.data)) - {0} <= set(table["label"])
    for row in table.itertuples():
        want = (RIGHT_RIB if row.side == "right" else CLASS_COLOURS["ribs"]) if row.kind == "rib" else CLASS_COLOURS[row.region]
        np.testing.assert_allclose(bones.colormap.map(int(row.label)).ravel(), _rgba(want), atol=1e-6)
    assert "region" in bones.features.columns and (bones.features["index"] == bones.features["label"]).all()
    # the summary: view, pose, sex, every count with its confidence, the abnormal score
    text = seg.count.text()
    for word in ("view", "rotated", "mirrored", "p_male", "ribs left", "ribs right", "cervical", "thoracic", "lumbar", "sacral",
                 "caudal", "rib shape", "rib fusion", "pelvis", "abnormal score"):
        assert word in text, word
    assert ("dorso-ventral" in text) == (result.view == "dv")
    assert seg.save_button.isEnabled()
    # Save IMPC table…: the button asks for a folder, then writes the tables of the X-rays analysed so far
    out = tmp_path / "impc"
    monkeypatch.setattr("napari_impc_dl._qt.segment_widget.QFileDialog.getExistingDirectory", lambda *a, **k: str(out))
    click(qtbot, seg.save_button)
    impc = pd.read_csv(out / "impc_parameters.csv")
    if result.view == "dv":  # a DV view measures all ten parameters (ribs per side included)
        assert set(impc["parameter_stable_id"]) == PARAMETERS
    assert set(impc["image"]) == {"sample_xray_dv"} and {"value", "call", "confidence", "reference"} <= set(impc.columns)
    assert str(out) in seg.status.text() and "impc_parameters.csv" in seg.status.text()
    # a second X-ray reuses the loaded models; saving again writes both
    models = seg._skeletal_models["auto"]
    viewer.open_sample(PLUGIN, "xray_lateral")
    seg.reset_choices()
    seg.image_combo.setCurrentText("sample_xray_lateral")
    click(qtbot, seg.run_button)
    wait_idle(seg, 600)
    assert seg._skeletal_models["auto"] is models
    assert "sample_xray_lateral bones" in viewer.layers and "sample_xray_dv bones" in viewer.layers
    files = seg.save_skeletal_tables(tmp_path / "both")["files"]
    assert set(pd.read_csv(files["counts"])["image"]) == {"sample_xray_dv", "sample_xray_lateral"}


@needs_models
def test_skeletal_run_on_blank_pictures_says_why_in_red_and_gives_no_counts(make_napari_viewer, qtbot, wait_idle, tmp_path):
    viewer = make_napari_viewer()
    seg = open_segment(viewer)
    seg.set_model("skeletal")
    # a constant picture: the core refuses it with one clear message, shown in red where the counts go; no layers
    viewer.add_image(np.full((256, 256), 1000, np.uint16), name="constant")
    seg.reset_choices()
    seg.image_combo.setCurrentText("constant")
    click(qtbot, seg.run_button)
    wait_idle(seg, 600)
    text = seg.count.text()
    assert "constant" in text and "color:#ff4d4d" in text.replace(" ", "") and "thoracic" not in text
    assert "constant regions" not in viewer.layers and "constant bones" not in viewer.layers
    assert seg.run_button.isEnabled() and not seg.save_button.isEnabled()
    # a blank picture with a little noise (no mouse on it): analysed, but not oriented: the flag in red, no counts
    rng = np.random.default_rng(0)
    viewer.add_image((1000 + rng.normal(0, 20, (64, 64))).astype(np.uint16), name="blank")
    seg.reset_choices()
    seg.image_combo.setCurrentText("blank")
    click(qtbot, seg.run_button)
    wait_idle(seg, 600)
    result = viewer.layers["blank bones"].metadata["skeletal"]
    assert result.flag and not result.values
    text = seg.count.text()
    assert "not oriented" in text and "color:#ff4d4d" in text.replace(" ", "")
    assert "ribs left" not in text and "abnormal score" not in text and "p_male" not in text  # (the flag itself names what is missing)
    assert int(viewer.layers["blank bones"].data.max()) == 0 and viewer.layers["blank regions"].data.shape == (64, 64)
    files = seg.save_skeletal_tables(tmp_path / "flagged")["files"]  # the flag is recorded, no parameter rows
    assert pd.read_csv(files["counts"])["flag"].iloc[0] == result.flag
    assert not len(pd.read_csv(files["impc"]))
