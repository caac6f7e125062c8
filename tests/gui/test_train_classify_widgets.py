"""The Train and Classify widgets in a real napari window: annotate by clicking, train with a live plot, stop,
the new model in the menus at once, classify (recolour + features), responsiveness, same history as the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt

from test_segment_widget import Ticks, click, open_segment

pytestmark = pytest.mark.gui

PLUGIN = "napari-impc-dl"


@pytest.fixture(autouse=True)
def _library(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))


def open_widget(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


class _Click:
    """What napari hands a mouse callback for a left click at a world position (the real callback path)."""

    type = "mouse_press"
    button = 1
    view_direction = None
    dims_displayed = [0, 1]

    def __init__(self, position, modifiers=()):
        self.position = position
        self.modifiers = modifiers
        self.handled = False


def _press(layer, yx, alt=False):
    from napari.utils.interactions import mouse_press_callbacks

    mouse_press_callbacks(layer, _Click(tuple(float(v) for v in yx), ("Alt",) if alt else ()))


def _centre(labels, i):
    ys, xs = np.nonzero(labels == i)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)  # a pixel of the object near its centre
    return ys[k], xs[k]


def test_annotate_three_objects_by_clicking_undo_and_keys(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = open_widget(viewer, "Classify")
    lab = np.zeros((64, 64), np.int32)
    lab[5:15, 5:15], lab[30:40, 5:15], lab[40:50, 40:60] = 1, 2, 3
    layer = viewer.add_labels(lab, name="objs")
    w.labels_combo.setCurrentText("objs")
    w.set_classes(["chromosome", "debris"])
    w.annotate_box.setChecked(True)
    _press(layer, _centre(lab, 1))
    _press(layer, _centre(lab, 2))
    w.select_class(1)  # what key 2 does
    _press(layer, _centre(lab, 3))
    f = layer.features.set_index("index")["class"]
    assert (f[1], f[2], f[3]) == ("chromosome", "chromosome", "debris")
    _press(layer, (1, 1))  # background: nothing
    _press(layer, _centre(lab, 2), alt=True)  # Alt-click clears
    assert layer.features.set_index("index")["class"][2] == ""
    w.undo()
    assert layer.features.set_index("index")["class"][2] == "chromosome"
    assert "3 of 3 objects have a class" in w.ann_status.text()
    colours = layer.colormap.color_dict
    assert tuple(np.round(colours[1], 3)) != tuple(np.round(colours[3], 3))  # coloured by class
    # saved with the layer's CSV and read back
    path = tmp_path / "objs.csv"
    layer.features.to_csv(path, index=False)
    layer2 = viewer.add_labels(lab, name="objs2")
    w.labels_combo.setCurrentText("objs2")
    assert w.load_classes_csv(path) == 3
    assert list(layer2.features.set_index("index")["class"].loc[[1, 2, 3]]) == ["chromosome", "chromosome", "debris"]
    w.annotate_box.setChecked(False)


def _object_settings(w, epochs=1):
    w.task_combo.setCurrentIndex([w.task_combo.itemData(i) for i in range(w.task_combo.count())].index("object"))
    w.arch.setCurrentIndex(w.arch.findData("tiny"))
    w.size.setValue(32)
    w.epochs.setValue(epochs)
    w.patience.setValue(0)
    w.device.setCurrentIndex(w.device.findData("cpu"))


def test_train_objects_live_plot_model_in_menus_and_classify(make_napari_viewer, qtbot, wait_idle):
    viewer = make_napari_viewer()
    seg = open_segment(viewer)
    cls = open_widget(viewer, "Classify")
    w = open_widget(viewer, "Train")
    viewer.open_sample(PLUGIN, "shapes")
    _object_settings(w, epochs=2)
    w.name.setText("shapes-test")
    w.reset_choices()
    w.use_pairs(["shapes labels"])
    click(qtbot, w.train_button)  # (creating napari's activity-dock bar on a click is napari's own cost, as for every job)
    assert w.running and w.stop_button.isEnabled()
    with Ticks() as ticks:
        qtbot.waitUntil(lambda: w.plot.n_points >= 1, timeout=120_000)  # the plot gets the first epoch while training runs
        wait_idle(w, 180)
    print(f"max event-loop gap while training: {ticks.worst * 1000:.0f} ms")
    assert ticks.worst < 0.200
    assert w.plot.n_points == 2 and "accuracy" in w.result.text()
    assert not w.confusion.pixmap().isNull()
    out = w.last_report.out_dir
    assert (out / "model.safetensors").is_file() and out.parent.name == "trained"
    # at once in the other widgets' menus, no restart
    assert cls.model_combo.findData(str(out)) >= 0
    assert seg.classifier_combo.findData(str(out)) >= 0
    # classify the annotated layer: class + p_<class> in features, recoloured, legend with counts
    layer = viewer.layers["shapes labels"]
    cls.labels_combo.setCurrentText("shapes labels")
    cls.image_combo.setCurrentText("shapes")
    cls.set_model(str(out))
    click(qtbot, cls.run_button)
    wait_idle(cls, 120)
    f = layer.features
    assert {"class", "p_debris", "p_nucleus", "p_rod", "annotated"} <= set(f.columns)
    assert np.allclose(f[["p_debris", "p_nucleus", "p_rod"]].sum(1), 1, atol=1e-5)
    assert "debris:" in cls.legend.text() and "rod:" in cls.legend.text()
    assert len(layer.colormap.color_dict) > 3


def test_segmentation_from_layers_stop_mid_epoch_and_model_in_segment_menu(make_napari_viewer, qtbot, wait_idle):
    viewer = make_napari_viewer()
    seg = open_segment(viewer)
    w = open_widget(viewer, "Train")
    viewer.open_sample(PLUGIN, "nuclei")
    w.arch.setCurrentIndex(w.arch.findData("tiny"))
    w.patch.setValue(64)
    w.epochs.setValue(50)
    w.device.setCurrentIndex(w.device.findData("cpu"))
    w.reset_choices()
    w.use_pairs(["sample_nuclei ground truth"])
    w.val.setValue(10)
    # one image: nothing left to validate on, the user is told (before anything runs)
    click(qtbot, w.train_button)
    wait_idle(w, 120)
    assert "only one training image" in w.result.text()
    # two pairs: the sample cut in halves
    img = viewer.layers["sample_nuclei"].data
    gt = viewer.layers["sample_nuclei ground truth"].data
    viewer.add_image(img[:, :512], name="left")
    viewer.add_labels(gt[:, :512], name="left labels")
    viewer.add_image(img[:, 512:], name="right")
    viewer.add_labels(gt[:, 512:], name="right labels")
    w.reset_choices()
    w.use_pairs(["left labels", "right labels"])
    w.name.setText("nuclei-test")
    click(qtbot, w.train_button)
    qtbot.waitUntil(lambda: w.plot.n_points >= 1, timeout=120_000)
    w.stop()
    wait_idle(w, 120)
    r = w.last_report
    assert r.stopped == "cancelled" and 1 <= len(r.history) < 50
    assert (r.out_dir / "last.safetensors").is_file() and r.model is not None
    assert seg.model_combo.findData(str(r.out_dir)) >= 0
    seg.model_combo.setCurrentIndex(seg.model_combo.findData(str(r.out_dir)))
    assert "tiny U-Net" in seg.model_info.text()


def test_widget_and_cli_give_the_same_history(make_napari_viewer, qtbot, wait_idle, tmp_path):
    from napari_impc_dl import api
    from napari_impc_dl.cli import main

    api.synth("views", 4, tmp_path / "views", size=64, seed=3)
    assert main(["train", "classification", "--data", str(tmp_path / "views"), "--out", str(tmp_path / "cli"), "--arch", "tiny",
                 "--size", "32", "--epochs", "2", "--patience", "0", "--device", "cpu", "--seed", "5"]) == 0
    viewer = make_napari_viewer()
    w = open_widget(viewer, "Train")
    w.task_combo.setCurrentIndex(2)
    w.source_combo.setCurrentIndex(1)
    w.folder_edits["data"].setText(str(tmp_path / "views"))
    w.arch.setCurrentIndex(w.arch.findData("tiny"))
    w.size.setValue(32)
    w.epochs.setValue(2)
    w.patience.setValue(0)
    w.seed.setValue(5)
    w.device.setCurrentIndex(w.device.findData("cpu"))
    w.set_out_dir(tmp_path / "gui")
    click(qtbot, w.train_button)
    wait_idle(w, 180)
    a = pd.read_csv(tmp_path / "cli" / "history.csv").drop(columns=["seconds", "train_seconds"])
    b = pd.read_csv(tmp_path / "gui" / "history.csv").drop(columns=["seconds", "train_seconds"])
    pd.testing.assert_frame_equal(a, b, rtol=1e-4)


_OPEN = textwrap.dedent(
    """
    import json, sys, time
    import napari
    from qtpy.QtWidgets import QApplication
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
    out = {}
    for name in ("Train", "Classify"):
        t0 = time.perf_counter()
        viewer.window.add_plugin_dock_widget("napari-impc-dl", name)
        app.processEvents()
        out[name] = time.perf_counter() - t0
    out["torch"] = "torch" in sys.modules
    print(json.dumps(out))
    viewer.close()
    """
)


@pytest.mark.slow
def test_train_and_classify_open_fast_without_torch(tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_CACHE_HOME=str(tmp_path / "k"), NAPARI_IMPC_DL_HOME=str(tmp_path / "lib"))
    out = subprocess.run([sys.executable, "-c", _OPEN], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    print(fig)
    assert fig["Train"] < 1.0 and fig["Classify"] < 1.0, fig
    assert not fig["torch"], "torch must load on the first run, not when a widget opens"


def test_image_level_classify_all_layers_and_export_predictions(make_napari_viewer, qtbot, wait_idle, tmp_path):
    from napari_impc_dl import api
    from napari_impc_dl.synthetic.views import make_view_image

    items = [(make_view_image(v, 64, 10 + i), v, f"{v}{i}") for v in ("dorsoventral", "lateral") for i in range(3)]
    rep = api.train_classification(tmp_path / "views-model", data=items, level="image", arch="tiny", size=32, epochs=1, device="cpu")
    viewer = make_napari_viewer()
    cls = open_widget(viewer, "Classify")
    exp = open_widget(viewer, "Export")
    for v in ("dorsoventral", "lateral"):
        viewer.add_image(make_view_image(v, 64, 99), name=f"xray {v}")
    cls.reset_choices()
    cls.set_model(str(rep.out_dir))
    assert "image level" in cls.model_info.text()
    cls.all_images.setChecked(True)
    click(qtbot, cls.run_button)
    wait_idle(cls, 120)
    assert cls.table.rowCount() == 2 and not cls.table.isHidden()
    meta = viewer.layers["xray lateral"].metadata["napari_impc_dl"]["classification"]
    assert meta["class"] in ("dorsoventral", "lateral") and abs(meta["p_lateral"] + meta["p_dorsoventral"] - 1) < 1e-5
    exp.reset_choices()
    exp.folder.setText(str(tmp_path / "out"))
    click(qtbot, exp.export_button)
    wait_idle(exp, 60)
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(pred["image"]) == ["xray dorsoventral", "xray lateral"]
    assert {"class", "p_dorsoventral", "p_lateral", "model_name", "model_hash"} <= set(pred.columns)


def test_export_writes_annotated_classes_with_measurements(make_napari_viewer, qtbot, wait_idle, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "shapes")
    exp = open_widget(viewer, "Export")
    exp.reset_choices()
    exp.set_chosen(["shapes labels"])
    exp.folder.setText(str(tmp_path / "out"))
    click(qtbot, exp.export_button)
    wait_idle(exp, 60)
    objects = pd.read_csv(tmp_path / "out" / "objects.csv")
    assert {"area", "class", "label"} <= set(objects.columns)
    assert set(objects["class"]) == {"rod", "nucleus", "debris"}


def test_segment_then_classify_in_one_click(make_napari_viewer, qtbot, wait_idle):
    from napari_impc_dl import api
    from napari_impc_dl.synthetic.shapes import make_shapes_image
    from napari_impc_dl.training.library import default_out

    items = [(*make_shapes_image((128, 128), seed=700 + i), f"s{i}") for i in range(4)]
    out = default_out("objects-for-segment")
    api.train_classification(out, data=items, level="object", arch="tiny", size=32, epochs=1, device="cpu")
    viewer = make_napari_viewer()
    seg = open_segment(viewer)
    seg.refresh_models()  # (a Train widget run emits this itself)
    viewer.add_image(items[0][0], name="objects")
    seg.reset_choices()
    seg.set_model("nuclei")  # the starter finds the blobs and rods of this image
    idx = seg.classifier_combo.findData(str(out))
    assert idx > 0 and seg.classifier_combo.itemData(0) is None  # "no" first
    seg.classifier_combo.setCurrentIndex(idx)
    click(qtbot, seg.run_button)
    wait_idle(seg, 120)
    f = viewer.layers["objects labels"].features
    assert len(f) > 0
    assert {"class", "p_debris", "p_nucleus", "p_rod", "classifier_hash", "area"} <= set(f.columns)
    assert set(f["class"]) <= {"debris", "nucleus", "rod"} and (f["class"] != "").all()
    # moving a Postprocessing slider re-makes the objects: they are classified again, not left without classes
    layer = viewer.layers["objects labels"]
    seg.foreground.setValue(0.7)
    qtbot.waitUntil(lambda: layer.metadata["napari_impc_dl"]["params"]["foreground_threshold"] == 0.7, timeout=30_000)
    wait_idle(seg, 60)
    f2 = layer.features
    assert len(f2) == layer.metadata["napari_impc_dl"]["n_objects"] and (f2["class"] != "").all()
    assert {"p_debris", "classifier_hash"} <= set(f2.columns)
    assert any(k in seg.count.text() for k in ("debris", "nucleus", "rod"))
