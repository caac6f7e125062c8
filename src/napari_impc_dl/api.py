"""The facade: the one door the CLI and the napari widgets both use.

    load_model     preset name / checkpoint path -> a Runnable on a device
    segment_image  one image (path, array or ImageSource) -> SegmentationResult (labels, probabilities, table)
    relabel        cached probabilities + new thresholds -> labels and table again, without the model
    segment        files in, files out: <stem>_labels.tif|.zarr, objects.csv, counts.csv in one folder
                   (``classifier=``: each object classified too: class and p_<class> columns, n_<class> counts)
    batch          a folder / glob / CSV of images, resumable, in this process or on a dask cluster (``client=``)
    train_segmentation / train_classification   a model and its reports in a folder (see training/run.py)
    load_classifier  training folder / checkpoint / Model Zoo package -> a classifier Runnable
    classify       files in, files out: predictions.csv (image level) or objects.csv + counts.csv (object level)
    load_skeletal_models / analyse_xray / save_skeletal_tables   the same on X-rays in memory (the widgets)
    skeletal       mouse X-rays (DICOM, TIFF, PNG) -> pose, regions, vertebrae and ribs, counts, sex, the IMPC
                   parameter table (impc_parameters.csv, impc_summary.csv): ``segment --preset skeletal``
    synth          synthetic datasets with ground truth
    evaluate       compare predicted label files with ground truth (F1 at IoU 0.5, ...)
    demo           the main job on the bundled sample
    measure_labels a table for labels made elsewhere (drawn, imported, ground truth)
    export         tables (objects.csv, counts.csv) and masks (TIFF / OME-Zarr) of results, e.g. napari layers
    available_devices  CUDA (with the GPU's name), MPS, CPU; cheap, for the widgets

Every function takes ``progress(done, total, stage)`` and ``cancel`` (a CancelToken) where it runs
long. Heavy imports (torch) happen inside the functions, never at import time.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import SegmentConfig, validated
from .errors import CancelToken, InputError
from .inference.allocator import reuse_large_buffers
from .inference.loading import load_model
from .inference.pipeline import (  # noqa: F401  (re-exported: the facade's one-image functions)
    Progress,
    SegmentationResult,
    _is_runnable,
    _stage,
    check_input,
    relabel,
    segment_image,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- files in, files out


@dataclass
class SegmentReport:
    """What :func:`segment` wrote."""

    out_dir: Path
    label_files: list[Path]
    objects_csv: Path
    counts_csv: Path
    counts: list[dict]
    timings: list[dict] = field(default_factory=list)
    """Per image: seconds spent in inference, postprocessing and measuring, tiles, device."""

    @property
    def n_objects(self) -> int:
        """Objects over all images (a class map, from a semantic model, has none: 0)."""
        return sum(int(c.get("n_objects", 0)) for c in self.counts)


@reuse_large_buffers()
def segment(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    config: SegmentConfig | None = None,
    classifier=None,
    export: Sequence[str] = (),
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    **overrides,
) -> SegmentReport:
    """Segment image files into ``out_dir``: ``<stem>_labels.tif`` (``.zarr`` when large), ``objects.csv``, ``counts.csv``.

    ``export`` adds outlines and masks in other tools' formats (:mod:`napari_impc_dl.io.shape_exports`):
    ``roi`` (``<stem>_rois.zip`` for Fiji), ``geojson`` (``<stem>.geojson`` for QuPath, with classes),
    ``rle`` (``masks.csv``, run-length encoded).

    All inputs are opened and checked before anything is written; outputs are staged and moved
    into place only when every image succeeded. ``overrides`` are :class:`SegmentConfig` fields.
    A preset that classifies (``chromosomes``, ``cells``) runs its own classifier unless ``classifier``
    names another, or is ``"none"`` (segmentation only).
    """
    import pandas as pd

    from .io.image import open_image
    from .io.export import with_provenance
    from .io.outputs import Staging, create_zarr, ensure_writable_dir, label_dtype, write_csv_atomic, write_tif_atomic

    from .io.shape_exports import SHAPE_FORMATS, class_colours, write_image_shapes, write_masks_csv
    from .inference.semantic import semantic_spec
    from .presets import classifier_for

    config = config or validated(SegmentConfig, **overrides)
    if not inputs:
        raise InputError("No input images were given", "Pass one or more image files (tif, ome-tif, zarr, png, jpg, npy)")
    export = [str(x).lower() for x in (export or ())]
    if any(x not in SHAPE_FORMATS for x in export):
        raise InputError(f"Unknown export format '{next(x for x in export if x not in SHAPE_FORMATS)}'", f"Use any of: {', '.join(SHAPE_FORMATS)}")
    rle: list[list] = []
    out = Path(out_dir)
    runnable = model if _is_runnable(model) else load_model(model, device=config.device)
    classifier = classifier_for(model, classifier)
    semantic = semantic_spec(runnable)
    if classifier is not None and semantic is not None:
        raise InputError(f"'{runnable.info.name}' gives a class per pixel ({', '.join(semantic['classes'])}), not objects, so there is nothing for --classifier to classify", "Leave --classifier out (or use an instance segmentation model)")
    if classifier is not None:
        classifier = load_classifier(classifier, device=config.device)
        if classifier.spec.level != "object":
            raise InputError(f"--classifier '{classifier.info.name}' classifies whole images, not objects", "Use `classify` for image-level classifiers")
    sources = []
    try:
        stems: dict[str, Path] = {}
        for p in inputs:
            src = open_image(p, channel_axis=config.channel_axis, level=config.level, pixel_size_um=config.pixel_size_um)
            sources.append(src)
            check_input(src, runnable, config)
            if src.name in stems:
                raise InputError(f"Two inputs would write the same output name '{src.name}_labels': '{stems[src.name]}' and '{p}'", "Segment them into different --out folders")
            stems[src.name] = Path(p)
        out = ensure_writable_dir(out)
        in_paths = {Path(p).resolve() for p in inputs}
        staging = Staging(out)
        tmp_dirs = []
        # label TIFFs are compressed and written on a worker while the next image (or the tables) is done
        writer, written = ThreadPoolExecutor(max_workers=1, thread_name_prefix="impc-write"), None
        try:
            results_rows, tables, label_files, timings = [], [], [], []
            model_info = {"name": runnable.info.name, "hash": runnable.info.content_hash}
            for i, src in enumerate(sources):
                px = float(np.prod(src.shape)) / max(1, src.n_channels) / 1e6
                large = px > config.in_memory_limit_mpx
                name = f"{src.name}_labels.zarr" if large else f"{src.name}_labels.tif"
                if (out / name).resolve() in in_paths:
                    raise InputError(f"Writing '{out / name}' would overwrite an input", "Choose another --out folder")
                lstore = pstore = None
                if large:
                    H, W = src.spatial_shape
                    lstore = create_zarr(staging.path(name), src.stack_shape + (H, W), np.int32, (1,) * len(src.stack_shape) + (1024, 1024))
                    tmp = Path(tempfile.mkdtemp(prefix=".probabilities-", dir=staging.dir))
                    tmp_dirs.append(tmp)
                    K = len(runnable.info.output_names)
                    pstore = create_zarr(tmp / "p.zarr", src.stack_shape + (K, H, W), np.uint8, (1,) * len(src.stack_shape) + (K, 1024, 1024))
                prog = None if progress is None else (lambda d, t, s, i=i: progress(d, t, f"{src.name} ({i + 1}/{len(sources)}): {s}"))

                def write_labels(labels, n_objects, name=name):  # starts while the last objects are measured
                    nonlocal written
                    if written is not None:
                        written.result()  # one image's labels in flight at a time
                    written = writer.submit(write_tif_atomic, staging.path(name), labels, label_dtype(n_objects))

                res = segment_image(
                    src, runnable, config, labels_store=lstore, probabilities_store=pstore,
                    labels_ready=None if large else write_labels, progress=prog, cancel=cancel,
                )
                label_files.append(out / name)
                objects, row = res.objects, res.counts_row()
                if classifier is not None:
                    from .classify.files import classify_segmented

                    objects, row = classify_segmented(classifier, src, res, config.channel, progress=_stage(prog, "classify"), cancel=cancel)
                if export:
                    colours = class_colours(classifier.classes) if classifier is not None else class_colours([c for c in semantic["classes"] if c not in semantic["background"]]) if semantic else None
                    rle += write_image_shapes(export, src.name, res.labels, objects, staging.path, colours=colours, scale=res.params.get("downsample") or 1.0, cancel=cancel)[1]
                tables.append(with_provenance(objects, src.name, model_info))
                results_rows.append(row)
                timings.append(res.timings)
                for t in tmp_dirs:
                    shutil.rmtree(t, ignore_errors=True)
                tmp_dirs.clear()
            write_csv_atomic(staging.path("objects.csv"), pd.concat(tables, ignore_index=True))
            counts = pd.DataFrame(results_rows)
            write_csv_atomic(staging.path("counts.csv"), counts)
            if "rle" in export:
                write_masks_csv(staging.path("masks.csv"), rle)
            if written is not None:
                written.result()
            staging.commit()
        except BaseException:
            writer.shutdown(wait=True, cancel_futures=True)  # nothing may land in the folder after the abort
            staging.abort()
            raise
        finally:
            writer.shutdown(wait=True)
    finally:
        for s in sources:
            s.close()
    return SegmentReport(out, label_files, out / "objects.csv", out / "counts.csv", results_rows, timings)


def batch(
    inputs,
    out_dir: str | os.PathLike,
    *,
    model=None,
    config: SegmentConfig | None = None,
    classifier=None,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    force: bool = False,
    hash_inputs: bool = False,
    export: Sequence[str] = (),
    weights: str | None = None,
    trust_code: bool = False,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    **overrides,
):
    """Segment a folder (recursive), a glob, a CSV with a ``path`` column, or files; resumable (see docs/batch.md).

    Writes ``<name>_labels.tif`` per image, merged ``objects.csv`` / ``counts.csv``, ``manifest.csv`` and
    ``failures.csv`` (a bad image is recorded, the run goes on); ``export`` as :func:`segment`'s (a merged
    ``masks.csv`` for ``rle``). A rerun skips finished images whose input,
    model and parameters are unchanged (``force=True`` redoes all). In this process by default; on dask with
    ``workers=N`` (a LocalCluster), ``scheduler="tcp://..."`` or ``client=`` (a ``distributed.Client``).
    ``overrides`` are :class:`SegmentConfig` fields. Returns a :class:`~napari_impc_dl.distributed.run.BatchReport`.
    """
    from .config import BatchConfig
    from .distributed.run import run_batch

    config = config or validated(SegmentConfig, **overrides)
    options = validated(BatchConfig, workers=workers, scheduler=scheduler, force=force, hash_inputs=hash_inputs, export=list(export or ()))
    return run_batch(inputs, out_dir, model=model, config=config, options=options, classifier=classifier, weights=weights, trust_code=trust_code, client=client, progress=progress, cancel=cancel)


# ----------------------------------------------------------------------------- training and classification


def train_segmentation(out_dir, *, images, masks=None, config=None, channel: int | None = None, resume: bool = False, progress=None, cancel: CancelToken | None = None, command: str = "", **overrides):
    """Train or fine-tune a segmentation U-Net into ``out_dir`` from ``images`` + ``masks`` folders or a list of
    ``(image, mask[, name])`` pairs; returns a :class:`~napari_impc_dl.training.run.TrainReport`.
    ``overrides`` are :class:`~napari_impc_dl.config.SegmentationTrainConfig` fields."""
    from .config import SegmentationTrainConfig
    from .training.run import train

    config = config or validated(SegmentationTrainConfig, **overrides)
    return train(config, out_dir, images=images, masks=masks, channel=channel, resume=resume, progress=progress, cancel=cancel, command=command)


def train_classification(out_dir, *, data, images=None, labels=None, config=None, channel: int | None = None, resume: bool = False, progress=None, cancel: CancelToken | None = None, command: str = "", **overrides):
    """Train or fine-tune a classifier into ``out_dir``. Image level: ``data`` = a folder per class, a CSV
    ``path,class`` or ``(image, class[, name])`` items. Object level: ``data`` = a CSV ``image,label,class`` with
    ``images`` and ``labels`` folders, or ``(image, labels, {label: class}[, name])`` items.
    ``overrides`` are :class:`~napari_impc_dl.config.ClassificationTrainConfig` fields."""
    from .config import ClassificationTrainConfig
    from .training.run import train

    config = config or validated(ClassificationTrainConfig, **overrides)
    return train(config, out_dir, data=data, images=images, labels=labels, channel=channel, resume=resume, progress=progress, cancel=cancel, command=command)


def trained_models():
    """Models trained into the user's model library (``training.library``): name, folder, task, level, classes."""
    from .training.library import trained_models as _list

    return _list()


