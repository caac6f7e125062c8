"""One image through the whole segmentation: check, tile and infer each plane, postprocess, measure.

    check_input    the image can be segmented by the model (channels, NaN-only, constant): or one clear error
    segment_image  one image (path, array or ImageSource) -> SegmentationResult (labels, probabilities, table)
    relabel        cached probabilities + new thresholds -> labels and table again, without the model

Each plane goes ``predict_plane`` (engine: tiles, batches, forward) -> ``labels_from_probabilities``
(instances, seam-free blocks) -> ``BlockTables`` (measurements beside the postprocessing). On a
GPU the two overlap (:mod:`.overlap`): blocks are postprocessed as soon as the engine has written
their rows, while the model computes the rows below. The
facade (:mod:`napari_impc_dl.api`) re-exports these for the CLI and the widgets and adds the
files-in, files-out runs around them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..config import SegmentConfig
from ..errors import CancelToken, InputError
from .allocator import reuse_large_buffers
from .loading import load_model
from .semantic import class_map, class_table, semantic_spec

Progress = Callable[[int, int, str], None]


@dataclass
class SegmentationResult:
    """Everything one image's segmentation produced.

    ``labels`` has the image's stack shape + ``(Y, X)``; ``probabilities`` is ``(*stack, K, Y, X)``
    uint8 (``p * 255``). Both are numpy arrays, or zarr arrays on disk for large images.
    """

    name: str
    labels: Any
    probabilities: Any
    objects: Any  # pandas.DataFrame
    n_objects: int
    model: dict
    params: dict
    timings: dict = field(default_factory=dict)
    stack_axes: str = ""
    semantic: dict | None = None
    """A semantic model's result: ``classes``, ``background`` and ``areas`` (pixels per class); ``labels``
    then holds class indices, ``objects`` one row per class."""

    def counts_row(self) -> dict:
        """This image's row of ``counts.csv``."""
        if self.semantic is not None:
            return self._semantic_row()
        areas = self.objects["area"].to_numpy() if len(self.objects) else np.zeros(0)
        row = {
            "image": self.name,
            "n_objects": self.n_objects,
            "median_area": float(np.median(areas)) if areas.size else 0.0,
            "mean_area": float(areas.mean()) if areas.size else 0.0,
            "n_planes": int(np.prod(self.labels.shape[:-2])) if len(self.labels.shape) > 2 else 1,
            "model_name": self.model["name"],
            "model_hash": self.model["hash"],
        }
        row.update({k: v for k, v in self.params.items() if k not in ("model",)})
        if "class" in self.objects.columns:  # classified (segment's "Then classify", a Classify run): n_<class> too
            from ..measure.counts import add_counts, classes_of

            row = add_counts(row, classes_of(self.objects), self.objects)
            for k in ("classifier_name", "classifier_hash"):
                if k in self.objects.columns and len(self.objects):
                    row[k] = self.objects[k].iloc[0]
        return row


    def _semantic_row(self) -> dict:
        from ..measure.areas import area_counts

        s = self.semantic
        row = {"image": self.name, **area_counts(s["areas"], s["classes"], s["background"], self.params.get("pixel_size_um"))}
        row["n_planes"] = int(np.prod(self.labels.shape[:-2])) if len(self.labels.shape) > 2 else 1
        row.update(model_name=self.model["name"], model_hash=self.model["hash"])
        row.update({k: v for k, v in self.params.items() if k in ("tile", "halo", "batch", "channel", "level", "downsample", "pixel_size_um")})
        return row


def _stage(progress: Progress | None, stage: str):
    if progress is None:
        return None
    return lambda done, total: progress(done, total, stage)


def _as_source(image, config: SegmentConfig):
    from ..io.image import ImageSource, open_image

    if isinstance(image, ImageSource):
        return image, False
    if isinstance(image, (str, os.PathLike)):
        return open_image(image, channel_axis=config.channel_axis, level=config.level, pixel_size_um=config.pixel_size_um), True
    return ImageSource.from_array(image, name="image", channel_axis=config.channel_axis), False


