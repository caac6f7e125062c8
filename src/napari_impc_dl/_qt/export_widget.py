"""The **Export** widget: tables and masks of the chosen Labels layers, into one folder.

Writes ``objects.csv`` (one row per object) and ``counts.csv`` (one row per labels layer) with the
same columns as the CLI's ``segment``, including the image name and the model's name and hash,
and each layer's mask as ``<image>_labels.tif`` or ``<image>_labels.ome.zarr`` (OME-Zarr 0.5
with a multiscale pyramid). Layers made by the Segment widget export their ``layer.features``;
other label layers (drawn, opened from disk, ground truth) are measured on the way.

All writing happens in :func:`napari_impc_dl.api.export` in a worker: files are staged and moved
into place only when everything succeeded, and no file the viewer's layers were read from is ever
overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError
from ._layers import input_paths, level0, provenance
from ._workers import Job, show_progress

if TYPE_CHECKING:
    import napari

#: in-memory labels up to this many pixels are copied before the export starts (so painting cannot race it)
COPY_LIMIT = 64 * 2**20


def _class_colours(layer) -> dict[str, str]:
    """``{class: "#rrggbb"}`` as the layer shows them (its colormap, set by the Classify widget)."""
    feats = layer.features
    if "class" not in feats.columns or "index" not in feats.columns:
        return {}
    colour_dict = getattr(layer.colormap, "color_dict", None) or {}
    out = {}
    for label, cls in zip(feats["index"], feats["class"].astype(str)):
        if cls and cls not in out and int(label) in colour_dict:
            rgba = np.asarray(colour_dict[int(label)], float)
            out[cls] = "#" + "".join(f"{int(round(v * 255)):02x}" for v in rgba[:3])
    return out


class ExportWidget(QWidget):
    """Dock widget: export tables (objects.csv, counts.csv) and masks (TIFF / OME-Zarr) of labels layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._job: Job | None = None
        self.last_report = None

        self.layers = QListWidget()
        self.layers.setToolTip("Labels layers to export")
        self.all_layers = QCheckBox("Export all labels layers")
        self.all_layers.toggled.connect(lambda on: self.layers.setEnabled(not on))

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("Output folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder)
        folder_row.addWidget(browse)

        self.tables = QCheckBox("objects.csv and counts.csv")
        self.tables.setChecked(True)
        self.masks = QComboBox()
        for text, key in (("TIFF", "tif"), ("OME-Zarr", "ome-zarr"), ("None", "none")):
            self.masks.addItem(text, key)

        self.shape_boxes = {}
        shapes_box = QVBoxLayout()
        for key, text, tip in (
            ("roi", "Fiji ROI set (<name>_rois.zip)", "One polygon ROI per object, named by label and class: open it in Fiji's ROI Manager"),
            ("geojson", "QuPath GeoJSON (<name>.geojson)", "Detections with their class (name and colour) and measurements: drag it onto the image in QuPath"),
            ("rle", "Masks as CSV (masks.csv, run-length encoded)", "image,label,height,width,encoded_pixels, as the Data Science Bowl; `evaluate` reads it"),
        ):
            box = QCheckBox(text)
            box.setToolTip(tip)
            self.shape_boxes[key] = box
            shapes_box.addWidget(box)

        form = QFormLayout()
        form.addRow("Tables", self.tables)
        form.addRow("Masks", self.masks)
        form.addRow("Outlines", shapes_box)
        form.addRow("Folder", folder_row)

        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(lambda: self._job is not None and self._job.cancel())
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        root = QVBoxLayout(self)
        root.addWidget(QLabel("Labels layers"))
        root.addWidget(self.layers)
        root.addWidget(self.all_layers)
        root.addLayout(form)
        root.addLayout(buttons)
        root.addWidget(self.progress)
        root.addWidget(self.status)
        root.addStretch(1)
        self.reset_choices()

    # ------------------------------------------------------------------ choices

    def reset_choices(self, *_: Any) -> None:
        """Refresh the list of labels layers, keeping what was ticked (napari calls this on layer changes)."""
        import napari.layers

        ticked = set(self.chosen_names())
        known = {self.layers.item(i).text() for i in range(self.layers.count())}
        self.layers.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, napari.layers.Labels):
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                # new layers made by the Segment widget start ticked
                on = layer.name in ticked or (layer.name not in known and provenance(layer) is not None)
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
                self.layers.addItem(item)

    def chosen_names(self) -> list[str]:
        items = [self.layers.item(i) for i in range(self.layers.count())]
        if self.all_layers.isChecked():
            return [it.text() for it in items]
        return [it.text() for it in items if it.checkState() == Qt.CheckState.Checked]

    def set_chosen(self, names: list[str]) -> None:
        for i in range(self.layers.count()):
            it = self.layers.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.text() in names else Qt.CheckState.Unchecked)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder.text() or str(Path.home()))
        if path:
            self.folder.setText(path)

    # ------------------------------------------------------------------ export

    def _items(self) -> list[dict]:
        """What the worker needs per layer, gathered in the GUI thread (the worker never sees a layer)."""
        names = self.chosen_names()
        if not names:
            raise InputError("No labels layer is chosen", "Tick one or more labels layers, or 'Export all labels layers'")
        items = []
        for name in names:
            layer = self.viewer.layers[name]
            rec = provenance(layer)
            data = level0(layer)
            if isinstance(data, np.ndarray) and data.size <= COPY_LIMIT:
                data = data.copy()
            measured = "area" in layer.features.columns
            features = layer.features if rec is not None and len(layer.features) and measured else None
            # classes given by clicking or by a classifier on a layer without measurements: measured, then joined
            extra = [c for c in layer.features.columns if c in ("class", "annotated", "classifier_name", "classifier_hash") or c.startswith("p_")]
            classes = layer.features[["index", *extra]].copy() if extra and not measured and "index" in layer.features.columns else None
            image = None
            if features is None and rec is not None and rec.get("image") in self.viewer.layers:
                image = level0(self.viewer.layers[rec["image"]])
            items.append(
                {
                    "layer": name,
                    "name": rec.get("image", name) if rec else name,
                    "labels": data,
                    "objects": None if features is None else features.copy(),
                    "n_objects": int(rec.get("n_objects", 0)) if rec else 0,
                    "model": dict(rec.get("model") or {}) if rec else None,
                    "params": dict(rec.get("params") or {}) if rec else {},
                    "stack_axes": rec.get("stack_axes", "") if rec else "",
                    "semantic": rec.get("semantic") if rec else None,
                    "image": image,
                    "classes": classes,
                    "colours": _class_colours(layer),
                }
            )
        # two layers of the same image (e.g. a prediction and its ground truth) keep their layer names apart
        counts: dict[str, int] = {}
        for it in items:
            counts[it["name"]] = counts.get(it["name"], 0) + 1
        for it in items:
            if counts[it["name"]] > 1:
                it["name"] = it["layer"]
        return items

    def export(self) -> None:
        """Export the chosen layers (the Export button)."""
        from napari.utils.notifications import show_error, show_info

        if self._job is not None:
            return
        predictions = [
            {"image": lyr.name, **provenance(lyr)["classification"]}
            for lyr in self.viewer.layers
            if lyr.__class__.__name__ == "Image" and (provenance(lyr) or {}).get("classification")
        ] or None
        try:
            items = self._items() if self.chosen_names() or predictions is None else []
            out = self.folder.text().strip()
            if not out:
                raise InputError("No output folder is set", "Type a folder or use Browse…")
        except InputError as exc:
            show_error(str(exc))
            self.status.setText(str(exc))
            return
        masks, tables = self.masks.currentData(), self.tables.isChecked()
        shapes = [k for k, box in self.shape_boxes.items() if box.isChecked()]
        colours = {}
        for it in items:
            colours.update(it.pop("colours", {}))
        protect = input_paths(self.viewer)

        def job(progress, cancel):
            from pathlib import Path as _P

            from .. import api

            results = []
            for it in items:
                cancel.raise_if_cancelled()
                if it["objects"] is None:
                    progress(0, 0, f"measuring {it['layer']}")
                    res = api.measure_labels(it["labels"], it["image"], name=it["name"], stack_axes=it["stack_axes"], model=it["model"], params=it["params"])
                    if it["classes"] is not None:
                        res.objects = res.objects.merge(it["classes"].rename(columns={"index": "label"}), on="label", how="left")
                else:
                    res = api.SegmentationResult(it["name"], it["labels"], None, it["objects"], it["n_objects"] or len(it["objects"]), it["model"], it["params"], {}, it["stack_axes"], semantic=it["semantic"])
                results.append(res)
            if results:
                report = api.export(results, out, masks=masks, tables=tables, shapes=shapes, colours=colours or None, protect=protect, progress=progress, cancel=cancel)
            else:  # only image-level predictions to write
                from ..io.export import ExportReport

                report = ExportReport(_P(out), None, None)
            if predictions is not None and tables:  # image-level classes given by the Classify widget
                import pandas as pd

                from ..io.outputs import write_csv_atomic

                from ..io.outputs import ensure_writable_dir

                path = ensure_writable_dir(out) / "predictions.csv"
                if path.resolve() in {_P(p).resolve() for p in protect}:
                    raise InputError(f"Writing '{path}' would overwrite an input", "Choose another folder")
                write_csv_atomic(path, pd.DataFrame(predictions))
                report.extra.append(path)
            return report

        def done(report) -> None:
            self.last_report = report
            files = ", ".join(p.name for p in report.files)
            self.status.setText(f"Wrote {len(report.files)} file(s) to {report.out_dir}: {files}")
            show_info(f"Exported {len(items)} layer(s) to {report.out_dir}")

        self._job = Job(
            job,
            desc="Export",
            on_done=done,
            on_failed=lambda exc: self.status.setText(f"Nothing written: {exc}"),
            on_progress=self._progress,
            on_finished=self._finished,
            owner=self,
        )
        self.export_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText("Exporting…")
        self._job.start()

    def _progress(self, done: int, total: int, stage: str) -> None:
        show_progress(self.progress, done, total, stage, counts=False)

    def _finished(self) -> None:
        self._job = None
        self.export_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    @property
    def running(self) -> bool:
        return self._job is not None