def load_classifier(model, *, device: str = "auto", weights: str | None = None, trust_code: bool = False):
    """A classifier Runnable from a training folder, a checkpoint, a Model Zoo package or a library name."""
    from .classify.loading import load_classifier as _load

    return _load(model, device=device, weights=weights, trust_code=trust_code)


def classify(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, model, labels=None, channel: int | None = None, batch: int | None = None, device: str = "auto", progress: Progress | None = None, cancel: CancelToken | None = None):
    """Classify image files: ``predictions.csv`` (image level) or, with ``labels`` (files or a folder, e.g. a
    ``segment`` output), ``objects.csv`` + ``counts.csv`` with class columns (object level)."""
    from .classify.files import classify_files

    clf = load_classifier(model, device=device)
    return classify_files(inputs, out_dir, clf, labels=labels, channel=channel, batch=batch, progress=progress, cancel=cancel)


# ----------------------------------------------------------------------------- data and evaluation


def skeletal(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, metadata: str | os.PathLike | None = None, strain: str = "C57BL/6N",
             pixel_size_mm: float | None = None, device: str = "auto", models: dict | None = None, progress: Progress | None = None,
             cancel: CancelToken | None = None) -> dict:
    """The mouse X-ray workflow on files (see :mod:`napari_impc_dl.skeletal.files` for what it writes).

    ``models``: role -> checkpoint for any of the six models to replace (e.g. ``{"bones": "my-run/"}`` after
    fine-tuning); the bundled starters otherwise. ``pixel_size_mm`` overrides the files' own (DICOM pixel spacing)."""
    from .skeletal.files import run
    from .skeletal.pipeline import SkeletalModels

    if pixel_size_mm is not None and not (0 < float(pixel_size_mm) < 100):
        raise InputError(f"Pixel size {pixel_size_mm} mm is out of range", "Give the detector's pixel size in mm, e.g. 0.05")
    loaded = SkeletalModels.load(device=device, **(models or {}))
    return run(inputs, out_dir, models=loaded, metadata=metadata, strain=strain, pixel_size_mm=pixel_size_mm, progress=progress, cancel=cancel)