def check_input(source, model, config: SegmentConfig) -> list[int] | None:
    """Raise an :class:`InputError` for an image the model cannot segment; return the channels to read.

    Checks channel count (with ``config.channel``), and samples each plane for NaN-only and
    constant content. Reads only a sample, never the whole image.
    """
    need = model.info.in_channels
    label = f"'{source.path or source.name}'"
    channels = None
    if config.channel is not None:
        if config.channel >= source.n_channels:
            raise InputError(f"{label} has {source.n_channels} channel(s); channel {config.channel} does not exist", f"Use --channel 0..{source.n_channels - 1}")
        channels = [config.channel]
    elif source.n_channels != need:
        hint = f"Pick one channel with --channel N (0..{source.n_channels - 1})" if need == 1 else f"Give an image with {need} channels"
        raise InputError(f"Model '{model.info.name}' expects {need} channel(s) but {label} has {source.n_channels} (axes {source.axes}, shape {source.shape})", hint)
    for plane in _first_planes(source):
        s = source.sample(plane).astype(np.float64)  # the sample normalisation uses too: read once
        if channels is not None:
            s = s[channels]
        finite = np.isfinite(s)
        where = f" (plane {plane})" if plane else ""
        if not finite.any():
            raise InputError(f"{label}{where} contains no valid numbers (all NaN or infinite)", "Check the export that produced the file")
        v = s[finite]
        if v.min() == v.max():
            raise InputError(f"{label}{where} is constant (every sampled pixel is {v.min():g}): there is nothing to segment", "Check that the right file and channel were chosen, and that the acquisition worked")
    return channels


class _PlaneView:
    """``arr[plane]`` of a zarr (or other non-numpy) array that reads and writes through to ``arr``."""

    def __init__(self, arr, plane: tuple[int, ...]) -> None:
        self.arr, self.plane = arr, plane
        self.shape = tuple(arr.shape[len(plane):])
        self.dtype = arr.dtype

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return self.arr[self.plane + key]

    def __setitem__(self, key, value) -> None:
        key = key if isinstance(key, tuple) else (key,)
        self.arr[self.plane + key] = value


def _plane(arr, plane: tuple[int, ...]):
    """A writable view of one plane of ``arr`` (numpy view, or a pass-through wrapper)."""
    if not plane:
        return arr
    return arr[plane] if isinstance(arr, np.ndarray) else _PlaneView(arr, plane)


def _first_planes(source, limit: int = 8):
    for i, plane in enumerate(source.planes()):
        if i >= limit:
            return
        yield plane


