"""Regenerate the user guide's screenshots: the real widgets, in a real napari window, doing real work.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py [--out docs/images]

Writes (PNG):

- ``segment.png``   the bundled sample segmented with the Segment widget (Advanced section open);
- ``export.png``    the Export widget after exporting the result;
- ``progress.png``  a 4096 x 4096 zarr image being segmented: the widget's progress bar and napari's
  activity dock (its own progress bar and Cancel button);
- ``big-image.png`` the finished 4096 x 4096 result, zoomed in;
- ``annotate.png``  "Teach it your objects": objects of the annotated sample being classified by clicking;
- ``train.png``     the Train widget training an object classifier, its live plot mid-run;
- ``trained.png``   the same at the end: validation figures and the confusion matrix;
- ``classified.png`` the Classify widget's result: the layer coloured by predicted class, with its legend.
- ``chromosomes.png`` the ``chromosomes`` preset on its sample spread: coloured by class, counted;
- ``chromosomes_flagged.png`` the same on an aneuploid synthetic spread (44 chromosomes): counted right, flagged;
- ``cells.png``     the ``cells`` preset on its sample: cells coloured by mitosis phase, counts and mitotic index.
- ``fibrosis.png``  the ``fibrosis`` preset on its sample tissue: the class map over the image, the fractions.
- ``skeletal.png``  the ``skeletal`` workflow on the dorso-ventral X-ray sample: regions and bones (coloured by
  spine region), the view, pose, sex and every IMPC count with its confidence.
- ``zoo-open.png``, ``zoo-card.png``, ``zoo-run.png``, ``zoo-library.png``, ``zoo-export.png``, ``zoo-trust.png``
  the Model Zoo widget: its Package menu; the card of a package zip dropped on napari (our bundled ``nuclei``
  model, exported into a temporary folder: no network); that package run on the sample; added to the library;
  a model exported through the form; the trust box of a package that builds its network with its own code.

``--only segment``, ``--only teach``, ``--only presets``, ``--only fibrosis``, ``--only skeletal`` or ``--only zoo`` makes one part.

Runs on Qt 6 (the PyQt6 of `make setup`; on PyQt5 napari shows a deprecation toast, so it stops), and stops
if a napari notification is on screen when a picture is taken. Takes a minute or two on a laptop CPU. The guide
(docs/user-guide.md) shows these files; rerun this script whenever a widget changes, and commit the PNGs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = "napari-impc-dl"
#: a synthetic aneuploid spread (44 chromosomes, 1024²) that the chromosomes preset counts right, and so flags
FLAGGED_SPREAD_SEED = 3154


def _wait(app, until, timeout: float = 600.0, status=None) -> None:
    t0 = time.perf_counter()
    while not until():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"waited {timeout:.0f} s" + (f"; the widget says: {status.text()!r}" if status is not None else ""))
        app.processEvents()
        time.sleep(0.01)


def _settle(app, seconds: float = 0.5) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents()
        time.sleep(0.01)


def _toasts() -> list:
    """napari's notifications on screen (toasts)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    return [w for w in QApplication.allWidgets() if isinstance(w, NapariQtNotification) and w.isVisible()]


def _save(img, path: Path) -> None:
    import imageio.v3 as iio

    shown = _toasts()
    if shown:  # the guide's pictures show the widgets, never a napari notification
        raise RuntimeError(f"{path.name}: a napari notification is on screen: {[w.message.text() for w in shown]}")
    iio.imwrite(path, img[..., :3])
    print(f"wrote {path} {img.shape[1]}x{img.shape[0]}", file=sys.stderr)


