"""One image of a batch -> its files in the output folder, written so that a killed run never leaves half a file.

Everything is written into a private temporary folder under ``DIR/.batch/tmp/`` first and moved
into place (``os.replace``, same filesystem) only when complete:

* ``DIR/<name>_labels.tif`` (``.zarr`` above the in-memory limit);
* ``DIR/.batch/parts/<name>.objects.csv`` (the image's rows of ``objects.csv``) and
  ``DIR/.batch/parts/<name>.counts.json`` (its row of ``counts.csv``).

The same function runs in the client's process (the in-process loop) and on dask workers
(:func:`segment_task`), so both give the same files. A bad image is an ``Outcome`` with status
``failed`` and a one-line reason, never an exception; anything else raises (dask retries it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .manifest import DONE, FAILED, batch_dir
from .worker import ONE_AT_A_TIME, Job, runnables

BLOCKS = "blocks"
"""Outcome status: the image is above the in-memory limit; the client spreads it over the cluster (see blocks.py)."""


@dataclass
class Outcome:
    """What one image's task reports back to the client (small: no pixels)."""

    name: str
    index: int
    status: str
    seconds: float = 0.0
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    """Files written, relative to the output folder."""
    n_objects: int | None = None
    timings: dict = field(default_factory=dict)
    blocks: dict | None = None
    """For status ``blocks``: what the client needs to split the image (see :func:`describe_for_blocks`)."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, InputError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def tmp_root(out: Path) -> Path:
    root = batch_dir(out) / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return root


def parts_dir(out: Path) -> Path:
    d = batch_dir(out) / "parts"
    d.mkdir(parents=True, exist_ok=True)
    return d


def segment_task(item, job: Job) -> Outcome:
    """The dask task for one image: the worker's cached models, one task at a time per worker process."""
    with ONE_AT_A_TIME:
        model, classifier = runnables(job)
        return segment_one(item, job, model, classifier)


def segment_one(item, job: Job, model, classifier=None, *, cancel=None, progress=None) -> Outcome:
    """Segment (and classify) ``item`` with loaded models; write its outputs into ``job.out_dir``."""
    started = start_one(item, job, model, cancel=cancel, progress=progress)
    return started if isinstance(started, Outcome) else started.finish(classifier, cancel=cancel)