@reuse_large_buffers()
def segment_image(
    image,
    model=None,
    config: SegmentConfig | None = None,
    *,
    labels_store=None,
    probabilities_store=None,
    labels_ready: Callable[[Any, int], None] | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> SegmentationResult:
    """Segment one image: a path, an array (numpy / dask / zarr, e.g. a napari layer's data) or an ImageSource.

    ``model`` is a Runnable (from :func:`load_model`), a preset name or a checkpoint path.
    ``labels_store`` / ``probabilities_store`` may be given (e.g. zarr arrays on disk for large images);
    otherwise numpy arrays are allocated. ``labels_ready(labels, n_objects)`` is called as soon as the labels are
    final, while the last objects are still being measured (e.g. to start writing them).
    """
    import pandas as pd

    from .engine import predict_plane
    from .instances import labels_from_probabilities
    from .overlap import infer_while_postprocessing, overlapped
    from ..measure.blocks import BlockTables

    config = config or SegmentConfig()
    if not _is_runnable(model):
        model = load_model(model, device=config.device)
    source, owned = _as_source(image, config)
    try:
        channels = check_input(source, model, config)
        H, W = source.spatial_shape
        stack = source.stack_shape
        K = len(model.info.output_names)
        probs = probabilities_store if probabilities_store is not None else np.zeros(stack + (K, H, W), np.uint8)
        labels = labels_store if labels_store is not None else np.zeros(stack + (H, W), np.int32)
        spec = semantic_spec(model)
        class_areas = np.zeros(K, np.int64)
        params = _instance_params(model, config) if spec is None else None
        estimates: list[float] = []
        names = [f"c{c}" for c in (channels or range(source.n_channels))]
        tables, next_id = [], 1
        timings = {"inference_s": 0.0, "postprocess_s": 0.0, "measure_s": 0.0}
        planes = list(source.planes())
        stack_axes = "".join(a for a in source.axes if a in "TZ")
        for pi, plane in enumerate(planes):
            def read(t, plane=plane):
                x = source.read(plane, slice(t.y0, t.y1), slice(t.x0, t.x1))
                return x[channels] if channels is not None else x

            normalize = plane_normalizer(model, source, plane, channels)
            p_plane = _plane(probs, plane)
            finalize = getattr(model, "finalize_plane", None)  # optional hook: outputs that need whole-image postprocessing
            target = p_plane if finalize is None else model.raw_buffer((H, W))
            infer_stage = _stage(progress, f"inference {pi + 1}/{len(planes)}" if len(planes) > 1 else "inference")
            l_plane = _plane(labels, plane)
            if spec is None and finalize is None and overlapped(config, model, params):
                last = pi == len(planes) - 1

                def postprocess(gate, plane=plane, l_plane=l_plane, last=last):
                    with BlockTables(source, plane, channels, names, stack_axes) as measure:
                        done = labels_from_probabilities(
                            gate, l_plane, plane_params(params, None), start_id=next_id, on_block=measure, on_start=measure.start,
                            progress=_stage(progress, "postprocessing"), cancel=cancel,
                        )
                        if labels_ready is not None and last:
                            labels_ready(labels, done[0] - 1)
                        return done, measure.collect(), measure.seconds

                run = infer_while_postprocessing(
                    lambda on_rows, cancel_both: predict_plane(
                        model, read, (H, W), p_plane, normalize, tile=config.tile, halo=config.halo, batch=config.batch,
                        progress=infer_stage, cancel=cancel_both, on_rows=on_rows,
                    ),
                    postprocess, p_plane, cancel,
                )
                stats, ((next_id, busy), block_tables, measure_s) = run.inference, run.postprocessing
                _engine_timings(timings, stats)
                tables.extend(block_tables)
                timings["postprocess_s"] += run.tail_s  # only what inference did not hide (see infer_while_postprocessing)
                timings["postprocess_overlapped_s"] = timings.get("postprocess_overlapped_s", 0.0) + busy
                timings["measure_s"] += measure_s
                continue
            stats = predict_plane(
                model, read, (H, W), target, normalize, tile=config.tile, halo=config.halo, batch=config.batch,
                progress=infer_stage, cancel=cancel,
            )
            if finalize is not None:
                finalize(target, p_plane)
                del target
            _engine_timings(timings, stats)
            t0 = time.perf_counter()
            if spec is not None:  # a class per pixel: the class map and the area of each class, no instances
                class_areas += class_map(p_plane, l_plane, progress=_stage(progress, "class map"), cancel=cancel)
                timings["postprocess_s"] += time.perf_counter() - t0
                if labels_ready is not None and pi == len(planes) - 1:
                    labels_ready(labels, 0)
                continue
            pparams = plane_params(params, p_plane, estimates)
            timings["postprocess_s"] += time.perf_counter() - t0
            with BlockTables(source, plane, channels, names, stack_axes) as measure:  # measures block i beside block i + 1
                next_id, busy = labels_from_probabilities(
                    p_plane, l_plane, pparams, start_id=next_id, on_block=measure, on_start=measure.start,
                    progress=_stage(progress, "postprocessing"), cancel=cancel,
                )
                if labels_ready is not None and pi == len(planes) - 1:
                    labels_ready(labels, next_id - 1)
                tables.extend(measure.collect())
            timings["postprocess_s"] += busy
            timings["measure_s"] += measure.seconds
        info = {"name": model.info.name, "hash": model.info.content_hash, "source": model.info.source}
        if spec is not None:
            return _semantic_result(source, labels, probs, info, model, config, timings, stack_axes, spec, class_areas)
        objects = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["label"])
        diameter = params.diameter if params.diameter is not None else (float(np.median(estimates)) if estimates else None)
        run_params = run_parameters(model, config, params, timings.get("batch", config.batch), diameter=diameter)
        if source.slide is not None:  # a level of a pyramid: which, and its scale to full resolution (exports use it)
            run_params.update(level=source.slide["level"], downsample=source.slide["downsample"], pixel_size_um=source.slide["pixel_size_um"])
        return SegmentationResult(
            name=source.name, labels=labels, probabilities=probs, objects=objects, n_objects=next_id - 1,
            model=info, params=run_params, timings=timings, stack_axes=stack_axes,
        )
    finally:
        if owned:
            source.close()


def _engine_timings(timings: dict, stats) -> None:
    """Add one plane's engine figures to a run's ``timings``."""
    timings["inference_s"] += stats.seconds
    timings["tiles"] = timings.get("tiles", 0) + stats.n_tiles
    timings["tile_shape"], timings["device"], timings["overhead"] = list(stats.tile_shape), stats.device, round(stats.overhead, 4)
    timings["batch"] = stats.batch
    if stats.fallbacks:
        timings.setdefault("fallbacks", []).extend(stats.fallbacks)


