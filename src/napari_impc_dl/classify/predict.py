"""Classify images (one class per image plane) and labelled objects (one class per object).

    classify_images   ImageSources -> DataFrame: image, plane, class, p_<class>...
    classify_objects  one ImageSource + its instance labels -> DataFrame: label, class, p_<class>...
    add_counts        per-class counts ``n_<class>`` for a counts row (:mod:`napari_impc_dl.measure.counts`)

Both stream their inputs through :func:`~napari_impc_dl.inference.batches.run_batches` (producer
thread, device, AMP, OOM back-off). Column names are ``p_<class>`` with the class name as given
in training (``p_chromosome``), so a table reads the same in a spreadsheet and in napari.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..errors import CancelToken, InputError
from ..inference.batches import BatchStats, run_batches
from ..measure.counts import add_counts  # noqa: F401  (re-exported)
from .crops import iter_crop_batches, object_boxes


LABELS_IN_MEMORY = 256 * 2**20
"""Lazy label planes up to this many bytes (8192 x 8192 int32) are read whole for classification; larger ones
are read region by region."""


def default_batch(model) -> int:
    return 64 if model.device.type == "cpu" else 256


def _channels(source, model, channel: int | None) -> list[int] | None:
    """Image channels the classifier reads (None: all of them), or one clear error."""
    want = model.spec.image_channels
    if channel is not None:
        if channel >= source.n_channels:
            raise InputError(f"{source.name}: --channel {channel} does not exist (the image has {source.n_channels})", f"Choose 0..{source.n_channels - 1}")
        if want != 1:
            raise InputError(f"The classifier '{model.info.name}' takes {want} channels; --channel picks one", "Leave --channel out")
        return [channel]
    if source.n_channels != want:
        raise InputError(
            f"{source.name} has {source.n_channels} channel(s) but the classifier '{model.info.name}' takes {want}",
            "Pick one channel with --channel N" if want == 1 else f"Give images with {want} channels",
        )
    return None


def stack_columns(source) -> str:
    """The stack axes of ``source`` as table column names (``"z"``, ``"tz"``), as ``objects.csv`` names them."""
    return "".join(a for a in source.axes if a in "TZ").lower()


def _frame(probs: np.ndarray, classes: list[str], key_cols: dict):
    import pandas as pd

    df = pd.DataFrame(key_cols)
    best = probs.argmax(1) if len(probs) else np.zeros(0, int)
    df["class"] = np.asarray(classes, dtype=object)[best] if len(probs) else np.zeros(0, object)
    for k, c in enumerate(classes):
        df[f"p_{c}"] = probs[:, k] if len(probs) else np.zeros(0)
    return df


def classify_images(
    model,
    sources: Sequence,
    *,
    channel: int | None = None,
    batch: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    stats: BatchStats | None = None,
):
    """One row per image plane: ``image``, the stack index columns (``z``, ``t``) of stacks, ``class``, ``p_<class>``..."""
    if model.spec.level != "image":
        raise InputError(f"'{model.info.name}' classifies objects, not whole images", "Pass --labels (label images of the objects) with it")
    spec = model.spec
    items = [(s, p, _channels(s, model, channel)) for s in sources for p in s.planes()]
    bs = batch or default_batch(model)

    def produce():
        for i in range(0, len(items), bs):
            group = items[i : i + bs]
            arr = np.stack([model.prepare_image(s, p, ch) for s, p, ch in group])
            yield np.arange(i, i + len(group)), arr

    out = run_batches(model, produce, total=len(items), progress=progress, cancel=cancel, stats=stats)
    probs = np.concatenate([o for _, o in out]) if out else np.zeros((0, len(spec.classes)), np.float32)
    keys: dict = {"image": [s.name for s, _, _ in items]}
    for ax in (sorted({a for s, _, _ in items for a in stack_columns(s)}, key="tz".index)):
        keys[ax] = [p[stack_columns(s).index(ax)] if ax in stack_columns(s) else -1 for s, p, _ in items]
    return _frame(probs, spec.classes, keys)


def classify_objects(
    model,
    source,
    labels,
    *,
    channel: int | None = None,
    batch: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    stats: BatchStats | None = None,
):
    """One row per labelled object: ``label, class, p_<class>...`` (after the stack columns ``t`` / ``z`` of stacks, as in ``objects.csv``).

    ``labels`` has the image's stack shape + ``(Y, X)`` (numpy, zarr, dask: read region by region).
    """
    import pandas as pd

    if model.spec.level != "object":
        raise InputError(f"'{model.info.name}' classifies whole images, not objects", "Leave --labels out, or use an object classifier")
    if tuple(labels.shape) != tuple(source.stack_shape) + tuple(source.spatial_shape):
        raise InputError(
            f"The labels of {source.name} have shape {tuple(labels.shape)}, the image {tuple(source.stack_shape) + tuple(source.spatial_shape)}",
            "Give the label image made from this image",
        )
    if np.dtype(labels.dtype).kind not in "iu":
        raise InputError(f"The labels of {source.name} are {np.dtype(labels.dtype)}, not an instance mask (integers)", "Give an integer label image: 0 background, 1..n one id per object")
    spec = model.spec
    ch = _channels(source, model, channel) if spec.crop.input != "mask" else None
    frames = []
    planes = list(source.planes())
    for plane in planes:
        lab = labels[plane] if plane else labels
        if not isinstance(lab, np.ndarray) and np.prod(lab.shape) * np.dtype(lab.dtype).itemsize <= LABELS_IN_MEMORY:
            lab = np.asarray(lab)  # a lazy plane that fits: decoded once, not once per region
        boxes = object_boxes(lab)
        if not len(boxes):
            continue
        normalize = model.fit_normalizer(source.sample(plane)[ch] if ch is not None else source.sample(plane))

        def read(ys, xs, plane=plane):
            x = source.read(plane, ys, xs)
            return x[ch] if ch is not None else x

        produce = lambda lab=lab, boxes=boxes, read=read, normalize=normalize: iter_crop_batches(  # noqa: E731
            read, lab, source.spatial_shape, spec.crop, spec.input_size, normalize=normalize, boxes=boxes, batch=batch or default_batch(model)
        )
        out = run_batches(model, produce, total=len(boxes), progress=progress, cancel=cancel, stats=stats)
        ids = np.concatenate([k for k, _ in out])
        probs = np.concatenate([o for _, o in out])
        order = np.argsort(ids, kind="stable")
        keys = {ax: np.full(len(ids), i) for ax, i in zip(stack_columns(source), plane)}
        keys["label"] = ids[order]
        frames.append(_frame(probs[order], spec.classes, keys))
    if not frames:
        cols = list(stack_columns(source)) + ["label", "class"] + [f"p_{c}" for c in spec.classes]
        return pd.DataFrame({c: [] for c in cols})
    return pd.concat(frames, ignore_index=True)
