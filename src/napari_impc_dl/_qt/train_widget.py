"""The **Train** widget: train or fine-tune a segmentation U-Net or a classifier from layers or folders, with a live plot.

Thin by design: it gathers the data (layers are read here, in the GUI thread, before the run) and
the settings, and runs :func:`napari_impc_dl.api.train_segmentation` / ``train_classification`` in a
worker (:class:`._workers.Job`) — the same functions and defaults as ``napari-impc-dl train``, so the
same data and seed give the same history. Each epoch's row comes back through the progress
channel and is drawn in the dock (:class:`._plot.CurvesPlot`); **Stop** ends the run after the
current step and keeps the best model so far. The model is saved in a folder of the user's model
library (shown, and changeable) and appears at once in the Segment and Classify widgets' menus.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..config import ClassificationTrainConfig, SegmentationTrainConfig
from ..errors import CancelToken, InputError
from . import preload_torch_libraries
from ._layers import channels_first, level0
from ._library import BROWSE, EVENTS, fill_model_combo
from ._plot import CurvesPlot
from ._workers import Job, show_progress

if TYPE_CHECKING:
    import napari

TASKS = [("Segmentation (U-Net)", "segmentation"), ("Object classification", "object"), ("Image classification", "image")]
_SCRATCH = "__scratch__"
_SEG = SegmentationTrainConfig.model_fields
_CLS = ClassificationTrainConfig.model_fields


class _Either:
    """A cancel token that is set when the Stop button's or napari's (activity dock) token is."""

    def __init__(self, *tokens: CancelToken) -> None:
        self.tokens = tokens

    @property
    def cancelled(self) -> bool:
        return any(t.cancelled for t in self.tokens)

    def raise_if_cancelled(self) -> None:
        for t in self.tokens:
            t.raise_if_cancelled()


def _zoo_entries():
    from ..zoo import library

    return library.entries()


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class TrainWidget(QWidget):
    """Dock widget: train a model on Image + Labels layers (or folders) and watch its curves."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._job: Job | None = None
        self._stop = CancelToken()
        self._records: queue.Queue = queue.Queue()
        self.history: list[dict] = []
        self.last_report = None
        self._build()
        self.reset_choices()
        self._on_task_changed()

    # ------------------------------------------------------------------ layout

    def _spin(self, lo, hi, value, tip, *, step=1, decimals=None, suffix=""):
        s = QDoubleSpinBox() if decimals is not None else QSpinBox()
        if decimals is not None:
            s.setDecimals(decimals)
        s.setRange(lo, hi)
        s.setSingleStep(step)
        s.setValue(value)
        s.setToolTip(tip)
        if suffix:
            s.setSuffix(suffix)
        return s

    def _build(self) -> None:
        form = QFormLayout()
        self.task_combo = QComboBox()
        for label, key in TASKS:
            self.task_combo.addItem(label, key)
        self.task_combo.setToolTip("What to teach: find objects (segmentation), name each object, or name whole images")
        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        form.addRow("Task", self.task_combo)

        self.source_combo = QComboBox()
        self.source_combo.addItem("Layers in the viewer", "layers")
        self.source_combo.addItem("Folders on disk", "folders")
        self.source_combo.currentIndexChanged.connect(self._on_source_changed)
        form.addRow("Data from", self.source_combo)

        # data: layer pairs, image table, or folders (one page each)
        self.data_stack = QStackedWidget()
        self.pairs = QListWidget()
        self.pairs.setToolTip("Tick the Labels layers to train on; each is paired with the image it was made from")
        self.pairs.setMaximumHeight(110)
        self.images_table = QTableWidget(0, 2)
        self.images_table.setHorizontalHeaderLabels(["Image layer", "Class"])
        self.images_table.horizontalHeader().setStretchLastSection(True)
        self.images_table.setToolTip("Tick the image layers to train on and type each one's class")
        self.images_table.setMaximumHeight(140)
        folders = QWidget()
        ff = QFormLayout(folders)
        ff.setContentsMargins(0, 0, 0, 0)
        self.folder_edits: dict[str, QLineEdit] = {}
        for key, label, tip in (
            ("images", "Images", "Folder of images (segmentation, objects)"),
            ("masks", "Masks / labels", "Folder of instance masks / label images, same file names as the images"),
            ("data", "Classes", "Objects: a CSV image,label,class. Images: a folder with one folder per class, or a CSV path,class"),
        ):
            edit = QLineEdit()
            edit.setToolTip(tip)
            browse = QPushButton("…")
            browse.setFixedWidth(28)
            browse.clicked.connect(lambda _=False, e=edit, k=key: self._browse(e, k))
            row = QHBoxLayout()
            row.addWidget(edit)
            row.addWidget(browse)
            ff.addRow(label, row)
            self.folder_edits[key] = edit
        self.data_stack.addWidget(self.pairs)
        self.data_stack.addWidget(self.images_table)
        self.data_stack.addWidget(folders)

        self.start_combo = QComboBox()
        self.start_combo.setToolTip("Start from random weights, a bundled or trained model, or a checkpoint / Model Zoo package")
        self.start_combo.activated.connect(self._on_start_activated)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("fine-tune (all layers)", "fine-tune")
        self.mode_combo.addItem("head-only (encoder frozen)", "head-only")
        self.mode_combo.setToolTip("Fine-tune: every layer learns (the encoder more slowly). Head-only: the encoder stays as it was: quicker, needs a starting model")

        self.epochs = self._spin(1, 100_000, _SEG["epochs"].default, "How many times the model sees all the training data (early stopping may end sooner)")
        self.patch = self._spin(32, 4096, _SEG["patch"].default, "Side of the square pieces cut from the images for each training step (segmentation)", step=32, suffix=" px")
        self.size = self._spin(16, 2048, 64, "Side the crops (objects) or images are resized to before the network sees them", step=16, suffix=" px")
        self.val = self._spin(1, 80, int(_SEG["val_fraction"].default * 100), "Share of the images kept aside to check the model on data it never trained on", suffix=" %")
        self.lr = self._spin(1e-6, 1.0, _SEG["lr"].default, "Learning rate: how big each update step is (3e-4 works for most data)", step=1e-4, decimals=6)
        self.min_fg = self._spin(0.0, 0.99, _SEG["min_foreground"].default, "Training pieces are re-drawn until at least this share of their pixels is foreground (segmentation)", step=0.01, decimals=3)
        self.time_limit = self._spin(0, 100_000, 0, "Stop after this many minutes (0: no limit); the best model so far is kept", suffix=" min")
        self.time_limit.setSpecialValueText("none")

        self.advanced = QCollapsible("Advanced")
        adv = QWidget()
        af = QFormLayout(adv)
        af.setContentsMargins(0, 0, 0, 0)
        self.batch = self._spin(0, 4096, 0, "Samples per step (auto: 8 patches, 32 crops or images)")
        self.batch.setSpecialValueText("auto")
        self.arch = QComboBox()
        self.arch.setToolTip("Network (ignored when starting from one of our models: its own is used)")
        self.patience = self._spin(0, 100_000, _SEG["patience"].default, "Stop when the validation figure has not improved for this many epochs (0: never)")
        self.seed = self._spin(0, 2**31 - 1, 0, "Same seed, same split and same run")
        self.device = QComboBox()
        for d in ("auto", "cpu", "cuda", "mps"):
            self.device.addItem(d, d)
        self.obj_input = QComboBox()
        for v in ("image+mask", "image", "mask"):
            self.obj_input.addItem(v, v)
        self.obj_input.setToolTip("What the network sees of each object: the image, its mask, or both")
        self.resize = QComboBox()
        for v in ("pad", "crop", "stretch"):
            self.resize.addItem(v, v)
        self.resize.setToolTip("Images: keep the aspect and pad, keep it and crop the centre, or stretch to the square")
        for label, w in (("Batch", self.batch), ("Network", self.arch), ("Patience", self.patience), ("Seed", self.seed), ("Device", self.device), ("Objects show", self.obj_input), ("Resize", self.resize)):
            af.addRow(label, w)
        self.advanced.addWidget(adv)

        self.name = QLineEdit("my-model")
        self.name.setToolTip("The model's name; it is saved in a folder of your model library")
        self.name.textChanged.connect(self._update_out_label)
        self.out_label = QLabel()
        self.out_label.setWordWrap(True)
        self.out_label.setStyleSheet("color: gray")
        self.out_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.out_button = QPushButton("Save elsewhere…")
        self.out_button.clicked.connect(self._choose_out)
        self._out_override: Path | None = None

        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End after the current step; the best model so far is kept")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.eta = QLabel("")
        self.plot = CurvesPlot()
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.confusion = QLabel()
        self.confusion.setAlignment(Qt.AlignmentFlag.AlignCenter)

        root = QVBoxLayout(self)
        root.addLayout(form)
        root.addWidget(self.data_stack)
        params = QFormLayout()
        params.addRow("Start from", self.start_combo)
        params.addRow("Mode", self.mode_combo)
        params.addRow("Epochs", self.epochs)
        self._patch_row = ("Patch size", self.patch)
        params.addRow(*self._patch_row)
        params.addRow("Input size", self.size)
        params.addRow("Validation", self.val)
        params.addRow("Learning rate", self.lr)
        params.addRow("Min foreground", self.min_fg)
        params.addRow("Time limit", self.time_limit)
        params.addRow("Name", self.name)
        self.params = params
        root.addLayout(params)
        root.addWidget(self.out_label)
        root.addWidget(self.out_button)
        root.addWidget(self.advanced)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        root.addLayout(buttons)
        root.addWidget(self.progress)
        root.addWidget(self.eta)
        root.addWidget(self.plot)
        root.addWidget(self.result)
        root.addWidget(self.confusion)
        root.addStretch(1)

    # ------------------------------------------------------------------ choices

    @property
    def task(self) -> str:
        return self.task_combo.currentData()

    def _on_task_changed(self, *_: Any) -> None:
        from ..models.classifiers import CLASSIFIERS
        from ..models.registry import ENCODERS

        seg = self.task == "segmentation"
        for w in (self.patch, self.min_fg):
            w.setEnabled(seg)
        self.size.setEnabled(not seg)
        self.size.setValue(64 if self.task == "object" else 224 if self.task == "image" else self.size.value())
        self.obj_input.setEnabled(self.task == "object")
        self.resize.setEnabled(self.task == "image")
        self.arch.clear()
        for key in (ENCODERS if seg else CLASSIFIERS):
            self.arch.addItem(key, key)
        self.arch.setCurrentIndex(max(0, self.arch.findData("mobilenetv3-minimal" if seg else "resnet18")))
        self._fill_start()
        self._on_source_changed()
        self._update_out_label()

    def _fill_start(self) -> None:
        seg = self.task == "segmentation"
        before = self.start_combo.currentData()
        fill_model_combo(self.start_combo, task="instance-segmentation" if seg else "classification", level=None if seg else self.task, browse="Checkpoint or package file…")
        self.start_combo.insertItem(0, "scratch (random weights)", _SCRATCH)
        for e in _zoo_entries():  # imported Model Zoo packages with state-dict weights (matched by tensor names and shapes)
            if "pytorch_state_dict" in e.meta.get("formats", []):
                self.start_combo.insertItem(self.start_combo.count() - 1, f"{e.name} (Model Zoo)", str(e.folder))
        kept = self.start_combo.findData(before) if before not in (None, BROWSE, _SCRATCH) else -1
        self.start_combo.setCurrentIndex(max(0, kept))  # scratch unless the user had chosen a model that is still offered

    def _on_start_activated(self, index: int) -> None:
        if self.start_combo.itemData(index) != BROWSE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Start from a model", "", "Models (*.safetensors *.pt *.pth *.zip *.yaml);;All files (*)")
        if path:
            self.start_combo.insertItem(self.start_combo.count() - 1, Path(path).name, path)
            self.start_combo.setCurrentIndex(self.start_combo.count() - 2)
        else:
            self.start_combo.setCurrentIndex(0)

    def _on_source_changed(self, *_: Any) -> None:
        layers = self.source_combo.currentData() == "layers"
        self.data_stack.setCurrentIndex(2 if not layers else 1 if self.task == "image" else 0)
        self.folder_edits["masks"].setEnabled(self.task != "image")
        self.folder_edits["images"].setEnabled(self.task != "image")
        self.folder_edits["data"].setEnabled(self.task != "segmentation")

    def _browse(self, edit: QLineEdit, key: str) -> None:
        if key == "data":
            path, _ = QFileDialog.getOpenFileName(self, "Classes (CSV), or cancel to pick a folder", "", "CSV (*.csv)")
            if not path:
                path = QFileDialog.getExistingDirectory(self, "A folder with one folder per class")
        else:
            path = QFileDialog.getExistingDirectory(self, f"Folder of {key}")
        if path:
            edit.setText(path)

    def _choose_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder to save the model in (a new subfolder is made)")
        if path:
            self._out_override = Path(path)
            self._update_out_label()

    def out_dir(self) -> Path:
        from ..training.library import default_out

        if self._out_override is not None:
            return self._out_override / (self.name.text().strip() or "model")
        return default_out(self.name.text().strip() or "model")

    def _update_out_label(self, *_: Any) -> None:
        self.out_label.setText(f"Will be saved to: {self.out_dir()}")

    def set_out_dir(self, folder: str | Path) -> None:
        """Save the next model in ``folder`` (its parent must exist); the name becomes the folder's name."""
        folder = Path(folder)
        self._out_override = folder.parent
        self.name.setText(folder.name)

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer lists (napari calls this when layers change)."""
        import napari.layers

        checked = {self.pairs.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.pairs.count()) if self.pairs.item(i).checkState() == Qt.CheckState.Checked}
        self.pairs.clear()
        images = [lyr for lyr in self.viewer.layers if isinstance(lyr, napari.layers.Image)]
        for lab in (lyr for lyr in self.viewer.layers if isinstance(lyr, napari.layers.Labels)):
            img = self._image_for(lab, images)
            n = int((lab.features["class"].astype(str) != "").sum()) if "class" in lab.features.columns else 0
            text = f"{lab.name}  ←  {img.name if img is not None else '(no matching image)'}" + (f"  ·  {n} annotated" if n else "")
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, lab.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if lab.name in checked else Qt.CheckState.Unchecked)
            self.pairs.addItem(item)
        old = {self.images_table.item(r, 0).text(): (self.images_table.item(r, 0).checkState(), self.images_table.item(r, 1).text()) for r in range(self.images_table.rowCount()) if self.images_table.item(r, 0)}
        self.images_table.setRowCount(len(images))
        for r, img in enumerate(images):
            state, cls = old.get(img.name, (Qt.CheckState.Unchecked, ""))
            name = QTableWidgetItem(img.name)
            name.setFlags((name.flags() | Qt.ItemFlag.ItemIsUserCheckable) & ~Qt.ItemFlag.ItemIsEditable)
            name.setCheckState(state)
            self.images_table.setItem(r, 0, name)
            self.images_table.setItem(r, 1, QTableWidgetItem(cls))

    @staticmethod
    def _image_for(labels, images):
        """The image a Labels layer belongs to: the one the Segment widget recorded, the name without " labels", or
        the only image of the same size."""
        from ._layers import provenance

        rec = provenance(labels) or {}
        names = {i.name: i for i in images}
        for cand in (rec.get("image"), labels.name.removesuffix(" labels"), labels.name.removesuffix("_labels")):
            if cand in names:
                return names[cand]
        shape = tuple(level0(labels).shape[-2:])
        same = [i for i in images if tuple(level0(i).shape[:2] if i.rgb else level0(i).shape[-2:]) == shape]
        return same[0] if len(same) == 1 else None

    def use_pairs(self, names: list[str]) -> None:
        """Tick these Labels layers (by name) as training data."""
        for i in range(self.pairs.count()):
            it = self.pairs.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.data(Qt.ItemDataRole.UserRole) in names else Qt.CheckState.Unchecked)

    def set_image_classes(self, classes: dict[str, str]) -> None:
        """Tick image layers and give each its class (image classification from layers)."""
        for r in range(self.images_table.rowCount()):
            name = self.images_table.item(r, 0).text()
            self.images_table.item(r, 0).setCheckState(Qt.CheckState.Checked if name in classes else Qt.CheckState.Unchecked)
            self.images_table.item(r, 1).setText(classes.get(name, self.images_table.item(r, 1).text()))

    # ------------------------------------------------------------------ the run

    def _gather(self) -> dict:
        """Everything the run needs, read from the widgets and layers now (the worker never touches the viewer)."""
        import napari.layers

        if self.source_combo.currentData() == "folders":
            e = {k: v.text().strip() or None for k, v in self.folder_edits.items()}
            if self.task == "segmentation":
                return {"images": e["images"], "masks": e["masks"]}
            if self.task == "object":
                return {"data": e["data"], "images": e["images"], "labels": e["masks"]}
            return {"data": e["data"]}
        images = [lyr for lyr in self.viewer.layers if isinstance(lyr, napari.layers.Image)]
        if self.task == "image":
            items = []
            for r in range(self.images_table.rowCount()):
                it = self.images_table.item(r, 0)
                if it.checkState() == Qt.CheckState.Checked:
                    cls = self.images_table.item(r, 1).text().strip()
                    if not cls:
                        raise InputError(f"Image layer '{it.text()}' is ticked but has no class", "Type its class in the table, or untick it")
                    items.append((channels_first(self.viewer.layers[it.text()]).copy(), cls, it.text()))
            if not items:
                raise InputError("No image layers are ticked", "Tick the images to train on and give each a class")
            return {"data": items}
        pairs = []
        for i in range(self.pairs.count()):
            it = self.pairs.item(i)
            if it.checkState() != Qt.CheckState.Checked:
                continue
            lab = self.viewer.layers[it.data(Qt.ItemDataRole.UserRole)]
            img = self._image_for(lab, images)
            if img is None:
                raise InputError(f"No image layer matches the labels '{lab.name}'", "Name the labels '<image> labels', or keep only one image of that size open")
            x = channels_first(img)
            m = np.asarray(level0(lab)).copy()
            if self.task == "segmentation":
                pairs.append((x.copy(), m, img.name))
            else:
                f = lab.features
                if "class" not in f.columns or "index" not in f.columns:
                    raise InputError(f"The labels '{lab.name}' have no annotated classes", "Annotate objects in the Classify widget first")
                classes = {int(k): str(c) for k, c in zip(f["index"], f["class"]) if str(c)}
                pairs.append((x.copy(), m, classes, img.name))
        if not pairs:
            raise InputError("No Labels layers are ticked", "Tick the Labels layers to train on (each with its image open)")
        return {"images": pairs} if self.task == "segmentation" else {"data": pairs}

    def settings(self) -> dict:
        """The training settings from the form (the ``api.train_*`` keyword arguments)."""
        start = self.start_combo.currentData()
        kw = dict(
            epochs=self.epochs.value(), lr=self.lr.value(), val_fraction=self.val.value() / 100, patience=self.patience.value(),
            seed=self.seed.value(), device=self.device.currentData(), mode=self.mode_combo.currentData(), arch=self.arch.currentData(),
            name=self.name.text().strip() or None,
        )
        if self.time_limit.value():
            kw["time_limit_min"] = float(self.time_limit.value())
        if self.batch.value():
            kw["batch"] = self.batch.value()
        if start not in (_SCRATCH, BROWSE, None):
            kw["from_model"] = str(start)
        if self.task == "segmentation":
            kw.update(patch=self.patch.value(), min_foreground=self.min_fg.value())
        else:
            kw.update(level=self.task, size=self.size.value())
            kw.update(input=self.obj_input.currentData()) if self.task == "object" else kw.update(resize=self.resize.currentData())
        return kw

    @property
    def running(self) -> bool:
        return self._job is not None

    def train(self) -> None:
        """Start training (the Train button)."""
        from napari.utils.notifications import show_error

        if self._job is not None:
            return
        try:
            data = self._gather()
            kw = self.settings()
        except InputError as exc:
            show_error(str(exc))
            self.result.setText(str(exc))
            return
        out = self.out_dir()
        task = self.task
        self._stop = CancelToken()
        stop = self._stop
        records = self._records = queue.Queue()

        def job(progress, cancel):
            from .. import api

            progress(0, 0, "loading")
            preload_torch_libraries()
            token = _Either(stop, cancel)

            def on_record(rec: dict) -> None:
                total = rec["epochs"] * rec.get("steps", 1)
                if rec["kind"] == "step":
                    done = (rec["epoch"] - 1) * rec["steps"] + rec["step"]
                    progress(done, total, f"epoch {rec['epoch']}/{rec['epochs']} · loss {rec['loss']:.3f} · ETA {_eta(rec['eta_s'])}")
                else:
                    records.put(rec)
                    done = rec["epoch"] * rec["steps"]
                    progress(done, max(done, rec["epochs"] * rec["steps"]), f"epoch {rec['epoch']} done · ETA {_eta(rec['eta_s'])}")

            if task == "segmentation":
                return api.train_segmentation(out, progress=on_record, cancel=token, command="napari Train widget", **data, **kw)
            return api.train_classification(out, progress=on_record, cancel=token, command="napari Train widget", **data, **kw)

        self.history = []
        self.plot.set_history([], [])
        self.confusion.clear()
        self.result.setText(f"Training into {out}…")
        self._job = Job(job, desc=f"Train {kw.get('name') or 'model'}", on_done=self._done, on_failed=lambda exc: self.result.setText(f"Stopped: {exc}"),
                        on_progress=self._progress, on_finished=self._finished, owner=self)
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self._job.start()

    def stop(self) -> None:
        """End the run after the current step; the best model so far is kept (the Stop button)."""
        self._stop.cancel()
        self.eta.setText("Stopping after this step…")

    def _metrics(self) -> list[str]:
        return ["f1", "iou"] if self.task == "segmentation" else ["accuracy", "balanced_accuracy"]

    def _progress(self, done: int, total: int, stage: str) -> None:
        show_progress(self.progress, done, total, "%p%", counts=False)
        self.eta.setText(stage)
        got = False
        while True:
            try:
                rec = self._records.get_nowait()
            except queue.Empty:
                break
            self.history.append({k: v for k, v in rec.items() if k != "kind"})
            got = True
        if got:
            self.plot.set_history(self.history, self._metrics())

    def _finished(self) -> None:
        self._job = None
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.progress.setVisible(False)
        self._update_out_label()

    def _done(self, report) -> None:
        """GUI thread: show the final figures and the confusion matrix; tell the other widgets about the model."""
        self._progress(0, 0, "")
        self.last_report = report
        self.history = [dict(r) for r in report.history]
        self.plot.set_history(self.history, self._metrics())
        m = report.metrics
        if report.model is None:
            self.result.setText(f"Stopped before the first epoch ended: no model was saved (last weights in {report.last}).")
            return
        if self.task == "segmentation":
            figs = f"F1@0.5 {m['f1']:.3f} · precision {m['precision']:.3f} · recall {m['recall']:.3f} · IoU {m['iou']:.3f}"
        else:
            figs = f"accuracy {m['accuracy']:.3f} · balanced accuracy {m['balanced_accuracy']:.3f} · macro F1 {m['macro_f1']:.3f}"
            png = report.out_dir / "confusion.png"
            if png.is_file():
                pix = QPixmap(str(png))
                self.confusion.setPixmap(pix.scaledToWidth(min(260, pix.width()), Qt.TransformationMode.SmoothTransformation))
        self.eta.setText("")
        self.result.setText(f"{report.stopped} after {len(report.history)} epoch(s); best epoch {report.best_epoch}.\nValidation: {figs}\nModel: {report.out_dir}")
        EVENTS.models_changed.emit()