def load_skeletal_models(device: str = "auto", **paths):
    """The six models of the ``skeletal`` preset (bundled, or ``role=PATH`` for fine-tuned ones), loaded once for many X-rays."""
    from .skeletal.pipeline import SkeletalModels

    return SkeletalModels.load(device=device, **paths)


def analyse_xray(image, models=None, *, name: str = "image", specimen: str | None = None, pixel_size_mm: float | None = None,
                 device: str = "auto", progress: Progress | None = None, cancel: CancelToken | None = None):
    """One mouse X-ray (a path, an array such as a napari layer's data, or an ImageSource) -> a
    :class:`~napari_impc_dl.skeletal.pipeline.SkeletalResult`: view and pose, region class map and bone labels on
    the input's pixels, the bone table, the IMPC values with confidences, sex and the abnormal score (``flag`` set,
    no values, when the picture cannot be oriented). ``models``: from :func:`load_skeletal_models` (loaded here when None)."""
    from .skeletal.pipeline import analyse_xray as run

    return run(image, models or load_skeletal_models(device), name=name, specimen=specimen, pixel_size_mm=pixel_size_mm, progress=progress, cancel=cancel)


def save_skeletal_tables(results, out_dir: str | os.PathLike, *, strain: str = "C57BL/6N") -> dict:
    """Write ``objects.csv``, ``counts.csv``, ``impc_parameters.csv`` and ``impc_summary.csv`` of results from
    :func:`analyse_xray` (e.g. the X-rays analysed in napari) into ``out_dir``; returns the paths under ``"files"``."""
    from .skeletal.files import write_tables

    return write_tables(list(results), out_dir, strain=strain)