def _grab_screen(window):
    """The window as shown on screen (includes floating dialogs such as the activity dock)."""
    import numpy as np
    from qtpy.QtGui import QImage

    geo = window.frameGeometry()
    shot = window.screen().grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height()).toImage()
    shot = shot.convertToFormat(QImage.Format.Format_RGBA8888)
    ptr = shot.constBits()
    ptr.setsize(shot.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(shot.height(), shot.bytesPerLine() // 4, 4)[:, : shot.width()].copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "images"))
    ap.add_argument("--only", choices=["all", "segment", "teach", "presets", "fibrosis", "skeletal", "zoo"], default="all")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import qtpy

    if not qtpy.QT6:  # napari 0.9 shows a "PyQt5 is deprecated" toast on Qt 5
        sys.exit(f"make the screenshots on Qt 6 (PyQt6, as `make setup` installs); this is {qtpy.API_NAME} {qtpy.QT_VERSION}")
    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QDockWidget

    def narrow_docks(viewer, width: int = 430) -> None:
        _settle(QApplication.instance(), 0.3)
        window = viewer.window._qt_window
        docks = [d for d in window.findChildren(QDockWidget) if d.isVisible() and window.dockWidgetArea(d) == Qt.DockWidgetArea.RightDockWidgetArea]
        window.resizeDocks(docks, [width] * len(docks), Qt.Orientation.Horizontal)
        _settle(QApplication.instance(), 0.3)
        viewer.reset_view()

    if args.only in ("all", "zoo"):
        _zoo(napari, out, narrow_docks)
    if args.only == "zoo":
        return
    if args.only in ("all", "presets"):
        _presets(napari, out, narrow_docks)
    if args.only in ("all", "presets", "fibrosis"):
        _fibrosis(napari, out, narrow_docks)
    if args.only in ("all", "skeletal"):
        _skeletal(napari, out, narrow_docks)
    if args.only in ("presets", "fibrosis", "skeletal"):
        return
    if args.only in ("all", "teach"):
        _teach(napari, out, narrow_docks)
    if args.only == "teach":
        return

    # -------------------------------------------------------------- 1. first segmentation
    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    app = QApplication.instance()
    window = viewer.window._qt_window
    window.move(0, 0)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "nuclei")
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    seg.image_combo.setCurrentText("sample_nuclei")
    seg.run_button.click()
    _wait(app, lambda: not seg.running)
    seg.advanced.expand(animate=False)
    narrow_docks(viewer)
    labels = viewer.layers["sample_nuclei labels"]
    viewer.layers.selection.active = labels
    viewer.camera.center = (300, 330)
    viewer.camera.zoom = 1.6
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "segment.png")

    # -------------------------------------------------------------- 2. export
    seg_dock = viewer.window._dock_widgets.get(f"Segment ({PLUGIN})") if hasattr(viewer.window, "_dock_widgets") else None
    if seg_dock is not None:
        seg_dock.hide()
    _, exp = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    folder = Path(tempfile.mkdtemp(prefix="impc-export-"))
    exp.folder.setText(str(folder / "results"))
    exp.masks.setCurrentIndex(exp.masks.findData("ome-zarr"))
    narrow_docks(viewer)
    exp.export_button.click()
    _wait(app, lambda: not exp.running)
    for toast in _toasts():  # "Exported 1 layer(s)", as the status line says: on a desktop it fades after 4 s,
        toast.close()  # but under Xvfb the window is never active, so its timer never starts
    viewer.camera.zoom = 1.0
    viewer.camera.center = (512, 512)
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "export.png")
    viewer.close()

    # -------------------------------------------------------------- 3. a large zarr image: progress, then the result
    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    window = viewer.window._qt_window
    window.move(0, 0)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "large_nuclei")
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    seg.image_combo.setCurrentText("large_nuclei")
    narrow_docks(viewer)
    seg.run_button.click()
    _wait(app, lambda: seg.progress.maximum() > 0 and seg.progress.value() >= seg.progress.maximum() // 3 and "inference" in seg.progress.format())
    viewer.window._status_bar._toggle_activity_dock(True)
    _settle(app, 1.0)
    _save(_grab_screen(window), out / "progress.png")
    viewer.window._status_bar._toggle_activity_dock(False)
    _wait(app, lambda: not seg.running)
    viewer.layers.selection.active = viewer.layers["large_nuclei labels"]
    viewer.camera.center = (2100, 1900)
    viewer.camera.zoom = 2.0
    _settle(app, 1.5)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "big-image.png")
    viewer.close()



