"""Score a folder of predicted label images against a folder of ground-truth label images.

Files are paired by name: the truth ``<stem>.tif`` pairs with the prediction ``<stem>_labels.<ext>``
(what ``napari-impc-dl segment`` writes) or, failing that, with ``<stem>.<ext>``. Readable formats:
``.tif`` / ``.tiff`` (also ``.ome.tif``), ``.png``, ``.npy`` and ``.zarr`` folders (an array, or
an OME-Zarr group whose level ``0`` is used). When a stem exists in several formats the first of
that list wins. Each pair is scored by :func:`~napari_impc_dl.measure.matching.match_instances`.

Either side may instead be a masks CSV (``image,label,height,width,encoded_pixels``, run-length
encoded: what ``segment --export rle`` writes), whose ``image`` names pair like file stems.

A truth image without a prediction counts as all objects missed and is listed under
``missing_predictions``; predictions without a truth are listed under ``unmatched_predictions``.
"""

from __future__ import annotations

import csv
import math
import os
import pathlib
import tempfile
from collections.abc import Callable

import numpy as np

from ..errors import InputError
from .matching import match_instances, scores

__all__ = ["evaluate_folders", "read_labels", "CSV_COLUMNS"]

_EXTS = (".tif", ".tiff", ".zarr", ".npy", ".png")  # preference order when a stem has several
CSV_COLUMNS = (
    "image",
    "n_true",
    "n_pred",
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "iou_matched_mean",
    "truth_file",
    "pred_file",
)


def _stem(path: pathlib.Path) -> str | None:
    """Name without a readable extension (and without ``.ome``), or None if not a label file."""
    name = path.name
    if name.startswith("."):
        return None
    low = name.lower()
    for ext in _EXTS:
        if low.endswith(ext) and (path.is_dir() == (ext == ".zarr")):
            stem = name[: -len(ext)]
            return stem[:-4] if stem.lower().endswith(".ome") else stem
    return None


def _masks_csv(path: pathlib.Path) -> dict[str, np.ndarray]:
    from ..io.shape_exports import decode_masks_csv

    try:
        return decode_masks_csv(path)
    except (ValueError, KeyError) as exc:
        raise InputError(f"cannot read the masks in {path}: {exc}", "Give a masks CSV written by segment --export rle (image,label,height,width,encoded_pixels)") from exc


class _InCsv(pathlib.PurePosixPath):
    """An image of a masks CSV, named ``masks.csv#image`` in the evaluation table."""


def _index(folder: pathlib.Path, role: str) -> dict[str, pathlib.Path]:
    if folder.suffix.lower() == ".csv" and folder.is_file():
        import pandas as pd

        names = pd.read_csv(folder, usecols=lambda c: c in ("image", "ImageId"), dtype=str).iloc[:, 0].unique()
        return {str(name): _InCsv(f"{folder.name}#{name}") for name in names}
    if not folder.is_dir():
        raise InputError(f"{role} folder {folder} does not exist", f"Give an existing folder of {role} label images.")
    found: dict[str, pathlib.Path] = {}
    rank = {ext: i for i, ext in enumerate(_EXTS)}

    def _rank(p: pathlib.Path) -> int:
        return min(i for ext, i in rank.items() if p.name.lower().endswith(ext))

    for path in sorted(folder.iterdir()):
        stem = _stem(path)
        if stem is not None and (stem not in found or _rank(path) < _rank(found[stem])):
            found[stem] = path
    return found


def read_labels(path) -> np.ndarray:
    """Read a label image from ``.tif/.tiff/.png/.npy`` or a ``.zarr`` folder, singleton axes squeezed.

    Raises
    ------
    InputError
        If the file cannot be read.
    """
    path = pathlib.Path(path)
    low = path.name.lower()
    try:
        if low.endswith(".npy"):
            data = np.load(path, allow_pickle=False)
        elif low.endswith(".png"):
            import imageio.v3 as iio

            data = iio.imread(path)
        elif low.endswith(".zarr"):
            import zarr

            node = zarr.open(str(path), mode="r")
            if isinstance(node, zarr.Group):
                arrays = dict(node.arrays())
                if not arrays:
                    raise ValueError("the zarr group holds no array")
                node = arrays["0"] if "0" in arrays else arrays[sorted(arrays)[0]]
            data = node[...]
        else:
            import tifffile

            data = tifffile.imread(path)
    except Exception as exc:  # any reader failure is a problem with the user's file
        hint = "Check the file is a complete label image."
        raise InputError(f"cannot read labels from {path} ({exc})", hint) from exc
    return np.squeeze(np.asarray(data))


def _atomic_csv(path: pathlib.Path, rows: list[dict]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc.strerror or exc})", "Choose a folder you can write to.") from exc
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
        os.replace(tmp, path)
    except BaseException as exc:
        pathlib.Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {path} ({exc.strerror or exc})", "Check free disk space.") from exc
        raise


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan


def is_masks_csv(path) -> bool:
    """Whether ``path`` is a CSV of run-length encoded masks (it has an ``encoded_pixels`` column)."""
    p = pathlib.Path(path)
    if p.suffix.lower() != ".csv" or not p.is_file():
        return False
    with open(p, encoding="utf-8", errors="replace") as f:
        header = f.readline().strip().lower().split(",")
    return "encoded_pixels" in header