def synth(kind: str, n: int, out_dir: str | os.PathLike, *, size: int | None = None, seed: int = 0, density: float = 1.0, contrast: float = 1.0, scale: float = 1.0, **xray) -> list[Path]:
    """Write a synthetic dataset with ground truth; returns the image paths.

    ``nuclei``: ``images/`` + ``masks/`` (segmentation); ``shapes``: ``images/`` + ``labels/`` +
    ``classes.csv`` (rods / nuclei / debris, object classification); ``views``: ``dorsoventral/`` and
    ``lateral/`` X-ray-like images, ``n`` of each (image classification); ``chromosomes`` (metaphase
    spreads) and ``cells`` (two-channel cells with a mitosis phase): ``images/``, ``masks/``
    (``cells`` also ``nuclei/``), ``truth.csv`` (the preset's counts columns) and ``objects_truth.csv``
    (image, label, class); ``fibrosis`` (H&E-like tissue): ``images/`` (RGB), ``masks/`` (class maps:
    0 background, 1 tissue, 2 fibrosis) and ``truth.csv`` (areas and fractions, the preset's counts
    columns). ``density`` / ``contrast`` / ``scale`` move the ``chromosomes``, ``cells`` and
    ``fibrosis`` generators away from their defaults (domain-shifted test sets; for fibrosis
    ``density`` scales the amount of fibrosis, ``contrast`` the stain). ``xray`` (mouse X-ray
    phantoms): ``images/``, ``regions/`` (class maps), ``instances/`` (a label per vertebra and rib),
    ``truth.csv`` (IMPC parameters), ``instances.csv`` and ``classes.csv``; its own keywords
    (``view``, ``p_abnormal``, ``exposure``, ``noise``, ``body_scale``, ``rotation_range``,
    ``allow_cut``) go to :func:`~napari_impc_dl.synthetic.xray.write_xray_dataset`.
    """
    defaults = {"nuclei": 256, "shapes": 256, "views": 256, "chromosomes": 768, "cells": 512, "fibrosis": 512, "xray": 512}
    if kind not in defaults:
        raise InputError(f"Unknown synthetic dataset '{kind}'", f"Available: {', '.join(defaults)}")
    size = defaults[kind] if size is None else size
    smallest = {"nuclei": 32, "chromosomes": 128}.get(kind, 64)
    if n < 1 or size < smallest:
        raise InputError(f"Need --n >= 1 and --size >= {smallest} (got n={n}, size={size})", "Increase them")
    shifted = (density, contrast, scale) != (1.0, 1.0, 1.0)
    if kind == "xray":
        if shifted:
            raise InputError("--density, --contrast and --scale do not apply to xray", "Use --exposure, --noise, --body-scale or --rotation-range to shift X-ray phantoms")
        from .synthetic.xray import write_xray_dataset

        return write_xray_dataset(out_dir, n, size=size, seed=seed, **xray)
    if xray:
        raise InputError(f"{', '.join(sorted(xray))} apply to the xray dataset only, not '{kind}'", "Leave them out")
    if kind in ("chromosomes", "cells", "fibrosis"):
        if kind == "chromosomes":
            from .synthetic.chromosomes import write_chromosomes_dataset as write
        elif kind == "cells":
            from .synthetic.cells import write_cells_dataset as write
        else:
            from .synthetic.fibrosis import write_fibrosis_dataset as write
        return write(out_dir, n, size=size, seed=seed, density=density, contrast=contrast, scale=scale)
    if shifted:
        raise InputError(f"--density, --contrast and --scale apply to the chromosomes, cells and fibrosis datasets, not '{kind}'", "Leave them out")
    from .synthetic import write_nuclei_dataset
    from .synthetic.shapes import write_shapes_dataset
    from .synthetic.views import write_views_dataset

    writers = {"nuclei": write_nuclei_dataset, "shapes": write_shapes_dataset, "views": write_views_dataset}
    return writers[kind](out_dir, n, size=size, seed=seed)