def _presets(napari, out: Path, narrow_docks) -> None:
    """The presets' sections: a spread segmented, classified and counted (and flagged when not 46); cells by phase."""
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    app = QApplication.instance()
    viewer.window._qt_window.move(0, 0)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "chromosomes")
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    seg.image_combo.setCurrentText("sample_chromosomes")
    seg.set_model("chromosomes")
    narrow_docks(viewer)
    seg.run_button.click()
    _wait(app, lambda: not seg.running)
    viewer.layers.selection.active = viewer.layers["sample_chromosomes labels"]
    viewer.camera.center = (512, 512)
    viewer.camera.zoom = 0.95
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "chromosomes.png")

    # a flagged spread: an aneuploid one of the generator (44 chromosomes), counted right and so flagged
    import tifffile

    from napari_impc_dl import api

    spread = Path(tempfile.mkdtemp(prefix="flagged-")) / "spread"
    api.synth("chromosomes", 1, spread, size=1024, seed=FLAGGED_SPREAD_SEED)
    img = next((spread / "images").glob("*.tif"))
    for layer in list(viewer.layers):
        layer.visible = False
    viewer.add_image(tifffile.imread(img), name="aneuploid spread")
    seg.image_combo.setCurrentText("aneuploid spread")
    seg.run_button.click()
    _wait(app, lambda: not seg.running)
    viewer.layers.selection.active = viewer.layers["aneuploid spread labels"]
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "chromosomes_flagged.png")

    viewer.close()

    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    viewer.window._qt_window.move(0, 0)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "cells")
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    seg.image_combo.setCurrentText("sample_cells")
    seg.set_model("cells")
    narrow_docks(viewer)
    seg.run_button.click()
    _wait(app, lambda: not seg.running)
    labels = viewer.layers["sample_cells labels"]
    labels.contour = 2
    viewer.layers.selection.active = labels
    viewer.camera.center = (380, 420)
    viewer.camera.zoom = 1.5
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "cells.png")
    viewer.close()

def _fibrosis(napari, out: Path, narrow_docks) -> None:
    """The fibrosis section: the sample tissue's class map over the image, and the fractions under the bar."""
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    app = QApplication.instance()
    viewer.window._qt_window.move(0, 0)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "fibrosis")
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    seg.image_combo.setCurrentText("sample_fibrosis")
    seg.set_model("fibrosis")
    narrow_docks(viewer)
    seg.run_button.click()
    _wait(app, lambda: not seg.running)
    labels = viewer.layers["sample_fibrosis labels"]
    labels.opacity = 0.45
    viewer.layers.selection.active = labels
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "fibrosis.png")
    viewer.close()


def _skeletal(napari, out: Path, narrow_docks) -> None:
    """The skeletal section: the DV X-ray sample's regions and bones (coloured by spine region) and the summary."""
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    app = QApplication.instance()
    viewer.window._qt_window.move(0, 0)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "xray_dv")
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    seg.image_combo.setCurrentText("sample_xray_dv")
    seg.set_model("skeletal")
    narrow_docks(viewer)
    seg.run_button.click()
    _wait(app, lambda: not seg.running, status=seg.status)
    bones = viewer.layers["sample_xray_dv bones"]
    viewer.layers.selection.active = bones
    ys, xs = (bones.data > 0).nonzero()
    if ys.size:  # the skeleton fills the canvas
        viewer.camera.center = ((ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2)
        viewer.camera.zoom = 0.85 * min(viewer.canvas.size[0] / max(1, ys.max() - ys.min()), viewer.canvas.size[1] / max(1, xs.max() - xs.min()))
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "skeletal.png")
    viewer.close()