class Segmented:
    """An image segmented but not yet written out: :meth:`finish` writes its files (and may run elsewhere, e.g. on a
    writer thread while the next image is segmented)."""

    def __init__(self, item, out: Path, tmp: Path, lname: str, res, src, cfg, written: list, t0: float, export: tuple = ()) -> None:
        self.item, self.out, self.tmp, self.lname, self.res, self.src, self.cfg = item, out, tmp, lname, res, src, cfg
        self.written, self.t0, self.export = written, t0, tuple(export)

    def finish(self, classifier=None, *, cancel=None) -> Outcome:
        it = self.item
        try:
            for f in self.written:
                f.result()  # a write error is this image's error
            outputs = finish_image(self.out, it, self.tmp, self.lname, self.res, classifier, self.src, self.cfg, cancel=cancel, export=self.export)
            return Outcome(it.name, it.index, DONE, time.perf_counter() - self.t0, outputs=outputs, n_objects=int(self.res.n_objects), timings=self.res.timings)
        except InputError as exc:
            return Outcome(it.name, it.index, FAILED, time.perf_counter() - self.t0, one_line(exc))
        finally:
            self.discard()

    def discard(self) -> None:
        wait(self.written)  # never leave a write running into a folder that is about to be removed
        self.src.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_one(item, job: Job, model, *, cancel=None, progress=None):
    """Open, check and segment ``item``: a :class:`Segmented` to finish, or the Outcome (failed, or ``blocks``)."""
    from ..inference.pipeline import check_input, segment_image
    from ..io.image import open_image
    from ..io.outputs import create_zarr, label_dtype, write_tif_atomic

    t0 = time.perf_counter()
    cfg = job.segment_config()
    out = Path(job.out_dir)
    try:
        src = open_image(item.path, channel_axis=cfg.channel_axis, level=cfg.level, pixel_size_um=cfg.pixel_size_um)
    except InputError as exc:
        return Outcome(item.name, item.index, FAILED, time.perf_counter() - t0, one_line(exc))
    tmp, written, handed_over = None, [], False
    try:
        src.name = item.name
        check_input(src, model, cfg)
        large = math.prod(src.shape) / max(1, src.n_channels) / 1e6 > cfg.in_memory_limit_mpx
        from ..inference.semantic import semantic_spec

        # a class map is made strip by strip in flat memory: a huge one stays on one worker, whole
        if large and job.blockwise and getattr(model, "finalize_plane", None) is None and semantic_spec(model) is None:
            return Outcome(item.name, item.index, BLOCKS, time.perf_counter() - t0, blocks=describe_for_blocks(src, model, cfg))
        tmp = Path(tempfile.mkdtemp(prefix=f"{item.name[:40]}-", dir=tmp_root(out)))
        lname = f"{item.name}_labels.zarr" if large else f"{item.name}_labels.tif"
        lstore = pstore = None
        if large:
            H, W = src.spatial_shape
            stack = src.stack_shape
            lstore = create_zarr(tmp / lname, stack + (H, W), np.int32, (1,) * len(stack) + (1024, 1024))
            K = len(model.info.output_names)
            pstore = create_zarr(tmp / "probabilities.zarr", stack + (K, H, W), np.uint8, (1,) * len(stack) + (K, 1024, 1024))

        def labels_ready(labels, n_objects):  # the TIFF is written while the last objects are measured
            written.append(_writer().submit(write_tif_atomic, tmp / lname, labels, label_dtype(n_objects)))

        res = segment_image(src, model, cfg, labels_store=lstore, probabilities_store=pstore, labels_ready=None if large else labels_ready, progress=progress, cancel=cancel)
        if pstore is not None:
            shutil.rmtree(tmp / "probabilities.zarr", ignore_errors=True)
        handed_over = True
        return Segmented(item, out, tmp, lname, res, src, cfg, written, t0, export=job.export)
    except InputError as exc:
        return Outcome(item.name, item.index, FAILED, time.perf_counter() - t0, one_line(exc))
    finally:
        if not handed_over:
            wait(written)
            src.close()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


_pool = None


def _writer():
    """One writer thread per process (label TIFFs), kept from one image to the next."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="impc-batch-write")
    return _pool


def close_writer() -> None:
    """End the writer thread once a run in this process is over (its writes are awaited first); the next run starts one."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)


def finish_image(out: Path, item, tmp: Path, lname: str, res, classifier, src, cfg, *, cancel=None, export: tuple = ()) -> list[str]:
    """Classify (when asked), write the table parts, move labels and parts into place; the files, relative to ``out``."""
    from ..classify.files import classify_segmented
    from ..io.export import with_provenance
    from ..io.outputs import write_csv_atomic

    objects, row = res.objects, res.counts_row()
    if classifier is not None and res.semantic is None:  # a class map has no objects to classify
        objects, row = classify_segmented(classifier, src, res, cfg.channel, cancel=cancel)
    shape_files, rle = [], []
    if export:
        from ..io.shape_exports import class_colours, write_image_shapes, write_masks_csv

        colours = class_colours(classifier.classes) if classifier is not None else None
        shape_files, rle = write_image_shapes(export, item.name, res.labels, objects, lambda n: tmp / n, colours=colours, scale=res.params.get("downsample") or 1.0, cancel=cancel)
        if "rle" in export:
            write_masks_csv(tmp / "masks.csv", rle)
    table = with_provenance(objects, item.name, res.model)
    for k, v in reversed(list(item.extra.items())):
        table.insert(1, k, v)
    row = {"image": item.name, **item.extra, **{k: v for k, v in row.items() if k != "image"}}
    write_csv_atomic(tmp / "objects.csv", table)
    write_json_atomic(tmp / "counts.json", row)
    parts = parts_dir(out)
    move_into_place(tmp / lname, out / lname)
    other = out / (lname[: -len(".zarr")] + ".tif" if lname.endswith(".zarr") else lname[: -len(".tif")] + ".zarr")
    if other.exists():  # this image's labels of an earlier run in the other format
        shutil.rmtree(other) if other.is_dir() else other.unlink()
    os.replace(tmp / "objects.csv", parts / f"{item.name}.objects.csv")
    os.replace(tmp / "counts.json", parts / f"{item.name}.counts.json")
    for f in shape_files:
        os.replace(f, out / f.name)
    rel = os.path.relpath(parts, out)
    extra = [f.name for f in shape_files]
    if "rle" in export:
        os.replace(tmp / "masks.csv", parts / f"{item.name}.masks.csv")  # merged into masks.csv with the tables
        extra.append(f"{rel}/{item.name}.masks.csv")
    return [lname, f"{rel}/{item.name}.objects.csv", f"{rel}/{item.name}.counts.json", *extra]