def evaluate(pred_dir: str | os.PathLike, truth_dir: str | os.PathLike, *, out_csv: str | os.PathLike | None = None, iou_threshold: float = 0.5) -> dict:
    """Match label files by name and score them (F1, precision, recall at ``iou_threshold``; matched IoU).

    Either side may be a masks CSV (``segment --export rle``). Given two CSV files of classes instead (``predictions.csv`` / ``objects.csv`` with a ``class`` column, and the true
    classes), score the classes: accuracy, balanced accuracy, per-class figures, confusion matrix.
    """
    from .measure.evaluate import evaluate_folders, is_masks_csv

    masks = is_masks_csv(pred_dir) or is_masks_csv(truth_dir)  # run-length encoded masks: instances, not classes
    if not masks and str(pred_dir).lower().endswith(".csv") and str(truth_dir).lower().endswith(".csv"):
        from .measure.classes import evaluate_classes

        return evaluate_classes(pred_dir, truth_dir)

    return evaluate_folders(pred_dir, truth_dir, out_csv=out_csv, iou_threshold=iou_threshold)


def demo(out_dir: str | os.PathLike = "napari-impc-dl-demo", *, device: str = "auto", progress: Progress | None = None) -> dict:
    """Segment the bundled sample with the bundled ``nuclei`` model; compare with its ground truth."""
    import tifffile

    from .measure.matching import match_instances
    from .presets import SAMPLE_IMAGE, SAMPLE_LABELS

    report = segment([SAMPLE_IMAGE], out_dir, model="nuclei", device=device, progress=progress)
    pred = tifffile.imread(report.label_files[0])
    m = match_instances(pred, tifffile.imread(SAMPLE_LABELS))
    return {
        "out_dir": str(report.out_dir.resolve()),
        "labels": str(report.label_files[0].resolve()),
        "objects_csv": str(report.objects_csv.resolve()),
        "counts_csv": str(report.counts_csv.resolve()),
        "n_objects": report.n_objects,
        "n_true": m.n_true,
        "f1_at_0.5": round(m.f1, 4),
    }