def _zoo(napari, out: Path, narrow_docks) -> None:
    """The Model Zoo chapter: open a package (menu, dropped zip), its card, run it, add it to the library,
    the trust box of a package with its own code, export a model through the form."""
    import os

    from qtpy.QtWidgets import QApplication, QScrollArea

    from napari_impc_dl import api

    def show(zoo, widget=None) -> None:  # uses the current `viewer`
        """Scroll the widget's panel to ``widget`` (None: the top) and fit the image to the canvas."""
        area = zoo.findChild(QScrollArea)
        _settle(app, 0.3)
        if widget is None:
            area.verticalScrollBar().setValue(0)
        else:
            area.ensureWidgetVisible(widget, 0, 40)
        viewer.reset_view()
        _settle(app, 1.0)

    before = os.environ.get("NAPARI_IMPC_DL_HOME")
    os.environ["NAPARI_IMPC_DL_HOME"] = tempfile.mkdtemp(prefix="impc-guide-zoo-lib-")  # an empty library, for now
    work = Path(tempfile.mkdtemp(prefix="impc-guide-zoo-"))
    # the package to show: our bundled model, exported as a Model Zoo package (offline)
    pkg = api.export_model("nuclei", work / "impc-nuclei.zip", name="impc-nuclei", authors=["napari-impc-dl developers"], license="MIT").path

    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    app = QApplication.instance()
    window = viewer.window._qt_window
    window.move(0, 0)
    viewer.window.resize(1600, 1000)
    _, zoo = viewer.window.add_plugin_dock_widget(PLUGIN, "Model Zoo")
    narrow_docks(viewer, 470)
    # 1. the Package menu: library models (none yet), a package file, a package folder
    zoo.package_combo.showPopup()
    _settle(app, 0.8)
    _save(_grab_screen(window), out / "zoo-open.png")
    zoo.package_combo.hidePopup()
    # 2. a zip dropped on napari: the widget reads the package, shows its card and adds its test input
    viewer.open(str(pkg), plugin=PLUGIN)
    _wait(app, lambda: not zoo.running and zoo.info is not None and "impc-nuclei test input" in viewer.layers)
    show(zoo)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "zoo-card.png")
    # 3. run it on the sample image with the embedded Segment controls
    viewer.open_sample(PLUGIN, "nuclei")
    viewer.layers["impc-nuclei test input"].visible = False
    zoo.segment.reset_choices()
    zoo.segment.image_combo.setCurrentText("sample_nuclei")
    zoo.segment.run_button.click()
    _wait(app, lambda: not zoo.running)
    viewer.layers.selection.active = viewer.layers["sample_nuclei labels"]
    show(zoo, zoo.segment.status)
    viewer.camera.center = (300, 330)
    viewer.camera.zoom = 1.4
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "zoo-run.png")
    # 4. add it to the library: from now on a name for `segment --model` and the model menus
    zoo.add_button.click()
    _wait(app, lambda: not zoo.running and "library" in zoo.status.text())
    show(zoo)
    viewer.camera.center = (300, 330)
    viewer.camera.zoom = 1.4
    zoo.package_combo.showPopup()
    _settle(app, 0.8)
    _save(_grab_screen(window), out / "zoo-library.png")
    zoo.package_combo.hidePopup()
    # 5. export a model as a package through the form (re-tested before it is written); its card follows
    zoo.export_box.expand(animate=False)
    (work / "shared").mkdir()
    zoo.set_export_model("nuclei")
    zoo.export_out.setText(str(work / "shared" / "my-nuclei.zip"))
    zoo.export_name.setText("my-nuclei")
    zoo.export_authors.setText("Ada Lovelace; Alan Turing")
    zoo.export_license.setCurrentText("CC-BY-4.0")
    zoo.export_button.click()
    _wait(app, lambda: not zoo.running and zoo.info is not None and zoo.info["name"] == "my-nuclei", status=zoo.status)
    zoo.export_box.expand(animate=False)
    show(zoo, zoo.status)
    viewer.camera.center = (300, 330)
    viewer.camera.zoom = 1.4
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "zoo-export.png")
    viewer.close()

    # 6. a package whose network is built by its own Python code (a small test package): the trust box
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import zoo_packages

    code_pkg, _ = zoo_packages.build_v05(work, kind="arch_file", name="code-net")
    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    viewer.window._qt_window.move(0, 0)
    viewer.window.resize(1600, 1000)
    _, zoo = viewer.window.add_plugin_dock_widget(PLUGIN, "Model Zoo")
    narrow_docks(viewer, 470)
    viewer.open(str(code_pkg), plugin=PLUGIN)
    _wait(app, lambda: not zoo.running and zoo.info is not None)
    show(zoo, zoo.trust_warning)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "zoo-trust.png")
    viewer.close()
    if before is None:  # the other parts start from their own library
        os.environ.pop("NAPARI_IMPC_DL_HOME", None)
    else:
        os.environ["NAPARI_IMPC_DL_HOME"] = before

