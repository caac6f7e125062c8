"""The facade: the one door the CLI and the napari widgets both use.

    load_model     preset name / checkpoint path -> a Runnable on a device
    segment_image  one image (path, array or ImageSource) -> SegmentationResult (labels, probabilities, table)
    relabel        cached probabilities + new thresholds -> labels and table again, without the model
    segment        files in, files out: <stem>_labels.tif|.zarr, objects.csv, counts.csv in one folder
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
from typing import Any, Callable, Sequence

import numpy as np

from .config import SegmentConfig, validated
from .errors import CancelToken, InputError
from .inference.allocator import reuse_large_buffers

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


# ----------------------------------------------------------------------------- models


def load_model(model: str | os.PathLike | None = None, *, device: str = "auto", weights: str | None = None, trust_code: bool = False):
    """A runnable model on ``device`` from a preset name (``"nuclei"``), a checkpoint path, a BioImage Model Zoo
    package (zip, folder or rdf.yaml) or the name of a model imported into the library (``zoo import``).

    ``weights`` picks a package's weight format; ``trust_code`` lets a package's own Python code build its
    network. A Runnable passed in is returned as it is.
    """
    from .inference.engine import resolve_device
    from .inference.runnable import CheckpointModel
    from .presets import PRESETS, preset_path

    if hasattr(model, "forward") and hasattr(model, "info"):
        return model
    ref = "nuclei" if model is None else model
    if isinstance(ref, str) and ref.strip().lower() in PRESETS:
        path = preset_path(ref)
    else:
        from .zoo import library
        from .zoo.package import looks_like_package

        path = Path(ref)
        if looks_like_package(path) or (not path.exists() and library.find(str(ref)) is not None):
            from .zoo.adapter import load_package

            return load_package(ref, device=str(resolve_device(device)), weights=weights, trust_code=trust_code)
        if not path.exists():
            raise InputError(
                f"Model '{ref}' is neither a bundled preset, an existing file nor a model in the library",
                f"Use one of the presets ({', '.join(PRESETS)}), a checkpoint or package path, or a name from `napari-impc-dl zoo list`",
            )
    return CheckpointModel.load(path, device=str(resolve_device(device)))


# ----------------------------------------------------------------------------- results


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

    def counts_row(self) -> dict:
        """This image's row of ``counts.csv``."""
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
        return row


def _stage(progress: Progress | None, stage: str):
    if progress is None:
        return None
    return lambda done, total: progress(done, total, stage)


