"""The **Segment** widget: an image layer, a model and a device in; a Labels layer with a per-object table out.

Thin by design: it gathers parameters into a :class:`~napari_impc_dl.config.SegmentConfig` and
runs :func:`napari_impc_dl.api.segment_layer` in a worker (:class:`._workers.Job`: progress bar in
the widget and in napari's activity dock, Cancel). torch is imported in that worker on the first
Run, never when the widget opens. The result becomes a Labels layer (a multiscale pyramid of
temporary zarr arrays for large images) with ``layer.features`` (one row per object) and the
model's name, hash and the run parameters in ``layer.metadata["napari_impc_dl"]``.

Postprocessing thresholds re-run only the postprocessing on the cached probabilities
(:func:`napari_impc_dl.api.relabel_layer`) a moment after they change, so their effect shows at once.

The menu's workflow entry ``skeletal`` (mouse X-rays) runs :func:`napari_impc_dl.api.analyse_xray`
instead (its six models loaded once and kept); :mod:`._skeletal_view` shows the result, and
"Save IMPC table…" writes the tables of every X-ray analysed so far (:func:`napari_impc_dl.api.save_skeletal_tables`).
"""

from __future__ import annotations

import re
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible, QLabeledDoubleSlider

from ..config import GPU_BATCH, SegmentConfig, validated
from ..errors import InputError
from ._layers import META_KEY, features_with_index, find_layer, level0, provenance, unwrap
from . import preload_torch_libraries
from ..measure.summary import count_summary
from ._library import EVENTS, WORKFLOWS, fill_model_combo
from ._workers import Job, show_progress

if TYPE_CHECKING:
    import napari

_BROWSE = "__browse__"
#: images above this many megapixels (all planes) are segmented into temporary zarr arrays
MEMORY_LIMIT_MPX = 16.0
#: label planes wider than this get a multiscale pyramid, so napari never reads a whole big plane
PYRAMID_SIDE = 4096
#: how long threshold edits settle before the postprocessing re-runs (ms)
RELABEL_DELAY_MS = 250

#: temporary zarr folders behind Labels layers made here; each folder goes when its layer is garbage-collected
_SCRATCH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def scratch_of(layer):
    """The temporary zarr folder (:class:`~napari_impc_dl.io.export.Scratch`) behind a layer, or None."""
    return _SCRATCH.get(unwrap(layer))


def _keep_scratch(layer, scratch) -> None:
    real = unwrap(layer)
    old = _SCRATCH.get(real)
    if old is scratch:
        return
    _SCRATCH[real] = scratch
    weakref.finalize(real, scratch.cleanup)
    if old is not None:
        old.cleanup()


def _classify(classifier, data, name, config, result, progress, cancel):
    """Worker thread: the objects table of ``result`` with each object's class (Segment's "Then classify")."""
    from ..classify.files import merge_classes
    from ..classify.predict import classify_objects
    from ..io.image import ImageSource

    src = ImageSource.from_array(data, name=name, channel_axis=config.channel_axis)
    table = classify_objects(classifier, src, result.labels, channel=config.channel, progress=lambda d, t: progress(d, t, "classify"), cancel=cancel)
    return merge_classes(result.objects, table, classifier.classes, {"name": classifier.info.name, "hash": classifier.info.content_hash})


@dataclass
class _Shown:
    """The last result this widget put in the viewer, with what a relabel needs."""

    layer: weakref.ref
    result: Any  # api.LayerResult
    data: Any  # the image data it came from
    config: SegmentConfig
    classifier: str | None = None  # "Then classify": a relabel classifies the new objects again