# ----------------------------------------------------------------------------- export (widgets and scripts)


def measure_labels(labels, image=None, *, name: str = "labels", stack_axes: str = "", model: dict | None = None, params: dict | None = None) -> SegmentationResult:
    """A :class:`SegmentationResult` for a label image made elsewhere (drawn, imported, ground truth).

    Measures every object (shape columns, plus intensity columns when ``image`` fits the labels).
    ``model`` / ``params`` record provenance when known; otherwise the model columns stay empty.
    """
    from .io.export import measure_labels as _measure

    objects, n = _measure(labels, image, stack_axes=stack_axes)
    return SegmentationResult(name, labels, None, objects, n, dict(model or {"name": "", "hash": ""}), dict(params or {}), {}, stack_axes)


def export(
    results: Sequence[SegmentationResult],
    out_dir: str | os.PathLike,
    *,
    masks: str = "tif",
    tables: bool = True,
    shapes: Sequence[str] = (),
    colours: dict[str, str] | None = None,
    protect: Sequence[str | os.PathLike] = (),
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
):
    """Write ``objects.csv`` and ``counts.csv`` (the CLI's columns) and masks (``tif``, ``ome-zarr`` or ``none``).

    Files are ``<name>_labels.tif`` / ``<name>_labels.ome.zarr`` (OME-Zarr 0.5 with a multiscale
    pyramid). ``shapes``: any of ``roi`` (Fiji ROI set ``<name>_rois.zip``), ``geojson`` (QuPath
    ``<name>.geojson``, classes coloured by ``colours``), ``rle`` (``masks.csv``, run-length encoded).
    Nothing in ``protect`` (the inputs) is ever overwritten; outputs are staged and moved
    into place only when all succeeded. Returns an :class:`~napari_impc_dl.io.export.ExportReport`.
    """
    from .io.export import export_results

    return export_results(results, out_dir, masks=masks, tables=tables, shapes=shapes, colours=colours, protect=protect, progress=progress, cancel=cancel)