def _as_source(image, config: SegmentConfig):
    from .io.image import ImageSource, open_image

    if isinstance(image, ImageSource):
        return image, False
    if isinstance(image, (str, os.PathLike)):
        return open_image(image, channel_axis=config.channel_axis), True
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

    from .inference.engine import predict_plane
    from .inference.instances import labels_from_probabilities
    from .measure.blocks import BlockTables

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
        params = _instance_params(model, config)
        names = [f"c{c}" for c in (channels or range(source.n_channels))]
        tables, next_id = [], 1
        timings = {"inference_s": 0.0, "postprocess_s": 0.0, "measure_s": 0.0}
        planes = list(source.planes())
        stack_axes = "".join(a for a in source.axes if a in "TZ")
        for pi, plane in enumerate(planes):
            def read(t, plane=plane):
                x = source.read(plane, slice(t.y0, t.y1), slice(t.x0, t.x1))
                return x[channels] if channels is not None else x

            whole_image = getattr(model, "normalizer_for_image", None)  # optional hook: statistics of the whole image, streamed
            if whole_image is not None:
                normalize = whole_image(source, plane, channels)
            else:
                sample = source.sample(plane)
                normalize = model.fit_normalizer(sample[channels] if channels is not None else sample)
            p_plane = _plane(probs, plane)
            finalize = getattr(model, "finalize_plane", None)  # optional hook: outputs that need whole-image postprocessing
            target = p_plane if finalize is None else model.raw_buffer((H, W))
            stats = predict_plane(
                model, read, (H, W), target, normalize, tile=config.tile, halo=config.halo, batch=config.batch,
                progress=_stage(progress, f"inference {pi + 1}/{len(planes)}" if len(planes) > 1 else "inference"), cancel=cancel,
            )
            if finalize is not None:
                finalize(target, p_plane)
                del target
            timings["inference_s"] += stats.seconds
            timings["tiles"] = timings.get("tiles", 0) + stats.n_tiles
            timings["tile_shape"], timings["device"], timings["overhead"] = list(stats.tile_shape), stats.device, round(stats.overhead, 4)
            timings["batch"] = stats.batch
            if stats.fallbacks:
                timings.setdefault("fallbacks", []).extend(stats.fallbacks)

            l_plane = _plane(labels, plane)
            with BlockTables(source, plane, channels, names, stack_axes) as measure:  # measures block i beside block i + 1
                next_id, busy = labels_from_probabilities(
                    p_plane, l_plane, params, start_id=next_id, on_block=measure, on_start=measure.start,
                    progress=_stage(progress, "postprocessing"), cancel=cancel,
                )
                if labels_ready is not None and pi == len(planes) - 1:
                    labels_ready(labels, next_id - 1)
                tables.extend(measure.collect())
            timings["postprocess_s"] += busy
            timings["measure_s"] += measure.seconds
        objects = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["label"])
        info = {"name": model.info.name, "hash": model.info.content_hash, "source": model.info.source}
        run_params = {
            "tile": config.tile or model.info.tiling.tile,
            "halo": model.info.tiling.halo if config.halo is None else config.halo,
            "batch": timings.get("batch", config.batch),
            "foreground_threshold": params.foreground_threshold,
            "seed_threshold": params.seed_threshold,
            "min_size": params.min_size,
            "channel": config.channel,
        }
        return SegmentationResult(
            name=source.name, labels=labels, probabilities=probs, objects=objects, n_objects=next_id - 1,
            model=info, params=run_params, timings=timings, stack_axes=stack_axes,
        )
    finally:
        if owned:
            source.close()


def _is_runnable(model) -> bool:
    """An already-loaded model (anything with the Runnable protocol's ``info`` and ``forward``)."""
    return hasattr(model, "info") and hasattr(model, "forward")


def _instance_params(model, config: SegmentConfig):
    from .inference.instances import InstanceParams

    d = getattr(getattr(model, "card", None), "instances", None)
    pick = lambda v, name, default: v if v is not None else (getattr(d, name) if d is not None else default)  # noqa: E731
    return InstanceParams(
        foreground_threshold=pick(config.foreground_threshold, "foreground_threshold", 0.5),
        seed_threshold=pick(config.seed_threshold, "seed_threshold", 0.5),
        min_size=pick(config.min_size, "min_size", 12),
        block=config.block,
        halo=config.block_halo,
    )


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

    from .inference.instances import InstanceParams, labels_from_probabilities
    from .measure.blocks import BlockTables

    source, owned = _as_source(image, config)
    try:
        params = InstanceParams(
            foreground_threshold=config.foreground_threshold or result.params["foreground_threshold"],
            seed_threshold=config.seed_threshold or result.params["seed_threshold"],
            min_size=result.params["min_size"] if config.min_size is None else config.min_size,
            block=config.block,
            halo=config.block_halo,
        )
        channels = [config.channel] if config.channel is not None else None
        names = [f"c{c}" for c in (channels or range(source.n_channels))]
        labels = labels_store if labels_store is not None else np.zeros(result.labels.shape, np.int32)
        tables, next_id = [], 1
        for plane in source.planes():
            p_plane = _plane(result.probabilities, plane)
            l_plane = _plane(labels, plane)
            with BlockTables(source, plane, channels, names, result.stack_axes) as measure:
                next_id, _ = labels_from_probabilities(p_plane, l_plane, params, start_id=next_id, on_block=measure, on_start=measure.start, progress=_stage(progress, "postprocessing"), cancel=cancel)
                tables.extend(measure.collect())
        objects = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["label"])
        new_params = dict(result.params, foreground_threshold=params.foreground_threshold, seed_threshold=params.seed_threshold, min_size=params.min_size)
        return SegmentationResult(result.name, labels, result.probabilities, objects, next_id - 1, result.model, new_params, {}, result.stack_axes)
    finally:
        if owned:
            source.close()


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
        return sum(int(c["n_objects"]) for c in self.counts)