def move_into_place(src: Path, dst: Path) -> None:
    """``os.replace`` that also replaces a folder (a ``.zarr`` store) of an earlier run."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


def write_json_atomic(path: Path, obj: dict) -> None:
    """``obj`` as JSON via a temporary file, flushed to disk before it replaces ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({k: _plain(v) for k, v in obj.items()}, f, default=_plain)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def describe_for_blocks(src, model, cfg) -> dict:
    """What the client needs to spread a huge image over the cluster: shapes, channels, one normaliser per plane
    (fitted here exactly as a single-process run fits it), the tile plan's rules and the batch of this device."""
    from ..config import GPU_BATCH
    from ..inference.pipeline import _instance_params, check_input, plane_normalizer, run_parameters

    channels = check_input(src, model, cfg)
    rules = model.info.tiling
    planes = list(src.planes())
    batch = cfg.batch if cfg.batch is not None else (1 if model.device.type == "cpu" else GPU_BATCH)
    from dataclasses import replace

    from ..inference.seeds import CORE_FRACTION, min_area, needs_diameter

    params = _instance_params(model, cfg)
    if params.diameter is None and needs_diameter(params.method):
        raise InputError(
            f"'{model.info.name}' has no distance head, so its instances need the object size, and a huge image split over workers cannot estimate it first",
            "Give --diameter PX (segment a crop of the image to see the estimate: the 'diameter' column of counts.csv)",
        )
    core = params.foreground_threshold + CORE_FRACTION * (1 - params.foreground_threshold) if params.method == "distance-transform" else None
    params = replace(params, core_threshold=core, min_size=max(params.min_size, min_area(params.diameter)))  # core: as for a model whose foreground reaches 1
    return {
        "path": str(src.path),
        "spatial_shape": tuple(src.spatial_shape),
        "stack_shape": tuple(src.stack_shape),
        "planes": planes,
        "channels": channels,
        "names": [f"c{c}" for c in (channels or range(src.n_channels))],
        "stack_axes": "".join(a for a in src.axes if a in "TZ"),
        "n_outputs": len(model.info.output_names),
        "normalizers": [plane_normalizer(model, src, p, channels) for p in planes],
        "tile": rules.tile if cfg.tile is None else cfg.tile,
        "halo": rules.halo if cfg.halo is None else cfg.halo,
        "rules": {"step": rules.step, "min_tile": rules.min_tile, "fixed": rules.fixed},
        "batch": batch,
        "instances": params,
        "model": {"name": model.info.name, "hash": model.info.content_hash, "source": model.info.source},
        "run_params": run_parameters(model, cfg, params, batch, diameter=params.diameter) | (
            {"level": src.slide["level"], "downsample": src.slide["downsample"], "pixel_size_um": src.slide["pixel_size_um"]} if src.slide else {}
        ),
    }