class SegmentWidget(QWidget):
    """Dock widget: segment the chosen image layer with a bundled preset or a checkpoint file."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._job: Job | None = None
        self._relabel_job: Job | None = None
        self._relabel_pending = False
        self._models: dict[tuple[str, str], Any] = {}
        self._skeletal_models: dict[str, Any] = {}  # device -> api.load_skeletal_models(device), loaded on the first run
        self._skeletal_results: dict[str, Any] = {}  # image name -> its latest SkeletalResult (what "Save IMPC table…" writes)
        self._shown: _Shown | None = None
        self._card = None
        self.load_options: dict = {}
        """Extra keyword arguments for ``api.load_model`` (the Model Zoo widget sets ``trust_code``); models
        loaded with options are not cached."""
        self._build()
        self.reset_choices()
        self.refresh_models()
        self._refresh_devices()
        EVENTS.models_changed.connect(self.refresh_models)
        self.destroyed.connect(lambda *_: EVENTS.models_changed.disconnect(self.refresh_models))

    def refresh_models(self, *_: Any) -> None:
        """Re-list presets, trained models and classifiers (a Train run just saved one)."""
        fill_model_combo(self.model_combo, task="instance-segmentation", workflows=True)
        chosen = self.classifier_combo.currentData()
        fill_model_combo(self.classifier_combo, task="classification", level="object", browse=None)
        self.classifier_combo.insertItem(0, "no", None)
        self.classifier_combo.setCurrentIndex(max(0, self.classifier_combo.findData(chosen)) if chosen else 0)
        self._on_model_changed()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        form = self._form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to segment (for a multiscale layer, its full resolution)")
        form.addRow("Image", self.image_combo)

        self.model_combo = QComboBox()
        fill_model_combo(self.model_combo, task="instance-segmentation", workflows=True)  # presets, skeletal, trained models, "Checkpoint file…"
        self._model_index = 0
        self.model_combo.activated.connect(self._on_model_activated)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        form.addRow("Model", self.model_combo)
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setStyleSheet("color: gray")
        form.addRow("", self.model_info)
        self.classifier_combo = QComboBox()
        self.classifier_combo.setToolTip("Optionally classify every object found with an object classifier (class and p_<class> columns)")
        form.addRow("Then classify", self.classifier_combo)

        self.device_combo = QComboBox()
        self.device_combo.setToolTip("auto picks a CUDA GPU, then Apple MPS, then the CPU")
        form.addRow("Device", self.device_combo)
        self.detected = QLabel()
        self.detected.setWordWrap(True)
        self.detected.setStyleSheet("color: gray")
        form.addRow("", self.detected)

        self.advanced = QCollapsible("Advanced")
        adv = QWidget()
        adv_form = QFormLayout(adv)
        adv_form.setContentsMargins(0, 0, 0, 0)
        self.tile = QSpinBox()
        self.tile.setRange(0, 8192)
        self.tile.setSingleStep(64)
        self.tile.setSpecialValueText("auto")
        self.tile.setToolTip("Tile side in pixels (fitted to the image); smaller uses less memory")
        self.halo = QSpinBox()
        self.halo.setRange(-1, 512)
        self.halo.setValue(-1)
        self.halo.setSpecialValueText("auto")
        self.halo.setToolTip("Context pixels around each tile; larger is safer and slower")
        self.batch = QSpinBox()
        self.batch.setRange(0, 64)
        self.batch.setSpecialValueText(f"auto (1 on the CPU, {GPU_BATCH} on a GPU)")
        self.batch.setToolTip("Tiles per forward pass (halved automatically on GPU out-of-memory). On the CPU a batch "
                              "is no faster and costs memory, so auto uses 1 there")
        adv_form.addRow("Tile", self.tile)
        adv_form.addRow("Halo", self.halo)
        adv_form.addRow("Batch", self.batch)
        self.advanced.addWidget(adv)

        post = self.postprocessing = QGroupBox("Postprocessing")  # hidden for class maps: they have no objects
        post_form = QFormLayout(post)
        self.foreground = self._slider("Foreground probability above which a pixel belongs to an object")
        self.seed = self._slider("Distance level that seeds an object: higher separates touching objects more (and may cut large ones in two)")
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 1_000_000)
        self.min_size.setSuffix(" px")
        self.min_size.setToolTip("Objects smaller than this are dropped")
        self.instances = QComboBox()
        for text, value in (("auto (from the model's outputs)", "auto"), ("distance", "distance"), ("boundary", "boundary"), ("threshold (no splitting)", "threshold")):
            self.instances.addItem(text, value)
        self.instances.setToolTip(
            "How probabilities become objects: distance (the model's distance map, or the distance transform of its "
            "foreground), boundary (interiors of its boundary map), threshold (connected foreground, no splitting)"
        )
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(0, 10_000)
        self.diameter.setDecimals(1)
        self.diameter.setSuffix(" px")
        self.diameter.setSpecialValueText("auto")
        self.diameter.setToolTip(
            "Expected object diameter. auto: estimated per image for models without a distance head (most Model Zoo "
            "models). It decides how touching objects are split for such models, and the minimum size for all"
        )
        post_form.addRow("Foreground", self.foreground)
        post_form.addRow("Seeds", self.seed)
        post_form.addRow("Min size", self.min_size)
        post_form.addRow("Objects", self.instances)
        post_form.addRow("Diameter", self.diameter)
        hint = QLabel("Changes re-run only the postprocessing of the last result.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: gray")
        post_form.addRow(hint)
        self._relabel_timer = QTimer(self)
        self._relabel_timer.setSingleShot(True)
        self._relabel_timer.setInterval(RELABEL_DELAY_MS)
        self._relabel_timer.timeout.connect(self._relabel)
        self._threshold_signals_on = True
        self.foreground.valueChanged.connect(self._thresholds_changed)
        self.seed.valueChanged.connect(self._thresholds_changed)
        self.min_size.valueChanged.connect(self._thresholds_changed)
        self.instances.currentIndexChanged.connect(self._thresholds_changed)
        self.diameter.valueChanged.connect(self._thresholds_changed)

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.count = QLabel("")
        font = self.count.font()
        font.setBold(True)
        self.count.setFont(font)
        self.count.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.save_button = QPushButton("Save IMPC table…")  # the skeletal workflow's tables, of every X-ray analysed so far
        self.save_button.setToolTip("Write impc_parameters.csv, impc_summary.csv, counts.csv and objects.csv of the X-rays analysed so far")
        self.save_button.setVisible(False)
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._ask_save_folder)

        root = QVBoxLayout(self)
        root.addLayout(form)
        root.addWidget(self.advanced)
        root.addWidget(post)
        root.addLayout(buttons)
        root.addWidget(self.progress)
        root.addWidget(self.count)
        root.addWidget(self.status)
        root.addWidget(self.save_button)
        root.addStretch(1)

    @staticmethod
    def _slider(tip: str) -> QLabeledDoubleSlider:
        s = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        s.setRange(0.05, 0.95)
        s.setSingleStep(0.01)
        s.setDecimals(2)
        s.setValue(0.5)
        s.setToolTip(tip)
        return s

    # ------------------------------------------------------------------ choices

    def reset_choices(self, *_: Any) -> None:
        """Refresh the image list (napari calls this when layers are added, removed or renamed)."""
        import napari.layers

        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)

    def set_model(self, model: str | Path) -> None:
        """Choose a preset by name or a checkpoint file by path (as the file dialog does)."""
        idx = self.model_combo.findData(str(model))
        if idx < 0:
            idx = self.model_combo.count() - 1  # before "Checkpoint file…"
            self.model_combo.insertItem(idx, Path(model).name, str(model))
            self.model_combo.setItemData(idx, str(model), Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setCurrentIndex(idx)

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) != _BROWSE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose a napari-impc-dl checkpoint", "", "Checkpoints (*.safetensors);;All files (*)")
        if path:
            self.set_model(path)
        else:
            self.model_combo.setCurrentIndex(self._model_index)

    def _on_model_changed(self, *_: Any) -> None:
        """Read the chosen model's card (cheap: no torch) and show its defaults."""
        from ..models.checkpoint import read_card
        from ..presets import PRESETS, preset_path

        from ..classify.loading import checkpoint_path

        ref = self.model_combo.currentData()
        if ref == _BROWSE or ref is None:
            return
        self._model_index = self.model_combo.currentIndex()
        self._follow_preset(ref)
        if self._show_workflow(ref):
            return
        if ref not in PRESETS and Path(str(ref)).is_dir() and checkpoint_path(ref).suffix == ".safetensors":
            ref = str(checkpoint_path(ref))  # a trained model's folder
        if ref not in PRESETS and not str(ref).lower().endswith(".safetensors"):  # e.g. an imported Model Zoo package
            self._card = None
            self.postprocessing.setVisible(True)
            self.model_info.setText(f"{Path(ref).name}: described when it is loaded (on Run)")
            return
        try:
            card = read_card(preset_path(ref) if ref in PRESETS else ref)
        except InputError as exc:
            self._card = None
            self.model_info.setText(str(exc))
            return
        self._card = card
        self.postprocessing.setVisible(card.task != "semantic")
        about = card.description or card.name
        short = " ".join(re.sub(r"\s*\([^()]*\)", "", about).split())  # the card's words, without asides in brackets
        short = short if len(short) <= 90 else short[: short.rfind(" ", 0, 88)].rstrip(",;:") + " …"
        self.model_info.setText(
            f"{short}\n{card.architecture.encoder} U-Net, {card.architecture.in_channels} channel(s) in · hash {card.short_hash or '-'}"
        )
        self.model_info.setToolTip(about)
        self.tile.setSpecialValueText(f"auto ({card.tiling.tile})")
        self.halo.setSpecialValueText(f"auto ({card.tiling.halo})")
        self._threshold_signals_on = False
        self.foreground.setValue(card.instances.foreground_threshold)
        self.seed.setValue(card.instances.seed_threshold)
        self.min_size.setValue(card.instances.min_size)
        self._threshold_signals_on = True

    def _show_workflow(self, ref) -> bool:
        """Show only the fields a workflow entry (skeletal) uses, with its description; True when ``ref`` is one."""
        workflow = WORKFLOWS.get(ref) if isinstance(ref, str) else None
        for w in (self.classifier_combo, self._form.labelForField(self.classifier_combo), self.advanced):
            w.setVisible(workflow is None)
        self.save_button.setVisible(workflow is not None)
        if workflow is not None:
            self._card = None
            self.postprocessing.setVisible(False)
            self.model_info.setText(workflow.description)
            self.model_info.setToolTip(workflow.description)
        return workflow is not None

    def _follow_preset(self, ref) -> None:
        """A preset that classifies its objects (chromosomes, cells) selects its classifier in "Then classify";
        leaving it for another model puts back "no" (a classifier the user picked stays)."""
        from ..presets import get

        preset = get(ref) if isinstance(ref, str) else None
        current = self.classifier_combo.currentData()
        if preset is not None and preset.classifier and self.classifier_combo.findData(preset.name) >= 0:
            self.classifier_combo.setCurrentIndex(self.classifier_combo.findData(preset.name))
        elif get(current) is not None and current != getattr(preset, "name", None):
            self.classifier_combo.setCurrentIndex(0)

    def _refresh_devices(self, use_torch: bool | None = None, used: str | None = None) -> None:
        from ..api import available_devices

        devices = available_devices(use_torch=use_torch)
        current = self.device_combo.currentData() or "auto"
        self.device_combo.clear()
        self.device_combo.addItem(f"auto: {devices[0].label}", "auto")
        for d in devices:
            self.device_combo.addItem(d.label, d.id)
        idx = self.device_combo.findData(current)
        self.device_combo.setCurrentIndex(max(idx, 0))
        gpus = [d for d in devices if d.id != "cpu"]
        text = "Detected: " + (", ".join(d.label for d in gpus) if gpus else "no GPU, the CPU will be used")
        if gpus and not all(d.confirmed for d in gpus):
            text += " (reported by the driver; confirmed on the first run)"
        if used:
            text += f"\nLast run on: {used}"
        self.detected.setText(text)

    # ------------------------------------------------------------------ run

    def _image_layer(self):
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise InputError("No image layer is chosen", "Open an image (File > Open, or File > Open Sample > IMPC Deep Learning) and choose it under Image")
        return self.viewer.layers[name]

    def _channels_for_model(self, layer, data):
        """A model that takes several channels (the ``cells`` preset: cytoplasm, nuclei) given one layer of a
        multichannel image that napari split into one layer per channel (``name``, ``name [1]``, ...): the
        sibling layers (same base name, shape and dtype, in layer-list order) stacked channels first."""
        need = self._card.architecture.in_channels if self._card is not None else 1
        if need <= 1 or getattr(layer, "rgb", False) or data.ndim > 2:
            return data
        base = re.sub(r" \[\d+\]$", "", layer.name)
        sibs = [lyr for lyr in self.viewer.layers if lyr.__class__.__name__ == "Image" and re.sub(r" \[\d+\]$", "", lyr.name) == base
                and tuple(level0(lyr).shape) == tuple(data.shape) and level0(lyr).dtype == data.dtype]
        if len(sibs) != need:
            raise InputError(
                f"The model takes {need} channels ({', '.join(self._card.channel_names)}); '{layer.name}' is one channel and {len(sibs)} layer(s) look like its channels",
                "Select the channel layers in the layer list, right-click > Merge to Stack, then choose the stacked layer",
            )
        if all(isinstance(level0(lyr), np.ndarray) for lyr in sibs):
            return np.stack([level0(lyr) for lyr in sibs])
        import dask.array as da

        return da.stack([da.asarray(level0(lyr)) for lyr in sibs])

    def _config(self, layer) -> SegmentConfig:
        data = level0(layer)
        return validated(
            SegmentConfig,
            tile=max(64, self.tile.value()) if self.tile.value() else None,
            halo=self.halo.value() if self.halo.value() >= 0 else None,
            batch=self.batch.value() or None,
            device=self.device_combo.currentData() or "auto",
            foreground_threshold=round(self.foreground.value(), 3),
            seed_threshold=round(self.seed.value(), 3),
            min_size=self.min_size.value(),
            **self._instances_options(),
            channel_axis=data.ndim - 1 if getattr(layer, "rgb", False) else "auto",
        )

    def _instances_options(self) -> dict:
        """The Objects and Diameter fields as SegmentConfig fields (Diameter 0: auto)."""
        return {"instances": self.instances.currentData() or "auto", "diameter": self.diameter.value() or None}

    @property
    def running(self) -> bool:
        return self._job is not None or self._relabel_job is not None

    def run(self) -> None:
        """Segment the chosen image (the Run button)."""
        from napari.utils.notifications import show_error

        if self._job is not None:
            return
        try:
            layer = self._image_layer()
            config = self._config(layer)
        except InputError as exc:
            show_error(str(exc))
            self.status.setText(str(exc))
            return
        ref = self.model_combo.currentData()
        if ref == _BROWSE:
            show_error("Choose a model first")
            return
        if ref in WORKFLOWS:
            return self._run_skeletal(layer, config.device)
        data, name = level0(layer), layer.name
        try:
            data = self._channels_for_model(layer, data)
        except InputError as exc:
            show_error(str(exc))
            self.status.setText(str(exc))
            return
        classifier = self.classifier_combo.currentData()
        options = dict(self.load_options)
        cached = None if options else self._models.get((ref, config.device))
        image = {  # what the result layer needs from the image, taken now (the worker never sees a layer)
            "scale": tuple(layer.scale),
            "translate": tuple(layer.translate),
            "path": str(getattr(getattr(layer, "source", None), "path", None) or "") or None,
        }

        def job(progress, cancel):
            from .. import api

            model = cached
            if model is None:
                progress(0, 0, "loading model")
                preload_torch_libraries()  # keeps napari responsive while torch loads (first run only)
                model = api.load_model(ref, device=config.device, **options)
            t0 = time.perf_counter()
            shown = api.segment_layer(
                data, model, config, name=name, memory_limit_mpx=MEMORY_LIMIT_MPX, pyramid_side=PYRAMID_SIDE, progress=progress, cancel=cancel
            )
            if classifier and shown.result.semantic is None:  # a class map has no objects to classify
                shown.result.objects = _classify(api.load_classifier(classifier, device=config.device), data, name, config, shown.result, progress, cancel)
            seconds = time.perf_counter() - t0
            # the per-object table as napari wants it, built here: copying 500k rows would cost the GUI thread 0.2 s
            features = features_with_index(shown.result.objects)
            return (None if options else model), shown, seconds, features  # never cache a model loaded with options

        self._start(job, f"Segment {name}", lambda value: self._show(image, data, config, ref, value, classifier),
                    on_discard=lambda value: value[1].scratch and value[1].scratch.cleanup())

    def _start(self, job, desc: str, on_done, on_discard=None, on_failed=None) -> None:
        """Run ``job(progress, cancel)`` in a worker with the widget's progress bar and Cancel."""
        if self._relabel_job is not None:
            self._relabel_job.cancel()
        self._relabel_timer.stop()
        self._job = Job(
            job,
            desc=desc,
            on_done=on_done,
            on_failed=on_failed or (lambda exc: self.status.setText(f"Stopped: {exc}")),
            on_discard=on_discard,
            on_progress=self._progress,
            on_finished=self._finished,
            owner=self,
        )
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.count.setText("")
        self.status.setText(f"{desc}…")
        self._job.start()

    def _run_skeletal(self, layer, device: str) -> None:
        """The skeletal workflow on one X-ray layer; its models are loaded once per device and kept."""
        from ._skeletal_view import analyse_job

        image = {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}
        job = analyse_job(layer, device, self._skeletal_models.get(device))
        self._start(job, f"Skeletal {layer.name}", lambda value: self._show_skeletal(image, device, value),
                    on_failed=lambda exc: self._show_skeletal_failure(layer.name, exc))

    def _show_skeletal(self, image: dict, device: str, value) -> None:
        """GUI thread: the regions and bones layers, the summary, and the result kept for "Save IMPC table…"."""
        from ._skeletal_view import details, show_result, summary_html

        models, result, seconds = value
        self._skeletal_models[device] = models
        show_result(self.viewer, result, image)
        self._skeletal_results[result.name] = result
        self.save_button.setEnabled(True)
        self.count.setStyleSheet("")
        self.count.setTextFormat(Qt.TextFormat.RichText)
        self.count.setText(summary_html(result))
        self.status.setText(details(result, seconds))

    def _show_skeletal_failure(self, name: str, exc: BaseException) -> None:
        """A picture the core refused (e.g. a blank one): why, in red where the counts go."""
        from ._skeletal_view import failure_html

        self.status.setText(f"Stopped: {exc}")
        self.count.setTextFormat(Qt.TextFormat.RichText)
        self.count.setText(failure_html(name, exc))

    def _ask_save_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the IMPC tables")
        if folder:
            self.save_skeletal_tables(folder)

    def save_skeletal_tables(self, folder: str | Path) -> dict:
        """Write the tables of every X-ray analysed so far into ``folder`` (what "Save IMPC table…" does after its dialog)."""
        from ._skeletal_view import save_tables

        out = save_tables(list(self._skeletal_results.values()), folder)
        self.status.setText(out["message"])
        return out

    def cancel(self) -> None:
        """Stop the run at its next tile or block (the Cancel button); nothing is added to the viewer."""
        if self._job is not None:
            self._job.cancel()
            self.status.setText("Cancelling…")

    def _progress(self, done: int, total: int, stage: str) -> None:
        show_progress(self.progress, done, total, stage)

    def _finished(self) -> None:
        self._job = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    def _show(self, image: dict, data, config: SegmentConfig, ref: str, value, classifier: str | None = None) -> None:
        """GUI thread: turn a finished run into a Labels layer."""
        model, shown, seconds, features = value
        self._models[(ref, config.device)] = model
        res = shown.result
        name = f"{res.name} labels"
        meta = {
            "image": res.name,
            "image_path": image["path"],
            "model": dict(res.model),
            "params": dict(res.params),
            "n_objects": int(res.n_objects),
            "stack_axes": res.stack_axes,
            "timings": {k: v for k, v in res.timings.items() if isinstance(v, (int, float, str))},
            "semantic": res.semantic,  # a class map: its classes and areas (Export writes the fractions)
        }
        layer = self._replaceable(name, shown)
        if layer is not None:
            layer.data = shown.levels if len(shown.levels) > 1 else shown.levels[0]
            layer.features = features
            layer.metadata = {**layer.metadata, META_KEY: meta}
        else:
            nd = len(shown.levels[0].shape)
            kwargs = {"scale": image["scale"][-nd:], "translate": image["translate"][-nd:]}
            layer = self.viewer.add_labels(
                shown.levels if len(shown.levels) > 1 else shown.levels[0],
                name=name,
                multiscale=len(shown.levels) > 1,
                features=features,
                metadata={META_KEY: meta},
                **kwargs,
            )
        if res.semantic is not None:  # a class map: each class its colour, the background clear
            from ._annotate import recolour

            recolour(layer, [c for c in res.semantic["classes"] if c not in res.semantic["background"]])
        elif "class" in features.columns and "classifier_name" in features.columns:
            from ._annotate import recolour

            recolour(layer, sorted(c for c in set(features["class"].astype(str)) if c))
        if shown.scratch is not None:
            _keep_scratch(layer, shown.scratch)
        elif scratch_of(layer) is not None:  # an earlier large result of this layer was replaced by an in-memory one
            _SCRATCH.pop(unwrap(layer)).cleanup()
        self._shown = _Shown(weakref.ref(unwrap(layer)), shown, data, config, classifier)
        self._refresh_devices(used=res.timings.get("device"))
        self._report(res, seconds)

    def _replaceable(self, name: str, shown):
        """Our own earlier result for the same image, if its data can be swapped in place."""
        if name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        if provenance(layer) is None or getattr(layer, "multiscale", False) != (len(shown.levels) > 1):
            return None
        return layer if tuple(level0(layer).shape) == tuple(shown.levels[0].shape) else None

    def _report(self, res, seconds: float | None = None) -> None:
        self.count.setTextFormat(Qt.TextFormat.AutoText)
        self.count.setText(count_summary(res.counts_row()))
        flagged = res.counts_row().get("count_is_46") is False
        self.count.setStyleSheet("color: #ff8c69; font-weight: bold" if flagged else "")
        p = res.params
        parts = [f"model {res.model.get('name')} ({res.model.get('hash') or 'no hash'})"]
        if res.semantic is not None:
            parts.append("a class per pixel: " + ", ".join(res.semantic["classes"]) + " (fractions of the tissue: all but " + ", ".join(res.semantic["background"]) + ")")
        else:
            parts.append(f"foreground {p.get('foreground_threshold')}, seeds {p.get('seed_threshold')}, min size {p.get('min_size')}")
        extra = [f"objects by {p['instances']}"] if p.get("instances") not in (None, "distance-head", "semantic") else []
        if p.get("diameter"):
            extra.append(f"diameter {p['diameter']:g} px ({p.get('diameter_source') or 'given'})")
        if p.get("merge_threshold") is not None:  # the border merge: objects the seeds cut in two joined
            solid = p.get("merge_min_solidity")
            extra.append(f"cut objects joined above {p['merge_threshold']:g}" + (f" where convex ({solid:g} of the hull)" if solid is not None else ""))
        if extra:
            parts.append(", ".join(extra))
        if seconds is not None:
            parts.append(f"{res.timings.get('device', '')} · {seconds:.1f} s")
        self.status.setText("\n".join(parts))

    # ------------------------------------------------------------------ relabel

    def _thresholds_changed(self, *_: Any) -> None:
        if self._threshold_signals_on:
            self._relabel_timer.start()

    def _current(self) -> tuple[_Shown, Any] | None:
        shown = self._shown
        layer = shown.layer() if shown is not None else None
        layer = find_layer(self.viewer, layer) if layer is not None else None
        return None if layer is None else (shown, layer)

    def _relabel(self) -> None:
        """Re-run only the postprocessing of the last result with the current thresholds."""
        from napari.utils.notifications import show_error

        current = self._current()
        if current is None or self._job is not None:
            return
        if self._relabel_job is not None:  # a newer setting arrived: stop the old pass, start again when it ends
            self._relabel_pending = True
            self._relabel_job.cancel()
            return
        shown, _ = current
        if getattr(shown.result.result, "semantic", None) is not None:  # a class map has no thresholds
            return
        try:
            config = validated(
                SegmentConfig,
                **{
                    **shown.config.model_dump(),
                    "foreground_threshold": round(self.foreground.value(), 3),
                    "seed_threshold": round(self.seed.value(), 3),
                    "min_size": self.min_size.value(),
                    **self._instances_options(),
                },
            )
        except InputError as exc:
            show_error(str(exc))
            return
        previous = shown.result

        def job(progress, cancel):
            from .. import api

            new = api.relabel_layer(previous, shown.data, config, pyramid_side=PYRAMID_SIDE, progress=progress, cancel=cancel)
            if shown.classifier:  # new objects: their classes (and the counts per class) are computed again
                clf = api.load_classifier(shown.classifier, device=config.device)
                new.result.objects = _classify(clf, shown.data, previous.result.name, config, new.result, progress, cancel)
            return new, features_with_index(new.result.objects)

        self._relabel_job = Job(
            job,
            desc="Postprocessing",
            on_done=lambda value: self._show_relabel(shown, config, value),
            on_discard=lambda value: value[0].scratch and value[0].scratch.remove(value[0].levels),
            on_progress=self._progress,
            on_finished=self._relabel_finished,
            owner=self,
            quiet_cancel=True,
        )
        self.status.setText("Postprocessing…")
        self._relabel_job.start()

    def _show_relabel(self, shown: _Shown, config: SegmentConfig, value) -> None:
        new, features = value
        layer = shown.layer()
        layer = find_layer(self.viewer, layer) if layer is not None else None
        if layer is None:
            if new.scratch is not None:
                new.scratch.remove(new.levels)
            return
        old_levels = shown.result.levels
        layer.data = new.levels if len(new.levels) > 1 else new.levels[0]
        layer.features = features
        if "class" in features.columns and "classifier_name" in features.columns:
            from ._annotate import recolour

            recolour(layer, sorted(c for c in set(features["class"].astype(str)) if c))
        meta = dict(provenance(layer) or {})
        meta.update(params=dict(new.result.params), n_objects=int(new.result.n_objects))
        layer.metadata = {**layer.metadata, META_KEY: meta}
        if new.scratch is not None:
            new.scratch.remove(old_levels)
        shown.result, shown.config = new, config
        self._report(new.result)

    def _relabel_finished(self) -> None:
        self._relabel_job = None
        if self._relabel_pending:
            self._relabel_pending = False
            self._relabel()