@reuse_large_buffers()
def segment(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    config: SegmentConfig | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    **overrides,
) -> SegmentReport:
    """Segment image files into ``out_dir``: ``<stem>_labels.tif`` (``.zarr`` when large), ``objects.csv``, ``counts.csv``.

    All inputs are opened and checked before anything is written; outputs are staged and moved
    into place only when every image succeeded. ``overrides`` are :class:`SegmentConfig` fields.
    """
    import pandas as pd

    from .io.image import open_image
    from .io.export import with_provenance
    from .io.outputs import Staging, create_zarr, ensure_writable_dir, label_dtype, write_csv_atomic, write_tif_atomic

    config = config or validated(SegmentConfig, **overrides)
    if not inputs:
        raise InputError("No input images were given", "Pass one or more image files (tif, ome-tif, zarr, png, jpg, npy)")
    out = Path(out_dir)
    runnable = model if _is_runnable(model) else load_model(model, device=config.device)
    sources = []
    try:
        stems: dict[str, Path] = {}
        for p in inputs:
            src = open_image(p, channel_axis=config.channel_axis)
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
                tables.append(with_provenance(res.objects, src.name, model_info))
                results_rows.append(res.counts_row())
                timings.append(res.timings)
                for t in tmp_dirs:
                    shutil.rmtree(t, ignore_errors=True)
                tmp_dirs.clear()
            write_csv_atomic(staging.path("objects.csv"), pd.concat(tables, ignore_index=True))
            counts = pd.DataFrame(results_rows)
            write_csv_atomic(staging.path("counts.csv"), counts)
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


# ----------------------------------------------------------------------------- data and evaluation


def synth(kind: str, n: int, out_dir: str | os.PathLike, *, size: int = 256, seed: int = 0) -> list[Path]:
    """Write a synthetic dataset with ground truth (``images/`` and ``masks/``); returns the image paths."""
    from .synthetic import write_nuclei_dataset

    if kind != "nuclei":
        raise InputError(f"Unknown synthetic dataset '{kind}'", "Available: nuclei")
    if n < 1 or size < 32:
        raise InputError(f"Need --n >= 1 and --size >= 32 (got n={n}, size={size})", "Increase them")
    return write_nuclei_dataset(out_dir, n, size=size, seed=seed)


def evaluate(pred_dir: str | os.PathLike, truth_dir: str | os.PathLike, *, out_csv: str | os.PathLike | None = None, iou_threshold: float = 0.5) -> dict:
    """Match label files by name and score them (F1, precision, recall at ``iou_threshold``; matched IoU)."""
    from .measure.evaluate import evaluate_folders

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
    protect: Sequence[str | os.PathLike] = (),
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
):
    """Write ``objects.csv`` and ``counts.csv`` (the CLI's columns) and masks (``tif``, ``ome-zarr`` or ``none``).

    Files are ``<name>_labels.tif`` / ``<name>_labels.ome.zarr`` (OME-Zarr 0.5 with a multiscale
    pyramid). Nothing in ``protect`` (the inputs) is ever overwritten; outputs are staged and moved
    into place only when all succeeded. Returns an :class:`~napari_impc_dl.io.export.ExportReport`.
    """
    from .io.export import export_results

    return export_results(results, out_dir, masks=masks, tables=tables, protect=protect, progress=progress, cancel=cancel)


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
    """Export a bundled preset or a checkpoint as a BioImage Model Zoo package (spec 0.5 zip) at ``out``."""
    from .zoo.export import export_package

    return export_package(model, out, name=name, description=description, authors=list(authors or []), license=license, cite=list(cite or []), tags=list(tags or []))


def test_package(package: str | os.PathLike, *, weights: str | None = None, trust_code: bool = False, device: str = "cpu"):
    """Run a package's own test inputs through our adapter and compare with its test outputs (``zoo test``)."""
    from .zoo.conformance.test import run_test

    return run_test(package, weights=weights, trust_code=trust_code, device=device)


test_package.__test__ = False  # not a pytest test