def available_devices(*, use_torch: bool | None = None):
    """Devices a model can run on here (CUDA with the GPU's name, MPS, CPU), accelerators first.

    Cheap by default: torch is asked only when already imported (see :mod:`napari_impc_dl.devices`).
    """
    from .devices import detect_devices

    return detect_devices(use_torch=use_torch)


# ----------------------------------------------------------------------------- results shaped for a viewer


@dataclass
class LayerResult:
    """A segmentation shaped for display in an image viewer (the napari Segment widget).

    ``levels`` is ``[labels]``, or for a large plane a multiscale pyramid ``[level0, level1, ...]``
    (each half the size of the one before), so a viewer reads only what it shows. Labels,
    probabilities and pyramid of a large image live in ``scratch`` (temporary zarr arrays, see
    :class:`~napari_impc_dl.io.export.Scratch`; call ``scratch.cleanup()`` when done), small ones
    in memory (``scratch`` is None).
    """

    result: SegmentationResult
    levels: list
    scratch: Any = None


def _layer_levels(labels, scratch, pyramid_side: int, progress: Progress | None, cancel: CancelToken | None) -> list:
    if scratch is None or max(labels.shape[-2:]) <= pyramid_side:
        return [labels]
    return scratch.pyramid(labels, progress=_stage(progress, "pyramid"), cancel=cancel)


