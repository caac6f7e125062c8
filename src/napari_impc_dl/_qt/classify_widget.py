"""The **Classify** widget: annotate object classes by clicking, and classify objects or whole images with a CNN.

* **Annotate**: an editable list of classes (colours shown), then clicks on a Labels layer assign the
  chosen class to the object under the cursor (Alt-click clears it; Undo; keys 1-9 pick the first
  classes). Assignments live in ``layer.features["class"]`` and the layer is coloured by class, so
  the Train widget (object classification) and every CSV export see them; a CSV ``label,class`` or
  ``image,label,class`` can be loaded instead.
* **Classify**: a classifier (trained in the Train widget, a checkpoint, or a Model Zoo package).
  Object level: a Labels layer and its image: ``class`` and ``p_<class>`` join ``layer.features``,
  the layer is recoloured by the predicted class with a legend, counts per class are shown.
  Image level: one image layer or all of them: the predicted class and probabilities are shown in
  a table and kept in each layer's metadata (``napari_impc_dl.classification``), which Export
  writes as ``predictions.csv``.

The work runs in :class:`._workers.Job`; the worker gets arrays, never layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError
from . import preload_torch_libraries
from ._annotate import Annotator, colour_of, ensure_features, recolour
from ._layers import META_KEY, channels_first, find_layer, level0, unwrap
from ._library import BROWSE, EVENTS, fill_model_combo
from ._workers import Job, show_progress

if TYPE_CHECKING:
    import napari

DEFAULT_CLASSES = ["class 1", "class 2"]


def _swatch(colour: str) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor(colour))
    return QIcon(pix)


class ClassifyWidget(QWidget):
    """Dock widget: annotate objects by clicking, and classify objects or images."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._job: Job | None = None
        self.annotator: Annotator | None = None
        self.predictions = None
        """The last image-level predictions (a DataFrame), also kept in each image layer's metadata."""
        self._build()
        self.reset_choices()
        EVENTS.models_changed.connect(self.refresh_models)
        self.destroyed.connect(lambda *_: EVENTS.models_changed.disconnect(self.refresh_models))
        self.refresh_models()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        ann = QGroupBox("Annotate objects")
        af = QVBoxLayout(ann)
        top = QFormLayout()
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("The Labels layer whose objects you annotate (and classify)")
        self.labels_combo.currentIndexChanged.connect(self._on_labels_changed)
        top.addRow("Labels", self.labels_combo)
        af.addLayout(top)
        self.class_list = QListWidget()
        self.class_list.setToolTip("Classes: pick one, then click objects. Keys 1-9 pick the first nine. Double-click to rename")
        self.class_list.setMaximumHeight(110)
        self.class_list.itemChanged.connect(self._on_class_renamed)
        for c in DEFAULT_CLASSES:
            self._add_class_item(c)
        self.class_list.setCurrentRow(0)
        af.addWidget(self.class_list)
        row = QHBoxLayout()
        for text, fn, tip in (("Add", self.add_class, "Add a class"), ("Remove", self.remove_class, "Remove the chosen class (its objects become unassigned)"),
                              ("Undo", self.undo, "Undo the last assignment (Ctrl+Z)"), ("Load CSV…", self._load_csv, "Read label,class or image,label,class")):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(fn)
            row.addWidget(b)
        af.addLayout(row)
        self.annotate_box = QCheckBox("Click objects to assign the chosen class (Alt-click clears)")
        self.annotate_box.toggled.connect(self._on_annotate_toggled)
        af.addWidget(self.annotate_box)
        self.ann_status = QLabel("")
        self.ann_status.setStyleSheet("color: gray")
        af.addWidget(self.ann_status)

        cls = QGroupBox("Classify")
        cf = QFormLayout(cls)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("A classifier: trained in the Train widget, a checkpoint or a Model Zoo package")
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        cf.addRow("Model", self.model_combo)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        self.model_info.setStyleSheet("color: gray")
        cf.addRow("", self.model_info)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image the objects were found in (object level), or the image to classify (image level)")
        cf.addRow("Image", self.image_combo)
        self.all_images = QCheckBox("all image layers (image level)")
        cf.addRow("", self.all_images)
        self.device = QComboBox()
        for d in ("auto", "cpu", "cuda", "mps"):
            self.device.addItem(d, d)
        cf.addRow("Device", self.device)
        self.run_button = QPushButton("Classify")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(lambda: self._job and self._job.cancel())
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        cf.addRow(buttons)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.legend = QLabel("")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setVisible(False)
        self.table.setMaximumHeight(180)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        root = QVBoxLayout(self)
        root.addWidget(ann)
        root.addWidget(cls)
        root.addWidget(self.progress)
        root.addWidget(self.legend)
        root.addWidget(self.table)
        root.addWidget(self.status)
        root.addStretch(1)

    # ------------------------------------------------------------------ classes

    def classes(self) -> list[str]:
        return [self.class_list.item(i).text() for i in range(self.class_list.count())]

    def current_class(self) -> str:
        item = self.class_list.currentItem()
        return item.text() if item is not None else ""

    def _add_class_item(self, name: str) -> None:
        item = QListWidgetItem(_swatch(colour_of(self.class_list.count())), name)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        item.setData(Qt.ItemDataRole.UserRole, name)
        self.class_list.blockSignals(True)
        self.class_list.addItem(item)
        self.class_list.blockSignals(False)

    def set_classes(self, names: list[str]) -> None:
        """Replace the class list (e.g. with a classifier's classes or a sample's)."""
        self.class_list.clear()
        for n in names:
            self._add_class_item(n)
        self.class_list.setCurrentRow(0)
        self._refresh_annotations()

    def add_class(self, name: str | None = None) -> None:
        if not name:
            name, ok = QInputDialog.getText(self, "New class", "Class name:")
            if not ok or not name.strip():
                return
        name = name.strip()
        if name in self.classes():
            return
        self._add_class_item(name)
        self.class_list.setCurrentRow(self.class_list.count() - 1)
        self._refresh_annotations()

    def remove_class(self) -> None:
        row = self.class_list.currentRow()
        if row < 0:
            return
        name = self.class_list.item(row).text()
        self.class_list.takeItem(row)
        if self.annotator is not None:
            self.annotator.rename(name, "")
        self._reswatch()
        self._refresh_annotations()

    def _reswatch(self) -> None:
        self.class_list.blockSignals(True)
        for i in range(self.class_list.count()):
            self.class_list.item(i).setIcon(_swatch(colour_of(i)))
        self.class_list.blockSignals(False)

    def _on_class_renamed(self, item: QListWidgetItem) -> None:
        old, new = item.data(Qt.ItemDataRole.UserRole), item.text().strip()
        if old == new:
            return
        item.setData(Qt.ItemDataRole.UserRole, new)
        if self.annotator is not None and old:
            self.annotator.rename(old, new)

    def select_class(self, index: int) -> None:
        """Pick the ``index``-th class (keys 1-9)."""
        if 0 <= index < self.class_list.count():
            self.class_list.setCurrentRow(index)

    # ------------------------------------------------------------------ annotating

    def labels_layer(self):
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _on_labels_changed(self, *_: Any) -> None:
        was = self.annotate_box.isChecked()
        self._detach()
        if was:
            self.annotate_box.setChecked(False)
            self.annotate_box.setChecked(True)
        self._refresh_annotations()

    def _detach(self) -> None:
        if self.annotator is not None:
            self.annotator.stop()
            self.annotator = None

    def _attach(self) -> Annotator | None:
        layer = self.labels_layer()
        if layer is None:
            return None
        if self.annotator is None or unwrap(self.annotator.layer) is not unwrap(layer):
            self._detach()
            self.annotator = Annotator(layer, self.classes, self.current_class, on_change=self._refresh_annotations)
            known = [c for c in dict.fromkeys(layer.features["class"].astype(str)) if c and c not in self.classes()]
            for c in known:  # classes already on the layer (a loaded CSV, a reopened session)
                self._add_class_item(c)
            for k in range(9):
                layer.bind_key(str(k + 1), lambda _layer, k=k: self.select_class(k), overwrite=True)
            layer.bind_key("Control-z", lambda _layer: self.undo(), overwrite=True)
        return self.annotator

    def _on_annotate_toggled(self, on: bool) -> None:
        ann = self._attach()
        if ann is None:
            if on:
                self.ann_status.setText("Choose a Labels layer first")
            return
        ann.start() if on else ann.stop()
        if on:
            self.viewer.layers.selection.active = ann.layer

    def undo(self) -> None:
        if self.annotator is not None:
            self.annotator.undo()

    def _refresh_annotations(self) -> None:
        layer = self.labels_layer()
        if layer is None or "class" not in layer.features.columns:
            self.ann_status.setText("")
            return
        counts = layer.features["class"].astype(str).value_counts()
        n = len(layer.features)
        parts = [f"{c}: {int(counts.get(c, 0))}" for c in self.classes()]
        self.ann_status.setText(f"{n - int(counts.get('', 0))} of {n} objects have a class · " + ", ".join(parts))
        if self.annotator is not None:
            recolour(layer, self.classes())

    def _load_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Classes of objects (CSV)", "", "CSV (*.csv)")
        if path:
            self.load_classes_csv(path)

    def load_classes_csv(self, path: str | Path) -> int:
        ann = self._attach()
        if ann is None:
            raise InputError("Choose a Labels layer first", "")
        n = ann.load_csv(path)
        for c in dict.fromkeys(ann.layer.features["class"].astype(str)):
            if c and c not in self.classes():
                self._add_class_item(c)
        self._reswatch()
        self._refresh_annotations()
        return n

    # ------------------------------------------------------------------ models

    def refresh_models(self, *_: Any) -> None:
        fill_model_combo(self.model_combo, task="classification", browse="Classifier file or package…")
        self._on_model_changed()

    def set_model(self, model: str | Path) -> None:
        idx = self.model_combo.findData(str(model))
        if idx < 0:
            idx = self.model_combo.count() - 1
            self.model_combo.insertItem(idx, Path(model).name, str(model))
        self.model_combo.setCurrentIndex(idx)

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) != BROWSE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose a classifier", "", "Models (*.safetensors *.zip *.yaml);;All files (*)")
        if path:
            self.set_model(path)

    def _card(self):
        from ..classify.loading import checkpoint_path
        from ..models.checkpoint import read_card

        from ..presets import classifier_path, get

        ref = self.model_combo.currentData()
        if ref in (None, BROWSE):
            return None
        path = classifier_path(ref) if get(ref) is not None and not Path(str(ref)).exists() else checkpoint_path(ref)
        return read_card(path) if path.suffix == ".safetensors" else None

    def _on_model_changed(self, *_: Any) -> None:
        try:
            card = self._card()
        except InputError as exc:
            self.model_info.setText(str(exc))
            return
        if card is None:
            self.model_info.setText("" if self.model_combo.currentData() in (None, BROWSE) else "described when it is loaded")
            return
        spec = card.classification
        about = f"{card.description}\n" if card.description else ""
        self.model_info.setText(f"{about}{spec.level} level · classes: {', '.join(spec.classes)} · {card.architecture.encoder} · hash {card.short_hash}")
        self.model_info.setToolTip(card.provenance.trained_on or card.description)

    def reset_choices(self, *_: Any) -> None:
        import napari.layers

        for combo, kind in ((self.labels_combo, napari.layers.Labels), (self.image_combo, napari.layers.Image)):
            cur = combo.currentText()
            names = [lyr.name for lyr in self.viewer.layers if isinstance(lyr, kind)]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)
            combo.blockSignals(False)
        if self.annotator is not None and find_layer(self.viewer, self.annotator.layer) is None:
            self._detach()
        self._refresh_annotations()

    # ------------------------------------------------------------------ classifying

    @property
    def running(self) -> bool:
        return self._job is not None

    def run(self) -> None:
        """Classify (the Classify button)."""
        from napari.utils.notifications import show_error

        if self._job is not None:
            return
        ref = self.model_combo.currentData()
        try:
            if ref in (None, BROWSE):
                raise InputError("No classifier is chosen", "Train one in the Train widget, or choose a file")
            card = self._card()
            level = card.classification.level if card is not None else None
            images = [lyr for lyr in self.viewer.layers if lyr.__class__.__name__ == "Image"]
            if level == "object" or (level is None and self.labels_layer() is not None and not self.all_images.isChecked()):
                lab = self.labels_layer()
                img = self.viewer.layers[self.image_combo.currentText()] if self.image_combo.currentText() else None
                if lab is None or img is None:
                    raise InputError("Object classification needs a Labels layer and its image", "Choose them under Labels and Image")
                inputs = {"labels": np.asarray(level0(lab)), "image": channels_first(img), "name": img.name}
                target = ("object", lab)
            else:
                chosen = images if self.all_images.isChecked() else [self.viewer.layers[self.image_combo.currentText()]] if self.image_combo.currentText() else []
                if not chosen:
                    raise InputError("No image layer is chosen", "Choose one under Image, or tick all image layers")
                inputs = {"images": [(channels_first(i), i.name) for i in chosen]}
                target = ("image", chosen)
        except InputError as exc:
            show_error(str(exc))
            self.status.setText(str(exc))
            return
        device = self.device.currentData()

        def job(progress, cancel):
            from .. import api
            from ..classify.predict import classify_images, classify_objects
            from ..io.image import ImageSource

            progress(0, 0, "loading model")
            preload_torch_libraries()
            model = api.load_classifier(ref, device=device)
            if "labels" in inputs:
                src = ImageSource.from_array(inputs["image"], name=inputs["name"])
                table = classify_objects(model, src, inputs["labels"], progress=lambda d, t: progress(d, t, "objects"), cancel=cancel)
            else:
                srcs = [ImageSource.from_array(a, name=n) for a, n in inputs["images"]]
                table = classify_images(model, srcs, progress=lambda d, t: progress(d, t, "images"), cancel=cancel)
            return model.classes, {"name": model.info.name, "hash": model.info.content_hash}, table

        self._job = Job(job, desc="Classify", on_done=lambda v: self._show(target, v), on_failed=lambda e: self.status.setText(f"Stopped: {e}"),
                        on_progress=self._progress, on_finished=self._finished, owner=self)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText("Classifying…")
        self._job.start()

    def _progress(self, done: int, total: int, stage: str) -> None:
        show_progress(self.progress, done, total, stage)

    def _finished(self) -> None:
        self._job = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    def _show(self, target, value) -> None:
        """GUI thread: put the predictions on the layers, recolour, legend and counts."""
        classes, model, table = value
        kind, where = target
        if kind == "object":
            self._show_objects(where, classes, model, table)
        else:
            self._show_images(where, classes, model, table)

    def _show_objects(self, layer, classes, model, table) -> None:
        from ..classify.files import merge_classes

        ensure_features(layer)
        feats = layer.features
        if "class" in feats.columns and (feats["class"].astype(str) != "").any() and "annotated" not in feats.columns:
            feats = feats.assign(annotated=feats["class"].astype(str))  # the user's own classes stay beside the predictions
        base = feats.drop(columns=[c for c in feats.columns if c == "label"]).assign(label=feats["index"].astype("int64"))
        merged = merge_classes(base, table, classes, model)
        merged["index"] = merged["label"]
        layer.features = merged
        column = "class"
        if not set(classes) <= set(self.classes()):
            self.set_classes(list(classes))
        order = self.classes()  # the class list's colours, so list, layer and legend agree
        recolour(layer, order, column)
        counts = merged[column].value_counts()
        self.legend.setText("  ".join(f"<span style='color:{colour_of(k)}'>&#9632;</span> {c}: {int(counts.get(c, 0))}" for k, c in enumerate(order) if c in classes))
        self._refresh_annotations()
        meta = dict(layer.metadata.get(META_KEY) or {}) if isinstance(layer.metadata, dict) else {}
        meta["classifier"] = model
        layer.metadata = {**(layer.metadata or {}), META_KEY: meta}
        from ..measure.counts import add_counts
        from ..measure.summary import count_summary

        row = add_counts({"n_objects": len(table)}, list(classes), merged[merged["class"].astype(str) != ""])
        self.status.setText(f"{count_summary(row)}\nclassified with {model['name']} ({model['hash']})")

    def _show_images(self, layers, classes, model, table) -> None:
        self.predictions = table.assign(model_name=model["name"], model_hash=model["hash"])
        for layer in layers:
            rows = table[table["image"] == layer.name]
            if not len(rows):
                continue
            r = rows.iloc[0]
            meta = dict(layer.metadata.get(META_KEY) or {}) if isinstance(layer.metadata, dict) else {}
            meta["classification"] = {"class": r["class"], **{f"p_{c}": float(r[f"p_{c}"]) for c in classes}, "model_name": model["name"], "model_hash": model["hash"]}
            layer.metadata = {**(layer.metadata or {}), META_KEY: meta}
        cols = ["image", "class"] + [f"p_{c}" for c in classes]
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.setRowCount(len(table))
        for i, (_, r) in enumerate(table.iterrows()):
            for j, c in enumerate(cols):
                v = r[c]
                self.table.setItem(i, j, QTableWidgetItem(f"{v:.3f}" if isinstance(v, float) else str(v)))
        self.table.setVisible(True)
        self.legend.setText(", ".join(f"{c}: {int((table['class'] == c).sum())}" for c in classes))
        self.status.setText(f"{len(table)} image(s) classified with {model['name']} ({model['hash']})")