def _semantic_result(source, labels, probs, info, model, config, timings, stack_axes, spec, areas) -> SegmentationResult:
    run_params = {"tile": config.tile or model.info.tiling.tile, "halo": model.info.tiling.halo if config.halo is None else config.halo,
                  "batch": timings.get("batch", config.batch), "channel": config.channel, "instances": "semantic"}
    pixel = None
    if source.slide is not None:
        run_params.update(level=source.slide["level"], downsample=source.slide["downsample"], pixel_size_um=source.slide["pixel_size_um"])
        pixel = source.slide["pixel_size_um"]
    elif getattr(source, "pixel_size_um", None):
        run_params["pixel_size_um"] = pixel = source.pixel_size_um
    semantic = {"classes": list(spec["classes"]), "background": list(spec["background"]), "areas": [int(a) for a in areas]}
    return SegmentationResult(
        name=source.name, labels=labels, probabilities=probs, objects=class_table(areas, spec, pixel), n_objects=0,
        model=info, params=run_params, timings=timings, stack_axes=stack_axes, semantic=semantic,
    )


def plane_normalizer(model, source, plane: tuple[int, ...], channels: list[int] | None):
    """The normaliser of one plane: from the model's whole-image hook when it has one, else from the plane's sample."""
    whole_image = getattr(model, "normalizer_for_image", None)  # optional hook: statistics of the whole image, streamed
    if whole_image is not None:
        return whole_image(source, plane, channels)
    sample = source.sample(plane)
    return model.fit_normalizer(sample[channels] if channels is not None else sample)


def run_parameters(model, config: SegmentConfig, params, batch, *, diameter: float | None = None) -> dict:
    """The parameters a result records (``counts.csv`` columns): tile, halo, batch, thresholds, min size, channel,
    how instances were made (``instances``) and the object diameter (given, estimated, or empty: not used)."""
    from .seeds import min_area

    return {
        "tile": config.tile or model.info.tiling.tile,
        "halo": model.info.tiling.halo if config.halo is None else config.halo,
        "batch": batch,
        "foreground_threshold": params.foreground_threshold,
        "seed_threshold": params.seed_threshold,
        "min_size": max(params.min_size, min_area(diameter)),
        "merge_threshold": params.merge_threshold,
        "merge_min_solidity": params.merge_min_solidity,
        "channel": config.channel,
        "instances": params.method,
        "diameter": diameter,
        "diameter_source": "given" if config.diameter is not None else ("estimated" if diameter is not None else ""),
    }


def _is_runnable(model) -> bool:
    """An already-loaded model (anything with the Runnable protocol's ``info`` and ``forward``)."""
    return hasattr(model, "info") and hasattr(model, "forward")


def _instance_params(model, config: SegmentConfig):
    """The postprocessing parameters of a run: the config's, else the model card's; the method from the model's outputs."""
    from .instances import InstanceParams
    from .seeds import choose_method

    d = getattr(getattr(model, "card", None), "instances", None)
    pick = lambda v, name, default: v if v is not None else (getattr(d, name) if d is not None else default)  # noqa: E731
    return InstanceParams(
        foreground_threshold=pick(config.foreground_threshold, "foreground_threshold", 0.5),
        seed_threshold=pick(config.seed_threshold, "seed_threshold", 0.5),
        min_size=pick(config.min_size, "min_size", 12),
        merge_threshold=_merge_level(config.merge_threshold if config.merge_threshold is not None else getattr(d, "merge_threshold", None)),
        merge_min_solidity=pick(config.merge_min_solidity, "merge_min_solidity", None),
        block=config.block,
        halo=config.block_halo,
        method=choose_method(model.info.output_names, config.instances),
        diameter=config.diameter,
        device=postprocess_device(config, model),
    )


def _merge_level(v: float | None) -> float | None:
    """The border-merge level of InstanceParams: ``None`` (and 1, the config's "never") turn it off."""
    return None if v is None or v >= 1.0 else float(v)


def postprocess_device(config: SegmentConfig, model) -> str | None:
    """The torch device the postprocessing blocks run on (``None``: numpy on the CPU), from ``config.postprocess_device``."""
    from ..config import GPU_POSTPROCESS_BELOW_CORES, usable_cores

    device = getattr(model, "device", None)
    if config.postprocess_device == "cpu" or device is None:
        return None
    if config.postprocess_device == "model":
        return None if device.type == "cpu" else str(device)
    return str(device) if device.type == "cuda" and usable_cores() < GPU_POSTPROCESS_BELOW_CORES else None