def segment_layer(
    data,
    model=None,
    config: SegmentConfig | None = None,
    *,
    name: str = "image",
    memory_limit_mpx: float = 16.0,
    pyramid_side: int = 4096,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> LayerResult:
    """Segment a viewer layer's data (numpy, dask, zarr; for a multiscale layer its level 0) for display.

    Reads the image tile by tile (never whole). Above ``memory_limit_mpx`` megapixels (all planes)
    labels and probabilities go to temporary zarr arrays, and planes wider than ``pyramid_side``
    also get a label pyramid. A failure or cancel removes every temporary file.
    """
    from .io.export import Scratch
    from .io.image import ImageSource

    config = config or SegmentConfig()
    if not _is_runnable(model):
        model = load_model(model, device=config.device)
    source = ImageSource.from_array(data, name=name, channel_axis=config.channel_axis)
    check_input(source, model, config)
    H, W = source.spatial_shape
    stack = source.stack_shape
    scratch = lstore = pstore = None
    if float(np.prod(stack + (H, W))) / 1e6 > memory_limit_mpx:
        scratch = Scratch()
        lstore = scratch.array(stack + (H, W), np.int32, name="labels")
        pstore = scratch.array(stack + (len(model.info.output_names), H, W), np.uint8, name="probabilities")
    try:
        result = segment_image(source, model, config, labels_store=lstore, probabilities_store=pstore, progress=progress, cancel=cancel)
        return LayerResult(result, _layer_levels(result.labels, scratch, pyramid_side, progress, cancel), scratch)
    except BaseException:
        if scratch is not None:
            scratch.cleanup()
        raise


def relabel_layer(
    previous: LayerResult,
    data,
    config: SegmentConfig,
    *,
    pyramid_side: int = 4096,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> LayerResult:
    """:func:`relabel` for a :class:`LayerResult`: new labels (and pyramid) from its cached probabilities.

    The new arrays go into the same scratch folder; the previous ones stay until the caller removes
    them (``Scratch.remove(previous.levels)``) once the viewer shows the new ones.
    """
    scratch = previous.scratch
    store = scratch.array(tuple(previous.result.labels.shape), np.int32, name="labels") if scratch is not None else None
    try:
        result = relabel(previous.result, data, config, labels_store=store, progress=progress, cancel=cancel)
        return LayerResult(result, _layer_levels(result.labels, scratch, pyramid_side, progress, cancel), scratch)
    except BaseException:
        if store is not None:
            scratch.remove([store])
        raise


# ----------------------------------------------------------------------------- BioImage Model Zoo


@dataclass
class ImportReport:
    """What :func:`import_model` did: the library name, where the package now lives, and its summary lines."""

    name: str
    folder: Path
    summary: list[str]
    formats: list[str]
    already: bool = False


def _preset_names() -> set[str]:
    from .presets import PRESETS

    return set(PRESETS)


def describe_package(package: str | os.PathLike):
    """A package's validated, normalised description (:class:`napari_impc_dl.zoo.spec.ModelSpec`); nothing is run."""
    from .zoo.adapter import resolve
    from .zoo.spec import describe

    return describe(resolve(package))


def import_model(package: str | os.PathLike, *, name: str | None = None, replace: bool = False) -> ImportReport:
    """Validate a package (zip, folder or rdf.yaml; never the network) and add it to the local model library.

    Afterwards ``segment(..., model=name)`` finds it by name. Refuses packages we cannot run (only
    TensorFlow weights, weights only listed by URL), a file whose sha256 does not match, and unsafe zips.
    """
    import shutil

    from .zoo import library
    from .zoo.adapter import choose_format
    from .zoo.package import open_package, sha256_file
    from .zoo.spec import check_files, describe, summary

    src = Path(package).expanduser()
    staging = library.home() / "cache"
    pkg = open_package(src, cache_dir=staging)
    spec = describe(pkg)
    fmt = choose_format(spec, None, trust_code=True)  # runnable at all (trust is asked again when it runs)
    check_files(spec)
    content = pkg.zip_sha256 or sha256_file(pkg.rdf)
    lib_name = library.slug(name or spec.name)
    if name is None and lib_name in _preset_names():  # our own preset exported and imported back: keep both apart
        lib_name = f"{lib_name}-zoo"
    entry_exists = library.find(lib_name) is not None
    zipped = pkg.zip_sha256 is not None
    entry = library.add(
        pkg.root, lib_name,
        {"package_name": spec.name, "source": str(src.resolve()), "content_sha256": content, "rdf": pkg.rdf.name, "format_version": spec.format_version, "formats": spec.local_formats, "weights": fmt},
        replace=replace, move=zipped, files=None if zipped else library.referenced_files(pkg.root, pkg.rdf, spec.raw),
    )
    if zipped:  # the extraction moved into the library; drop what is left of it in the cache
        shutil.rmtree(staging / pkg.zip_sha256[:24], ignore_errors=True)
    return ImportReport(entry.name, entry.folder, summary(spec), spec.local_formats, already=entry_exists and not replace)


def export_model(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] | None = None,
    license: str | None = None,
    cite: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
):
    """Export a bundled preset, a checkpoint or a training folder (U-Net or classifier) as a BioImage Model Zoo package (spec 0.5 zip) at ``out``."""
    from .zoo.export import export_package

    return export_package(model, out, name=name, description=description, authors=list(authors or []), license=license, cite=list(cite or []), tags=list(tags or []))


def test_package(package: str | os.PathLike, *, weights: str | None = None, trust_code: bool = False, device: str = "cpu"):
    """Run a package's own test inputs through our adapter and compare with its test outputs (``zoo test``)."""
    from .zoo.conformance.test import run_test

    return run_test(package, weights=weights, trust_code=trust_code, device=device)


test_package.__test__ = False  # not a pytest test
