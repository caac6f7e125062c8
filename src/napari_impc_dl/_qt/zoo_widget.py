"""The **Model Zoo** widget: open a BioImage Model Zoo package, read its card, run it, export our models.

* **Package**: a model from the local library, or a package file / folder (a dialog, or dropped on
  napari: the reader below docks this widget with the package and adds its test input as an image).
  Reading happens in a worker (bioimageio.spec validates it; nothing is downloaded, nothing runs).
* **Card**: cover, description, inputs and outputs with their axes, weight formats present locally
  (and those only listed by URL), licence, authors, citations. *Add to library* makes it available
  by name everywhere (``segment --model NAME``).
* **Trust**: a package whose network is built by its own Python code runs only when the box is
  ticked (a warning says what that means).
* **Run**: the Segment widget's own machinery (image, device, tiles, postprocessing sliders, progress,
  Cancel, relabel), embedded and pointed at the package.
* **Export**: a preset or checkpoint as a spec 0.5 package through a form (:func:`api.export_model`).

Everything long runs in a :class:`._workers.Job`; the widget only gathers input and shows results.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..errors import InputError
from ._workers import Job

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-impc-dl"
_OPEN_FILE, _OPEN_DIR, _NONE = "__file__", "__dir__", "__none__"
_LICENSES = ("MIT", "BSD-3-Clause", "CC-BY-4.0", "Apache-2.0", "GPL-3.0-only")
_TRUST_WARNING = (
    "This package builds its network with Python code it contains. That code runs with your rights "
    "(it could read or change your files). Tick only for a package from a source you trust."
)


def _describe(path: str, with_test_input: bool) -> dict:
    """Worker: validate and summarise a package (no Qt here)."""
    import numpy as np

    from .. import api
    from ..zoo.adapter import _arch_trusted
    from ..zoo.spec import RUNNABLE_FORMATS, card_of, summary

    spec = api.describe_package(path)
    sd = spec.weights.get("pytorch_state_dict")
    needs_trust = bool(sd and sd.local and not _arch_trusted(sd.architecture) and "torchscript" not in spec.local_formats)
    info = {
        "path": path,
        "name": spec.name,
        "description": spec.description,
        "version": spec.version,
        "format_version": spec.format_version,
        "lines": summary(spec),
        "inputs": [(t.id, t.axes_text()) for t in spec.inputs],
        "outputs": [(t.id, t.axes_text()) for t in spec.outputs],
        "local": spec.local_formats,
        "remote": spec.remote_formats,
        "runnable": [f for f in RUNNABLE_FORMATS if f in spec.local_formats],
        "license": spec.license,
        "authors": spec.authors,
        "cite": spec.cite,
        "cover": str(spec.covers[0]) if spec.covers else None,
        "needs_trust": needs_trust,
        "card": card_of(spec),
        "test_input": None,
    }
    if with_test_input and spec.inputs and spec.inputs[0].test_tensor:
        p = spec.package.local(spec.inputs[0].test_tensor, "test input")
        if p is not None and p.suffix == ".npy":
            x = np.load(p, allow_pickle=False)
            t = spec.inputs[0]
            keep = [i for i, a in enumerate(t.axes) if a.kind != "batch"]
            x = x.reshape([x.shape[i] for i in keep]) if x.ndim == len(t.axes) else x
            info["test_input"] = np.squeeze(x)
    return info


class ZooWidget(QWidget):
    """Dock widget: BioImage Model Zoo packages in napari."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from .segment_widget import SegmentWidget

        self.viewer = napari_viewer
        self._job: Job | None = None
        self.info: dict | None = None
        self._note: str | None = None  # shown with the next card (the export's result)
        self.segment = SegmentWidget(napari_viewer)
        self._build()
        self.refresh_library()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        # the card, the Segment controls and the export form are taller than many screens: scroll, never
        # force napari's window past the screen's height
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        scroll.setWidget(body)
        outer.addWidget(scroll)
        root = QVBoxLayout(body)
        top = QHBoxLayout()
        self.package_combo = QComboBox()
        self.package_combo.setToolTip("A model from the local library, or a package zip / folder on disk (never downloaded)")
        self.package_combo.activated.connect(self._on_package_activated)
        top.addWidget(QLabel("Package"))
        top.addWidget(self.package_combo, 1)
        root.addLayout(top)

        card = QGroupBox("Card")
        cl = QVBoxLayout(card)
        self.cover = QLabel()
        self.cover.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.cover.setVisible(False)
        self.card_text = QLabel("Open a package to see its card.")
        self.card_text.setWordWrap(True)
        self.card_text.setTextFormat(Qt.TextFormat.RichText)
        self.card_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.card_text.setOpenExternalLinks(True)
        cl.addWidget(self.cover)
        cl.addWidget(self.card_text)
        row = QHBoxLayout()
        self.weights_combo = QComboBox()
        self.weights_combo.setToolTip("Weight format to run (auto: torchscript, then pytorch_state_dict, then onnx)")
        self.weights_combo.currentIndexChanged.connect(self._update_options)
        self.add_button = QPushButton("Add to library")
        self.add_button.setToolTip("Copy the package into the local model library, so it can be chosen by name")
        self.add_button.clicked.connect(self.add_to_library)
        self.add_button.setEnabled(False)
        row.addWidget(QLabel("Weights"))
        row.addWidget(self.weights_combo, 1)
        row.addWidget(self.add_button)
        cl.addLayout(row)
        self.trust = QCheckBox("Trust this package's code")
        self.trust.setVisible(False)
        self.trust.toggled.connect(self._update_options)
        self.trust_warning = QLabel(_TRUST_WARNING)
        self.trust_warning.setWordWrap(True)
        self.trust_warning.setStyleSheet("color: #d9822b")
        self.trust_warning.setVisible(False)
        cl.addWidget(self.trust)
        cl.addWidget(self.trust_warning)
        root.addWidget(card)

        run = QGroupBox("Run on an image")
        rl = QVBoxLayout(run)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.segment)
        root.addWidget(run)

        self.export_box = QCollapsible("Export a model as a package")
        exp = QWidget()
        form = QFormLayout(exp)
        self.export_model = QComboBox()
        from ..presets import PRESETS

        for name in PRESETS:
            self.export_model.addItem(name, name)
        self.export_model.addItem("Checkpoint file…", _OPEN_FILE)
        self.export_model.activated.connect(self._on_export_model_activated)
        self.export_out = QLineEdit()
        self.export_out.setPlaceholderText("my-model.zip")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_export_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.export_out, 1)
        out_row.addWidget(browse)
        self.export_name = QLineEdit()
        self.export_name.setPlaceholderText("(the model's name)")
        self.export_description = QLineEdit()
        self.export_description.setPlaceholderText("(the model's description)")
        self.export_authors = QLineEdit()
        self.export_authors.setPlaceholderText("First Last; Second Author")
        self.export_license = QComboBox()
        self.export_license.setEditable(True)
        self.export_license.addItems(_LICENSES)
        self.export_cite = QLineEdit()
        self.export_cite.setPlaceholderText("optional: Text of the reference | DOI or URL")
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)
        form.addRow("Model", self.export_model)
        form.addRow("Package file", out_row)
        form.addRow("Name", self.export_name)
        form.addRow("Description", self.export_description)
        form.addRow("Authors", self.export_authors)
        form.addRow("Licence", self.export_license)
        form.addRow("Cite", self.export_cite)
        form.addRow(self.export_button)
        self.export_box.addWidget(exp)
        root.addWidget(self.export_box)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.status)
        root.addStretch(1)

    # ------------------------------------------------------------------ napari hooks

    def reset_choices(self, *args: Any) -> None:
        """napari calls this when layers change: the embedded Segment form lists image layers."""
        self.segment.reset_choices(*args)

    @property
    def running(self) -> bool:
        return self._job is not None or self.segment.running

    # ------------------------------------------------------------------ package choice

    def refresh_library(self, select: str | None = None) -> None:
        from ..zoo import library

        current = select or self.package_combo.currentData()
        self.package_combo.blockSignals(True)
        self.package_combo.clear()
        self.package_combo.addItem("(choose a package)", _NONE)
        for e in library.entries():
            self.package_combo.addItem(f"{e.name} (library)", str(e.folder))
            self.package_combo.setItemData(self.package_combo.count() - 1, e.meta.get("package_name", e.name), Qt.ItemDataRole.ToolTipRole)
        self.package_combo.addItem("Open package file (zip, rdf.yaml)…", _OPEN_FILE)
        self.package_combo.addItem("Open package folder…", _OPEN_DIR)
        if current:
            idx = self.package_combo.findData(current)
            if idx < 0 and current not in (_NONE, _OPEN_FILE, _OPEN_DIR):
                self.package_combo.insertItem(self.package_combo.count() - 2, Path(current).name, current)
                idx = self.package_combo.findData(current)
            self.package_combo.setCurrentIndex(max(idx, 0))
        self.package_combo.blockSignals(False)

    def _on_package_activated(self, index: int) -> None:
        data = self.package_combo.itemData(index)
        path = None
        if data == _OPEN_FILE:
            path, _ = QFileDialog.getOpenFileName(self, "Open a BioImage Model Zoo package", "", "Packages (*.zip *.yaml *.yml);;All files (*)")
        elif data == _OPEN_DIR:
            path = QFileDialog.getExistingDirectory(self, "Open a package folder")
        elif data not in (None, _NONE):
            path = data
        if path:
            self.open_package(path)
        elif self.info is not None:
            self.refresh_library(select=self.info["path"])

    def open_package(self, path: str | Path, *, add_test_input: bool = False) -> None:
        """Read a package's card in a worker, then point the Run section at it."""
        if self._job is not None:
            return
        path = str(path)
        self.refresh_library(select=path)
        self.status.setText(f"Reading {Path(path).name}…")
        self._start(lambda progress, cancel: _describe(path, add_test_input), f"Read {Path(path).name}", self._show_card, "Could not open the package")

    def _start(self, fn, desc: str, on_done, failed: str) -> None:
        """Run ``fn`` in a worker; one at a time (describe, add to library, export)."""
        holder: dict = {}

        def finished() -> None:
            if self._job is holder["job"]:
                self._job = None
            self.export_button.setEnabled(self._job is None)

        holder["job"] = self._job = Job(fn, desc=desc, on_done=on_done, on_failed=lambda exc: self.status.setText(f"{failed}: {exc}"), on_finished=finished)
        self._job.start()

    def _show_card(self, info: dict) -> None:
        import html

        self.info = info
        e = html.escape
        rows = [f"<b>{e(info['name'])}</b>" + (f" {e(info['version'])}" if info["version"] else "") + f" <span style='color:gray'>(spec {e(info['format_version'])})</span>"]
        if info["description"]:
            rows.append(e(info["description"]))
        rows += [f"<b>input</b> {e(i)}: {e(a)}" for i, a in info["inputs"]]
        rows += [f"<b>output</b> {e(i)}: {e(a)}" for i, a in info["outputs"]]
        w = ", ".join(info["local"]) or "none present"
        if info["remote"]:
            w += f" (only by URL, not used: {', '.join(info['remote'])})"
        rows.append(f"<b>weights</b> {e(w)}")
        rows.append(f"<b>licence</b> {e(info['license'] or '?')}")
        if info["authors"]:
            rows.append(f"<b>authors</b> {e('; '.join(info['authors']))}")
        rows += [f"<b>cite</b> {e(c)}" for c in info["cite"]]
        self.card_text.setText("<br>".join(rows))
        pix = QPixmap(info["cover"]) if info["cover"] else QPixmap()
        self.cover.setVisible(not pix.isNull())
        if not pix.isNull():
            self.cover.setPixmap(pix.scaledToWidth(320, Qt.TransformationMode.SmoothTransformation))
        self.weights_combo.blockSignals(True)
        self.weights_combo.clear()
        self.weights_combo.addItem("auto", None)
        for f in info["runnable"]:
            self.weights_combo.addItem(f, f)
        self.weights_combo.blockSignals(False)
        self.trust.blockSignals(True)
        self.trust.setChecked(False)
        self.trust.blockSignals(False)
        self.trust.setVisible(info["needs_trust"])
        self.trust_warning.setVisible(info["needs_trust"])
        from ..zoo import library

        self.add_button.setEnabled(library.models_dir() not in Path(info["path"]).resolve().parents)
        self.segment.set_model(info["path"])
        self._update_options()
        card = info["card"]
        if card is not None:  # exported by napari-impc-dl: its postprocessing defaults
            self.segment.foreground.setValue(card.instances.foreground_threshold)
            self.segment.seed.setValue(card.instances.seed_threshold)
            self.segment.min_size.setValue(card.instances.min_size)
        if info.get("test_input") is not None:
            self.viewer.add_image(info["test_input"], name=f"{info['name']} test input")
        note, self._note = self._note, None
        self.status.setText(f"{note + ' ' if note else ''}Package '{info['name']}' ready: choose an image and Run.")

    def _update_options(self, *_: Any) -> None:
        opts: dict = {}
        fmt = self.weights_combo.currentData()
        if fmt:
            opts["weights"] = fmt
        if self.info is not None and self.info["needs_trust"] and self.trust.isChecked():
            opts["trust_code"] = True
        self.segment.load_options = opts
        if self.info is not None:
            extra = (" · weights " + fmt) if fmt else ""
            if self.info["needs_trust"] and not opts.get("trust_code"):
                extra += " · needs trust to run"
            self.segment.model_info.setText(f"Model Zoo package · {', '.join(self.info['local'])}{extra}")

    def add_to_library(self) -> None:
        if self.info is None or self._job is not None:
            return
        path = self.info["path"]

        def job(progress, cancel):
            from .. import api

            return api.import_model(path)

        def done(rep) -> None:
            self.refresh_library(select=str(rep.folder))
            self.info = dict(self.info, path=str(rep.folder))
            self.segment.set_model(str(rep.folder))
            self._update_options()
            self.add_button.setEnabled(False)
            self.status.setText(f"{'Already in' if rep.already else 'Added to'} the library as '{rep.name}' (segment --model {rep.name})")

        self._start(job, "Add to library", done, "Not added")

    # ------------------------------------------------------------------ export

    def _on_export_model_activated(self, index: int) -> None:
        if self.export_model.itemData(index) != _OPEN_FILE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose a napari-impc-dl checkpoint", "", "Checkpoints (*.safetensors);;All files (*)")
        if path:
            self.set_export_model(path)
        else:
            self.export_model.setCurrentIndex(0)

    def set_export_model(self, model: str | Path) -> None:
        idx = self.export_model.findData(str(model))
        if idx < 0:
            idx = self.export_model.count() - 1
            self.export_model.insertItem(idx, Path(model).name, str(model))
        self.export_model.setCurrentIndex(idx)

    def _browse_export_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the package as", self.export_out.text() or "model.zip", "Packages (*.zip)")
        if path:
            self.export_out.setText(path if path.lower().endswith(".zip") else path + ".zip")

    def export(self) -> None:
        """Export the chosen model with the form's fields (the Export button)."""
        from napari.utils.notifications import show_error

        if self._job is not None:
            return
        model = self.export_model.currentData()
        out = self.export_out.text().strip()
        if model in (None, _OPEN_FILE) or not out:
            msg = "Choose a model and a package file (.zip) to export to"
            show_error(msg)
            self.status.setText(msg)
            return
        authors = [a.strip() for a in self.export_authors.text().replace(",", ";").split(";") if a.strip()]
        args = dict(
            name=self.export_name.text().strip() or None, description=self.export_description.text().strip() or None,
            authors=authors, license=self.export_license.currentText().strip() or None,
            cite=[self.export_cite.text().strip()] if self.export_cite.text().strip() else [],
        )

        def job(progress, cancel):
            from .. import api

            progress(0, 0, "exporting")
            return api.export_model(model, out, **args)

        def done(rep) -> None:
            self._note = f"Exported '{rep.name}' to {rep.path} ({rep.size_bytes / 2**20:.1f} MiB; re-tested: max difference {max(rep.test_max_abs_diff.values(), default=0):.1g})."
            self.status.setText(self._note)
            self._job = None  # this job is done: show the new package's card (with the note)
            self.open_package(rep.path)

        self.export_button.setEnabled(False)
        self.status.setText(f"Exporting to {out}…")
        self._start(job, "Export package", done, "Export failed")


# ----------------------------------------------------------------------------- reader: drop a package zip on napari


def _is_package_zip(path: str) -> bool:
    p = Path(path)
    if p.suffix.lower() != ".zip" or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as z:
            names = [n.rsplit("/", 1)[-1] for n in z.namelist()]
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n in ("rdf.yaml", "bioimageio.yaml") or n.endswith(".bioimageio.yaml") for n in names)


def get_reader(path: str | list[str]):
    """npe2 reader for BioImage Model Zoo package zips: opens the Model Zoo widget on the package."""
    if isinstance(path, list):
        path = path[0] if len(path) == 1 else ""
    if not path or not _is_package_zip(path):
        return None
    return read_package


def read_package(path: str | list[str]) -> list[tuple]:
    import napari

    path = path[0] if isinstance(path, list) else path
    viewer = napari.current_viewer()
    if viewer is None:
        raise InputError(f"Cannot open the package '{path}' without a napari window", "Use `napari-impc-dl zoo import` on the command line")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Model Zoo")
    widget.open_package(path, add_test_input=True)
    return [(None,)]  # napari: handled, the layers come from the widget