def evaluate_folders(
    pred_dir,
    truth_dir,
    *,
    out_csv=None,
    iou_threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Score every ground-truth label image in ``truth_dir`` against its prediction in ``pred_dir``.

    Parameters
    ----------
    pred_dir, truth_dir : str or path
        Folders of predicted and ground-truth label images (see the module docstring for naming).
    out_csv : str or path, optional
        Where to write one row per image (columns ``CSV_COLUMNS``); written to a temporary file
        and renamed, so a half-written table never appears.
    iou_threshold : float
        Smallest IoU for a predicted object to match a true one, in (0, 1].
    progress : callable, optional
        Called as ``progress(done, total)`` after each image.

    Returns
    -------
    dict
        ``n_images``, ``iou_threshold``; means over images ``f1_mean``, ``precision_mean``,
        ``recall_mean``, ``iou_matched_mean``; pooled over all objects ``f1_pooled``,
        ``precision_pooled``, ``recall_pooled``, ``iou_matched_pooled`` and the summed ``tp``,
        ``fp``, ``fn``, ``n_true``, ``n_pred``; ``missing_predictions`` (truth names without a
        prediction, scored as all missed), ``unmatched_predictions``, ``rows`` (per-image dicts)
        and ``out_csv`` (str or None).

    Raises
    ------
    InputError
        If a folder is missing, no file pairs up, a file cannot be read, or a pair differs in shape.
    """
    if not 0 < iou_threshold <= 1:
        raise InputError(f"IoU threshold {iou_threshold} is outside (0, 1]", "Use e.g. 0.5.")
    pred_dir, truth_dir = pathlib.Path(pred_dir), pathlib.Path(truth_dir)
    truths, preds = _index(truth_dir, "ground-truth"), _index(pred_dir, "prediction")
    decoded = {p: _masks_csv(p) for p in (pred_dir, truth_dir) if p.suffix.lower() == ".csv"}
    pairs: dict[str, pathlib.Path | None] = {}
    for stem in truths:
        pairs[stem] = preds.get(f"{stem}_labels") or preds.get(stem)
    used = {p for p in pairs.values() if p is not None}
    if not used:
        some_t = ", ".join(p.name for p in list(truths.values())[:5]) or "(no label files)"
        some_p = ", ".join(p.name for p in list(preds.values())[:5]) or "(no label files)"
        raise InputError(
            f"no prediction in {pred_dir} pairs with a ground truth in {truth_dir}: truth has {some_t}; "
            f"predictions have {some_p}",
            "Name predictions <stem>_labels.tif (or the same name as the truth file) for truth <stem>.tif.",
        )
    rows, matched_ious = [], []
    for done, (stem, pred_path) in enumerate(pairs.items(), 1):
        truth_path = truths[stem]
        truth = decoded[truth_dir][stem] if isinstance(truth_path, _InCsv) else read_labels(truth_path)
        if isinstance(pred_path, _InCsv):
            pred = decoded[pred_dir][str(pred_path).split("#", 1)[1]]
        else:
            pred = read_labels(pred_path) if pred_path is not None else np.zeros_like(truth)
        if pred.shape != truth.shape:
            raise InputError(
                f"prediction {pred_path} has shape {pred.shape} but its ground truth {truth_path} has {truth.shape}",
                "Predict on the same image the ground truth was drawn on, without cropping or resizing.",
            )
        try:
            res = match_instances(pred, truth, iou_threshold)
        except ValueError as exc:
            raise InputError(f"cannot score {pred_path or truth_path}: {exc}", "Give integer label images.") from exc
        matched_ious.extend(iou for _, _, iou in res.matched)
        rows.append(
            {
                "image": stem,
                **res.as_row(),
                "truth_file": truth_path.name,
                "pred_file": pred_path.name if pred_path is not None else "",
            }
        )
        if progress is not None:
            progress(done, len(pairs))
    if out_csv is not None:
        _atomic_csv(pathlib.Path(out_csv), rows)
    tp, n_true, n_pred = (sum(r[k] for r in rows) for k in ("tp", "n_true", "n_pred"))
    precision, recall, f1 = scores(tp, n_true, n_pred)
    return {
        "n_images": len(rows),
        "iou_threshold": float(iou_threshold),
        "f1_mean": _mean(r["f1"] for r in rows),
        "precision_mean": _mean(r["precision"] for r in rows),
        "recall_mean": _mean(r["recall"] for r in rows),
        "iou_matched_mean": _mean(r["iou_matched_mean"] for r in rows),
        "f1_pooled": f1,
        "precision_pooled": precision,
        "recall_pooled": recall,
        "iou_matched_pooled": _mean(matched_ious) if matched_ious else 0.0,
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_true - tp,
        "n_true": n_true,
        "n_pred": n_pred,
        "missing_predictions": [truths[s].name for s, p in pairs.items() if p is None],
        "unmatched_predictions": sorted(p.name for p in preds.values() if p not in used),
        "rows": rows,
        "out_csv": str(out_csv) if out_csv is not None else None,
    }
