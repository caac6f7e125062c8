"""The Model Zoo widget in a real napari window: card, run through the Segment machinery, trust, export, drop a zip."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

import zoo_packages as Z

pytestmark = pytest.mark.gui

PLUGIN = "napari-impc-dl"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    d = tmp_path_factory.mktemp("gui-zoo")
    return {"ts": Z.build_v05(d, kind="torchscript", name="gui-nuclei")[0], "af": Z.build_v05(d, kind="arch_file", name="gui-arch-file")[0]}


def open_zoo(viewer):
    from napari_impc_dl._qt.zoo_widget import ZooWidget

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Model Zoo")
    assert isinstance(widget, ZooWidget)
    return widget


def click(qtbot, button):
    assert button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _image(viewer, name="cells"):
    img = Z.test_image((1, 1, 96, 112), seed=3)[0, 0].astype(np.uint16)
    return viewer.add_image(img, name=name)


def test_card_run_and_library(make_napari_viewer, qtbot, wait_idle, pkgs):
    viewer = make_napari_viewer()
    widget = open_zoo(viewer)
    _image(viewer)
    widget.open_package(pkgs["ts"])
    wait_idle(widget)
    text = widget.card_text.text()
    for words in ("gui-nuclei", "input", "raw", "y=16+k*8", "weights", "torchscript", "licence", "MIT", "cite", "10.1234/test.5678"):
        assert words in text, text
    assert widget.trust.isHidden()
    assert widget.segment.image_combo.currentText() == "cells"
    assert "Model Zoo package" in widget.segment.model_info.text()
    click(qtbot, widget.segment.run_button)
    wait_idle(widget)
    labels = viewer.layers["cells labels"]
    meta = labels.metadata["napari_impc_dl"]
    assert meta["model"]["name"] == "gui-nuclei" and labels.data.shape == (96, 112)
    click(qtbot, widget.add_button)
    wait_idle(widget)
    assert "Added to the library as 'gui-nuclei'" in widget.status.text()
    assert any("gui-nuclei (library)" == widget.package_combo.itemText(i) for i in range(widget.package_combo.count()))


def test_trust_is_asked_before_package_code_runs(make_napari_viewer, qtbot, wait_idle, pkgs, tmp_path, monkeypatch):
    mark = tmp_path / "executed.txt"
    monkeypatch.setenv("IMPC_ZOO_TEST_MARK", str(mark))
    viewer = make_napari_viewer()
    widget = open_zoo(viewer)
    _image(viewer)
    widget.open_package(pkgs["af"])
    wait_idle(widget)
    assert not widget.trust.isHidden() and not widget.trust_warning.isHidden() and not widget.trust.isChecked()
    click(qtbot, widget.segment.run_button)
    wait_idle(widget)
    assert "trust" in widget.segment.status.text().lower()
    assert "cells labels" not in viewer.layers and not mark.exists()
    widget.trust.setChecked(True)
    assert widget.segment.load_options == {"trust_code": True}
    click(qtbot, widget.segment.run_button)
    wait_idle(widget)
    assert "cells labels" in viewer.layers and mark.exists()


def test_export_form_writes_a_package_and_shows_it(make_napari_viewer, qtbot, wait_idle, tmp_path, tiny_model):
    from napari_impc_dl.models.checkpoint import save_checkpoint

    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(tiny_model.net, tiny_model.card, ckpt)
    viewer = make_napari_viewer()
    widget = open_zoo(viewer)
    widget.set_export_model(ckpt)
    out = tmp_path / "tiny-package.zip"
    widget.export_out.setText(str(out))
    widget.export_name.setText("Tiny GUI export")
    widget.export_authors.setText("Ada Lovelace; Alan Turing")
    widget.export_license.setCurrentText("MIT")
    click(qtbot, widget.export_button)
    wait_idle(widget, 240)
    assert out.is_file()
    qtbot.waitUntil(lambda: widget.info is not None and widget.info["name"] == "Tiny GUI export", timeout=60_000)
    wait_idle(widget)
    assert not widget.cover.isHidden() and "Ada Lovelace; Alan Turing" in widget.card_text.text()
    assert "re-tested" in widget.status.text() and "ready" in widget.status.text()  # the export's result stays in view


def test_dropping_a_package_zip_opens_the_widget(make_napari_viewer, qtbot, wait_idle, pkgs, tmp_path):
    from napari_impc_dl._qt.zoo_widget import get_reader

    assert get_reader(str(tmp_path / "nope.zip")) is None
    (tmp_path / "plain.zip").write_bytes(b"not a zip")
    assert get_reader(str(tmp_path / "plain.zip")) is None
    viewer = make_napari_viewer()
    viewer.open(str(pkgs["ts"]), plugin=PLUGIN)
    widget = viewer.window._dock_widgets["Model Zoo (napari-impc-dl)"].widget()
    wait_idle(widget)
    assert "gui-nuclei test input" in viewer.layers
    assert viewer.layers["gui-nuclei test input"].data.shape == (64, 88)