def plane_params(params, probs, estimates: list | None = None):
    """``params`` for one plane of probabilities ``(K, H, W)``: for methods that need them, the diameter
    (estimated when none was given, and appended to ``estimates``) and the core level; the minimum
    size bounded by the diameter."""
    from dataclasses import replace

    from .instances import plan_blocks
    from .seeds import DEFAULT_DIAMETER, estimate_size, min_area, needs_diameter

    diameter, core = params.diameter, params.core_threshold
    if needs_diameter(params.method) and (diameter is None or (core is None and params.method == "distance-transform")):
        found, level = estimate_size(probs, plan_blocks(tuple(probs.shape[-2:]), params.block, 0), params.foreground_threshold)
        if diameter is None:
            diameter = round(found, 1) if found is not None else DEFAULT_DIAMETER
            if estimates is not None:
                estimates.append(diameter)
        if core is None and params.method == "distance-transform":
            core = round(level, 3)
    return replace(params, diameter=diameter, core_threshold=core, min_size=max(params.min_size, min_area(diameter)))


@reuse_large_buffers()
def relabel(
    result: SegmentationResult,
    image,
    config: SegmentConfig,
    *,
    labels_store=None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> SegmentationResult:
    """Re-run only the postprocessing of ``result`` with ``config``'s thresholds (no model needed).

    ``image`` is the same image (for intensity measurements). Returns a new result with new labels,
    written into ``labels_store`` when given (e.g. a zarr array for a large image), else a new numpy array.
    """
    import pandas as pd

    from .instances import InstanceParams, labels_from_probabilities
    from ..measure.blocks import BlockTables

    if result.semantic is not None:  # a class map has no thresholds to change
        return result
    source, owned = _as_source(image, config)
    try:
        from .seeds import choose_method

        before = result.params.get("instances", "distance-head")
        outputs = {"distance-head": ["foreground", "distance"], "boundary": ["foreground", "boundary"]}.get(before, ["foreground"])
        params = InstanceParams(
            foreground_threshold=config.foreground_threshold or result.params["foreground_threshold"],
            seed_threshold=config.seed_threshold or result.params["seed_threshold"],
            min_size=result.params["min_size"] if config.min_size is None else config.min_size,
            merge_threshold=_merge_level(config.merge_threshold if config.merge_threshold is not None else result.params.get("merge_threshold")),
            merge_min_solidity=config.merge_min_solidity if config.merge_min_solidity is not None else result.params.get("merge_min_solidity"),
            block=config.block,
            halo=config.block_halo,
            method=before if config.instances == "auto" else choose_method(outputs, config.instances),
            diameter=config.diameter if config.diameter is not None else (result.params.get("diameter") if result.params.get("diameter_source") == "given" else None),
        )
        estimates: list[float] = []
        channels = [config.channel] if config.channel is not None else None
        names = [f"c{c}" for c in (channels or range(source.n_channels))]
        labels = labels_store if labels_store is not None else np.zeros(result.labels.shape, np.int32)
        tables, next_id = [], 1
        for plane in source.planes():
            p_plane = _plane(result.probabilities, plane)
            l_plane = _plane(labels, plane)
            with BlockTables(source, plane, channels, names, result.stack_axes) as measure:
                next_id, _ = labels_from_probabilities(p_plane, l_plane, plane_params(params, p_plane, estimates), start_id=next_id, on_block=measure, on_start=measure.start, progress=_stage(progress, "postprocessing"), cancel=cancel)
                tables.extend(measure.collect())
        objects = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["label"])
        from .seeds import min_area

        diameter = params.diameter if params.diameter is not None else (float(np.median(estimates)) if estimates else None)
        new_params = dict(
            result.params, foreground_threshold=params.foreground_threshold, seed_threshold=params.seed_threshold,
            min_size=max(params.min_size, min_area(diameter)), merge_threshold=params.merge_threshold, merge_min_solidity=params.merge_min_solidity, instances=params.method, diameter=diameter,
            diameter_source="given" if config.diameter is not None or result.params.get("diameter_source") == "given" else ("estimated" if diameter is not None else ""),
        )
        return SegmentationResult(result.name, labels, result.probabilities, objects, next_id - 1, result.model, new_params, {}, result.stack_axes)
    finally:
        if owned:
            source.close()
