"""Files in, files out: ``classify`` and the classifier step of ``segment --classifier``.

    classify_files   images (+ label images for object classifiers) -> predictions.csv, or objects.csv + counts.csv
    merge_classes    an objects table + classify_objects' table -> the table with ``class`` and ``p_<class>`` columns

Image level writes ``predictions.csv``: image (and ``z`` / ``t`` of stacks), predicted class, the
probability of every class, the model's name and hash. Object level writes ``objects.csv`` (the
measurements ``segment`` writes, then ``class`` and ``p_<class>``) and ``counts.csv`` (objects per
image and ``n_<class>`` per class). All inputs are checked before anything is written; files
are written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import CancelToken, InputError


@dataclass
class ClassifyReport:
    """What :func:`classify_files` wrote."""

    out_dir: Path
    level: str
    files: list[Path]
    table: object  # pandas.DataFrame: predictions (image level) or objects (object level)
    counts: list[dict]


def _label_files(inputs: Sequence, labels) -> list[Path]:
    from ..io.image import image_name

    if labels is None:
        raise InputError("An object classifier needs the objects: --labels (label images, or the folder of a segment run)", "Segment first (napari-impc-dl segment ... --out DIR), then pass --labels DIR")
    if isinstance(labels, (str, os.PathLike)) and Path(labels).is_dir() and not str(labels).lower().endswith(".zarr"):
        folder = Path(labels)
        found = {}
        for p in sorted(folder.iterdir()):
            if not p.name.startswith("."):
                found.setdefault(image_name(p), p)
        out = []
        for i in inputs:
            stem = image_name(Path(i))
            hit = found.get(f"{stem}_labels") or found.get(stem)
            if hit is None:
                raise InputError(f"No label image for '{i}' in '{folder}' (looked for {stem}_labels.* and {stem}.*)", "Segment that image into the folder, or name its label image after it")
            out.append(hit)
        return out
    files = [Path(labels)] if isinstance(labels, (str, os.PathLike)) else [Path(p) for p in labels]
    if len(files) != len(inputs):
        raise InputError(f"{len(inputs)} image(s) but {len(files)} label image(s)", "Give one label image per image, in the same order, or a folder")
    return files


def open_labels(path: Path, source):
    """The labels of ``source`` from a file, as an array of shape ``stack + (Y, X)`` (lazy where the file is)."""
    from ..io.image import open_image

    lab = open_image(path, channel_axis=None)
    if "C" in lab.axes:
        lab.close()
        raise InputError(f"'{path}' has a channel axis: not a label image", "Give instance labels (one integer id per object)")
    want = tuple(source.stack_shape) + tuple(source.spatial_shape)
    arr = lab.lazy_array
    order = [lab.axes.index(a) for a in lab.axes if a in "TZ"] + [lab.axes.index("Y"), lab.axes.index("X")]
    if order != list(range(len(order))):
        arr = np.transpose(np.asarray(arr), order)
    if tuple(arr.shape) != want:
        raise InputError(f"The labels '{path}' are {' x '.join(map(str, arr.shape))} but the image '{source.path}' is {' x '.join(map(str, want))}", "Give the label image made from this image")
    return arr, lab


def merge_classes(objects, classes_table, classes: Sequence[str], model: dict):
    """``objects`` with ``class``, ``p_<class>``, ``classifier_name`` and ``classifier_hash`` columns (matched on
    the stack columns and ``label``); objects the classifier did not see get an empty class."""
    keys = [c for c in ("t", "z") if c in classes_table.columns and c in objects.columns] + ["label"]
    cols = keys + ["class"] + [f"p_{c}" for c in classes]
    merged = objects.drop(columns=[c for c in cols[len(keys):] if c in objects.columns]).merge(classes_table[cols], on=keys, how="left")
    merged["class"] = merged["class"].fillna("")
    merged["classifier_name"], merged["classifier_hash"] = model["name"], model["hash"]
    return merged


def classify_segmented(classifier, src, res, channel=None, *, progress=None, cancel: CancelToken | None = None):
    """The objects table and counts row of one segmented image with each object's class.

    ``res`` is a segmentation result (its ``objects`` table, ``labels`` and ``counts_row()``); used by
    ``segment --classifier`` and by every ``batch`` worker, so both write the same columns.
    """
    from .predict import add_counts, classify_objects

    if classifier.spec.level != "object":
        raise InputError(f"The classifier '{classifier.info.name}' classifies whole images, not objects", "Use `classify` for image-level classifiers")
    table = classify_objects(classifier, src, res.labels, channel=channel, progress=progress, cancel=cancel)
    info = {"name": classifier.info.name, "hash": classifier.info.content_hash}
    objects = merge_classes(res.objects, table, classifier.classes, info)
    row = add_counts(res.counts_row(), classifier.classes, objects) | {"classifier_name": info["name"], "classifier_hash": info["hash"]}
    return objects, row


def classify_files(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    model,
    *,
    labels=None,
    channel: int | None = None,
    batch: int | None = None,
    progress=None,
    cancel: CancelToken | None = None,
) -> ClassifyReport:
    import pandas as pd

    from ..io.export import measure_labels, with_provenance
    from ..io.image import open_image
    from ..io.outputs import Staging, ensure_writable_dir, write_csv_atomic
    from .predict import add_counts, classify_images, classify_objects

    if not inputs:
        raise InputError("No input images were given", "Pass one or more image files")
    info = {"name": model.info.name, "hash": model.info.content_hash}
    classes = model.classes
    sources, label_arrays = [], []
    try:
        stems: dict[str, str] = {}
        for p in inputs:
            sources.append(open_image(p))
            if sources[-1].name in stems:
                raise InputError(f"Two inputs have the same name '{sources[-1].name}': '{stems[sources[-1].name]}' and '{p}'", "Rename one, or classify them into different --out folders")
            stems[sources[-1].name] = str(p)
        if model.spec.level == "object":
            for src, lp in zip(sources, _label_files(inputs, labels)):
                arr, handle = open_labels(lp, src)
                label_arrays.append((arr, handle))
        elif labels is not None:
            raise InputError(f"'{info['name']}' classifies whole images; --labels is for object classifiers", "Leave --labels out")
        out = ensure_writable_dir(out_dir)
        in_paths = {Path(p).resolve() for p in inputs}
        staging = Staging(out)
        try:
            files, counts = [], []
            if model.spec.level == "image":
                prog = None if progress is None else (lambda d, t: progress(d, t, "classify"))
                table = classify_images(model, sources, channel=channel, batch=batch, progress=prog, cancel=cancel)
                table["model_name"], table["model_hash"] = info["name"], info["hash"]
                _guard(out / "predictions.csv", in_paths)
                write_csv_atomic(staging.path("predictions.csv"), table)
                files.append(out / "predictions.csv")
            else:
                frames = []
                for k, (src, (arr, _)) in enumerate(zip(sources, label_arrays)):
                    prog = None if progress is None else (lambda d, t, k=k, n=src.name: progress(d, t, f"{n} ({k + 1}/{len(sources)}): classify"))
                    pred = classify_objects(model, src, arr, channel=channel, batch=batch, progress=prog, cancel=cancel)
                    image = _intensity(src)
                    objects, n = measure_labels(arr, image, stack_axes="".join(a for a in src.axes if a in "TZ"))
                    merged = merge_classes(objects, pred, classes, info)
                    frames.append(with_provenance(merged, src.name, {}).drop(columns=["model_name", "model_hash"]))
                    counts.append(add_counts({"image": src.name, "n_objects": n}, classes, merged) | {"classifier_name": info["name"], "classifier_hash": info["hash"]})
                table = pd.concat(frames, ignore_index=True)
                for name in ("objects.csv", "counts.csv"):
                    _guard(out / name, in_paths)
                write_csv_atomic(staging.path("objects.csv"), table)
                write_csv_atomic(staging.path("counts.csv"), pd.DataFrame(counts))
                files += [out / "objects.csv", out / "counts.csv"]
            staging.commit()
        except BaseException:
            staging.abort()
            raise
    finally:
        for s in sources:
            s.close()
        for _, h in label_arrays:
            h.close()
    return ClassifyReport(out, model.spec.level, files, table, counts)


def _guard(path: Path, in_paths: set) -> None:
    if path.resolve() in in_paths:
        raise InputError(f"Writing '{path}' would overwrite an input", "Choose another --out folder")


def _intensity(src):
    """The image as ``(*stack, C, Y, X)`` for intensity measurements when it is small enough to read whole, else None."""
    from ..io.export import MEASURE_LIMIT

    if np.prod(src.shape) > MEASURE_LIMIT:
        return None
    H, W = src.spatial_shape
    planes = [src.read(p, slice(0, H), slice(0, W)) for p in src.planes()]
    x = np.stack(planes).reshape(tuple(src.stack_shape) + planes[0].shape)
    return x
