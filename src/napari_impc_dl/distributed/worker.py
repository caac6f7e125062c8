"""What a process that runs batch tasks keeps between tasks: models, torch threads, its device, open images.

A dask worker (or the client itself, in the in-process loop) loads each model once: the first
task that needs ``(model reference, device)`` loads it into a module-level cache, later tasks
reuse it. Tasks run one at a time per process (:data:`ONE_AT_A_TIME`): torch already uses the
process's threads, so a worker started with ``--nthreads 8`` runs one image on 8 torch threads
instead of 8 images on 8 threads each.

Threads: ``Job.torch_threads`` when the client knows (a LocalCluster of N workers on C cores:
``max(1, C // N)``), else the worker's own thread count (``dask worker --nthreads``, the
``cores / processes`` of a dask-jobqueue job). Devices: with ``auto`` / ``cuda`` and several GPUs
visible, worker *i* (its name, when it is a number, as LocalCluster names them) uses GPU ``i %
count``, as does a worker named ``...-i`` (``dask worker --name w --nworkers N``); other names pick a GPU by a hash
of the name. With one GPU visible (``CUDA_VISIBLE_DEVICES`` per worker, as dask-cuda sets it) all use it.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

ONE_AT_A_TIME = threading.Lock()
"""Held by a task while it computes: one image (or tile batch, or block) per process at a time."""

_models: dict[tuple, object] = {}
_sources: OrderedDict[tuple, object] = OrderedDict()
_threads_set = False
_threads: int | None = None
_keep_buffers = None
_lock = threading.Lock()


@dataclass(frozen=True)
class Job:
    """What every task of a batch needs to know (sent once with each task; small)."""

    out_dir: str
    model: str | None
    """Model reference (preset, checkpoint, package, library name); None when the caller's Runnable runs in-process."""
    classifier: str | None
    config: dict = field(default_factory=dict)
    """SegmentConfig fields."""
    weights: str | None = None
    trust_code: bool = False
    torch_threads: int | None = None
    blockwise: bool = False
    """Images above the in-memory limit come back as ``blocks`` for the client to spread over the cluster."""
    run_id: str = ""
    export: tuple = ()
    """Outline formats per image (``roi``, ``geojson``, ``rle``): see :mod:`napari_impc_dl.io.shape_exports`."""

    def segment_config(self):
        from ..config import SegmentConfig

        return SegmentConfig(**self.config)


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def worker_device(device: str) -> str:
    """The device this process runs on: ``device``, or one GPU per worker when several are visible."""
    d = (device or "auto").lower()
    if d not in ("auto", "cuda"):
        return d
    w = _worker()
    if w is None:
        return d
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count <= 1:
        return d
    name = str(w.name)
    digits = re.search(r"(\d+)$", name)  # LocalCluster: 0, 1, ...; dask worker --name w --nworkers N: w-0, w-1, ...
    index = int(digits.group(1)) if digits and not name.startswith(("tcp://", "tls://", "inproc://")) else zlib.crc32(name.encode())
    return f"cuda:{index % count}"


def set_threads(job: Job) -> None:
    """Torch's intra-op threads for the task about to run, in the thread that runs it.

    Called by every task, not once per process: with torch's OpenMP backend the thread count is
    per calling thread, and a dask worker runs tasks on executor threads that start at
    ``OMP_NUM_THREADS`` (which its nanny sets to 1). Measured: a worker with two executor
    threads that set it only once ran every other image on one thread (0.59 of the plain
    throughput).
    """
    global _threads_set, _threads
    if not _threads_set:
        n = job.torch_threads
        w = _worker()
        if n is None and w is not None:
            n = getattr(getattr(w, "state", None), "nthreads", None) or getattr(w, "nthreads", None)
        _threads = max(1, int(n)) if n else None
        if w is not None:  # a worker's life is one run: big buffers kept from one task to the next
            from ..inference.allocator import reuse_large_buffers, share_one_arena

            share_one_arena()  # takes effect where the worker started with MALLOC_ARENA_MAX=1 (see executors.WORKER_ENV)
            global _keep_buffers
            _keep_buffers = reuse_large_buffers()
            _keep_buffers.__enter__()
        _threads_set = True
    if _threads is not None:
        import torch

        if torch.get_num_threads() != _threads:
            torch.set_num_threads(_threads)


def runnables(job: Job):
    """``(model, classifier or None)`` for ``job`` on this process's device, loaded once per process."""
    from ..classify.loading import load_classifier
    from ..inference.loading import load_model

    set_threads(job)
    device = worker_device(job.config.get("device", "auto"))
    with _lock:
        key = ("model", job.model, job.weights, job.trust_code, device)
        if key not in _models:
            _models[key] = load_model(job.model, device=device, weights=job.weights, trust_code=job.trust_code)
        model = _models[key]
        clf = None
        if job.classifier is not None:
            ckey = ("classifier", job.classifier, device)
            if ckey not in _models:
                _models[ckey] = load_classifier(job.classifier, device=device)
            clf = _models[ckey]
    return model, clf


def load_task(job: Job) -> str:
    """A task that only loads ``job``'s models on the worker that runs it (to warm a cluster up); its device."""
    with ONE_AT_A_TIME:
        model, _ = runnables(job)
        return str(model.device)


def open_source(path: str, channel_axis, level=None, pixel_size_um=None):
    """An open ImageSource of ``path`` kept for the next tasks on the same image (its decoded-chunk cache too)."""
    from ..io.image import open_image

    key = (path, channel_axis, level, pixel_size_um)
    with _lock:
        src = _sources.pop(key, None)
        if src is None:
            src = open_image(path, channel_axis=channel_axis, level=level, pixel_size_um=pixel_size_um)
        _sources[key] = src
        while len(_sources) > 2:
            _, old = _sources.popitem(last=False)
            old.close()
    return src


def forget_sources() -> None:
    """Close the images kept by :func:`open_source` (e.g. once a huge image is done)."""
    with _lock:
        while _sources:
            _, src = _sources.popitem(last=False)
            src.close()
