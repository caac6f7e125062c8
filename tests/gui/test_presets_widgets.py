"""The chromosomes and cells presets in napari: sample data, Segment (then classify, counts, flag), Classify."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_impc_dl.presets import CHROMOSOME_WEIGHTS

from test_segment_widget import click, open_segment

PLUGIN = "napari-impc-dl"


@pytest.fixture(autouse=True)
def _library(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "home"))


def test_chromosomes_preset_segments_classifies_counts_and_exports(make_napari_viewer, qtbot, wait_idle, tmp_path):
    from napari_impc_dl.synthetic.chromosomes import make_spread

    viewer = make_napari_viewer()
    seg = open_segment(viewer)
    img, _, classes = make_spread((512, 512), seed=41)
    viewer.add_image(img, name="spread")
    seg.reset_choices()
    seg.set_model("chromosomes")
    assert seg.classifier_combo.currentData() == "chromosomes"  # the preset brings its classifier
    assert "metaphase" in seg.model_info.text().lower() or "spread" in seg.model_info.text().lower()
    click(qtbot, seg.run_button)
    wait_idle(seg, 120)
    f = viewer.layers["spread labels"].features
    five = {"chromosome", "chromosome_pair", "chromosome_piece", "nucleus", "debris"}
    assert {f"p_{c}" for c in five} | {"class"} <= set(f.columns) and set(f["class"]) <= five
    text = seg.count.text()
    assert "chromosome" in text and "46" in text
    n = int(sum(CHROMOSOME_WEIGHTS.get(c, 0) for c in f["class"]))  # a merged pair counts two
    assert (n == 46) == ("not 46" not in text)
    # Export: counts.csv carries the preset's columns
    _, exp = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    exp.reset_choices()
    exp.set_chosen(["spread labels"])
    exp.folder.setText(str(tmp_path / "out"))
    click(qtbot, exp.export_button)
    wait_idle(exp, 60)
    counts = pd.read_csv(tmp_path / "out" / "counts.csv")
    assert counts.loc[0, "n_chromosome"] == n and bool(counts.loc[0, "count_is_46"]) == (n == 46)
    assert {"n_nucleus", "n_debris", "classifier_name"} <= set(counts.columns)
    seg.set_model("nuclei")  # leaving the preset puts "no" back
    assert seg.classifier_combo.currentData() is None


def test_cells_sample_channels_are_stacked_for_the_cells_preset(make_napari_viewer, qtbot, wait_idle):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "cells")
    names = [lyr.name for lyr in viewer.layers]
    assert "sample_cells" in names and "sample_cells [1]" in names and "sample_cells ground truth" in names
    assert not viewer.layers["sample_cells ground truth"].visible
    assert "class" in viewer.layers["sample_cells ground truth"].features.columns
    seg = open_segment(viewer)
    seg.reset_choices()
    seg.image_combo.setCurrentText("sample_cells")
    seg.set_model("cells")
    assert seg.classifier_combo.currentData() == "cells"
    click(qtbot, seg.run_button)
    wait_idle(seg, 180)
    labels = viewer.layers["sample_cells labels"]
    assert labels.data.shape == viewer.layers["sample_cells"].data.shape
    assert "mitotic index" in seg.count.text() and "interphase" in seg.count.text()
    truth = viewer.layers["sample_cells ground truth"].data
    assert abs(int(labels.data.max()) - int(truth.max())) <= 0.15 * truth.max()


def test_classify_widget_lists_the_presets_with_their_card(make_napari_viewer):
    from napari_impc_dl._qt.classify_widget import ClassifyWidget

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
    assert isinstance(w, ClassifyWidget)
    for name in ("chromosomes", "cells"):
        idx = w.model_combo.findData(name)
        assert idx >= 0
        w.model_combo.setCurrentIndex(idx)
        assert "object level" in w.model_info.text() and "synthetic" in w.model_info.toolTip().lower()
    assert w.model_combo.findData("nuclei") < 0  # a segmentation preset is no classifier


def test_chromosomes_sample_opens_with_its_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "chromosomes")
    truth = viewer.layers["sample_chromosomes ground truth"]
    assert truth.metadata["truth"]["n_chromosome"] == int((truth.features["class"] == "chromosome").sum())
    assert viewer.layers["sample_chromosomes"].data.dtype == np.uint8


def test_fibrosis_sample_gives_a_class_map_fractions_and_exports_them(make_napari_viewer, qtbot, wait_idle, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "fibrosis")
    image = viewer.layers["sample_fibrosis"]
    assert image.rgb and not viewer.layers["sample_fibrosis ground truth"].visible
    truth = viewer.layers["sample_fibrosis ground truth"].metadata["truth"]
    seg = open_segment(viewer)
    seg.reset_choices()
    seg.image_combo.setCurrentText("sample_fibrosis")
    seg.set_model("fibrosis")
    assert seg.classifier_combo.currentData() is None  # a class map has no objects to classify
    assert seg.postprocessing.isHidden()  # no thresholds to tune on a class map
    seg.set_model("nuclei")
    assert not seg.postprocessing.isHidden()
    seg.set_model("fibrosis")
    click(qtbot, seg.run_button)
    wait_idle(seg, 180)
    labels = viewer.layers["sample_fibrosis labels"]
    assert labels.data.shape == image.data.shape[:2] and set(np.unique(labels.data)) <= {0, 1, 2}
    assert list(labels.features["class"]) == ["background", "tissue", "fibrosis"]
    text = seg.count.text()
    assert text.startswith("tissue") and "fibrosis" in text and "%" in text
    clear = labels.colormap.map(np.array([0]))[0]
    assert clear[3] == 0 and labels.colormap.map(np.array([2]))[0][3] > 0  # glass clear, fibrosis coloured
    _, exp = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    exp.reset_choices()
    exp.set_chosen(["sample_fibrosis labels"])
    exp.folder.setText(str(tmp_path / "out"))
    click(qtbot, exp.export_button)
    wait_idle(exp, 60)
    counts = pd.read_csv(tmp_path / "out" / "counts.csv")
    assert abs(counts.loc[0, "fraction_fibrosis"] - truth["fraction_fibrosis"]) < 0.05
    assert counts.loc[0, "tissue_area_px"] + counts.loc[0, "area_background_px"] == labels.data.size