def _teach(napari, out: Path, narrow_docks) -> None:
    """The "Teach it your objects" chapter: annotate, train (live plot, confusion matrix), classify."""
    import os

    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari.utils.interactions import mouse_press_callbacks

    os.environ.setdefault("NAPARI_IMPC_DL_HOME", tempfile.mkdtemp(prefix="impc-guide-lib-"))
    viewer = napari.Viewer(show=True, title="napari-impc-dl")
    app = QApplication.instance()
    viewer.window._qt_window.move(0, 0)
    viewer.window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "shapes")
    layer = viewer.layers["shapes labels"]
    truth = dict(zip(layer.features["index"], layer.features["class"]))
    _, cls = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
    cls.labels_combo.setCurrentText("shapes labels")
    cls.image_combo.setCurrentText("shapes")
    # start from a half-annotated layer, then click a few objects as a user would
    feats = layer.features.copy()
    feats.loc[feats.index[1::2], "class"] = ""
    layer.features = feats
    cls.set_classes(["rod", "nucleus", "debris"])
    cls.annotate_box.setChecked(True)
    lab = np.asarray(layer.data)

    class Click:
        type, button, view_direction, dims_displayed, modifiers = "mouse_press", 1, None, [0, 1], ()

        def __init__(self, pos):
            self.position, self.handled = pos, False

    for label in [int(i) for i in feats["index"][1::2][:4]]:
        ys, xs = np.nonzero(lab == label)
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        cls.select_class(["rod", "nucleus", "debris"].index(truth[label]))
        mouse_press_callbacks(layer, Click((float(ys[k]), float(xs[k]))))
    narrow_docks(viewer)
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "annotate.png")
    # annotate the rest (as the sample's classes say), then train
    layer.features = layer.features.assign(**{"class": [truth[int(i)] for i in layer.features["index"]]})
    from napari_impc_dl._qt._annotate import recolour

    recolour(layer, ["rod", "nucleus", "debris"])
    cls.annotate_box.setChecked(False)
    docks = viewer.window._dock_widgets if hasattr(viewer.window, "_dock_widgets") else {}
    if docks.get(f"Classify ({PLUGIN})") is not None:
        docks[f"Classify ({PLUGIN})"].hide()
    _, tr = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    tr.task_combo.setCurrentIndex(1)
    tr.reset_choices()
    tr.use_pairs(["shapes labels"])
    tr.epochs.setValue(30)
    tr.name.setText("shapes-objects")
    narrow_docks(viewer, 470)
    tr.train_button.click()
    _wait(app, lambda: tr.plot.n_points >= 4 or not tr.running)
    _settle(app, 0.5)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "train.png")
    _wait(app, lambda: not tr.running)
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "trained.png")
    # classify with the new model (already in the Classify widget's menu)
    if docks.get(f"Train ({PLUGIN})") is not None:
        docks[f"Train ({PLUGIN})"].hide()
    if docks.get(f"Classify ({PLUGIN})") is not None:
        docks[f"Classify ({PLUGIN})"].show()
    cls.set_model(str(tr.last_report.out_dir))
    cls.run_button.click()
    _wait(app, lambda: not cls.running)
    viewer.layers.selection.active = layer
    _settle(app, 1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "classified.png")
    viewer.close()


if __name__ == "__main__":
    main()
