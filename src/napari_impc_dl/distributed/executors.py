"""Where a batch's images run: in this process, one after the other, or as tasks on a dask cluster.

Both are generators of :class:`~napari_impc_dl.distributed.image_task.Outcome` in completion
order; the run loop (:mod:`.run`) logs each one as it arrives. Closing the generator (Ctrl-C,
cancel, an error) cancels what has not run yet; on a cluster, work already running finishes on
its own but is never logged, so the next run does it again.

Dask: ``open_client`` starts a ``LocalCluster`` of worker processes (one thread each, torch on
``cores // N`` threads), connects to a running scheduler, or uses the caller's ``Client``.
Images are tasks (``client.submit(..., pure=False, retries=...)``, results gathered with
``as_completed``); a huge image becomes tile and block tasks (:mod:`.blocks`). A worker that
dies takes its tasks with it and the scheduler runs them elsewhere; outputs are written
atomically under the same names, so the results are the same.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import Cancelled, InputError
from .image_task import BLOCKS, Outcome, one_line, segment_task
from .manifest import ERROR, FAILED

log = logging.getLogger(__name__)


def in_process(todo, job, model, classifier, *, cancel=None):
    """Each image in turn in this process, with the models already loaded.

    Without a classifier, an image's files are written on a writer thread while the next image is
    segmented (its Outcome comes once they are in place); with one, in turn (both would want the cores).
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..inference.allocator import reuse_large_buffers
    from .image_task import Segmented, close_writer, start_one

    def guarded(it, fn):
        try:
            return fn()
        except Cancelled:
            raise
        except Exception as exc:  # a bug or a resource problem with this image: recorded, the run goes on
            log.exception("batch: %s failed", it.path)
            return Outcome(it.name, it.index, ERROR, error=one_line(exc))

    pending = None  # (item, Segmented, Future of its Outcome): written while the next image is segmented
    with reuse_large_buffers(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="impc-batch-finish") as pool:
        try:
            for it in todo:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                started = guarded(it, lambda: start_one(it, job, model, cancel=cancel))
                if pending is not None:
                    done, pending = pending, None
                    yield guarded(done[0], done[2].result)
                if not isinstance(started, Segmented):
                    yield started
                elif classifier is None:
                    pending = (it, started, pool.submit(started.finish))
                else:
                    yield guarded(it, lambda: started.finish(classifier, cancel=cancel))
            if pending is not None:
                done, pending = pending, None
                yield guarded(done[0], done[2].result)
        finally:
            if pending is not None:  # interrupted: its files land or are dropped; it is not logged, so it is done again
                _, seg, fut = pending
                if fut.cancel():
                    seg.discard()
                else:
                    fut.exception()
            close_writer()  # no thread of ours outlives the run (the widgets and notebooks go on in this process)


@contextmanager
def open_client(*, workers: int | None = None, scheduler: str | None = None, client=None):
    """``(Client, torch threads per worker or None)`` for the run; what this opened is closed afterwards."""
    if client is not None:
        yield client, None
        return
    try:
        import distributed
    except ImportError:
        raise InputError("--workers, --cluster and --scheduler need dask.distributed, which is not installed", "pip install 'napari-impc-dl[distributed]'") from None
    if scheduler:
        try:
            c = distributed.Client(scheduler_file=scheduler, timeout="30s") if scheduler.endswith(".json") else distributed.Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"Cannot reach the dask scheduler at '{scheduler}' ({one_line(exc)})", "Start one with `dask scheduler` and workers with `dask worker ADDRESS` (see docs/batch.md), or check the address") from None
        try:
            if not c.scheduler_info().get("workers"):
                log.warning("batch: the scheduler at %s has no workers yet; tasks wait until one connects", scheduler)
            yield c, None
        finally:
            c.close()
        return
    n = int(workers or 1)
    threads = max(1, (os.cpu_count() or 1) // n)
    cluster = local_cluster(n)
    c = distributed.Client(cluster)
    try:
        yield c, threads
    finally:
        c.close()
        cluster.close()


WORKER_ENV = {"MALLOC_ARENA_MAX": "1"}
"""Set in the environment of the worker processes we start: every thread allocates from glibc's main arena, as in the
command line's own process (``inference/allocator.py``). Measured on 2 cores: one worker with torch on 2 threads made
0.6-0.7 of the plain in-process throughput without it."""


def local_cluster(n: int, threads_per_worker: int = 1):
    """A ``LocalCluster`` of ``n`` worker processes for a batch (no dashboard, quiet, :data:`WORKER_ENV`)."""
    import dask
    import distributed

    env = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENV.items()}
    saved = {k: os.environ.pop(k) for k in WORKER_ENV if k in os.environ}  # the environment would win over the config
    try:
        with dask.config.set(env):
            return distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True, dashboard_address=None, silence_logs=logging.ERROR)
    finally:
        os.environ.update(saved)


def on_cluster(client, todo, job, *, retries: int, cancel=None, classifier_loader=None, config=None, events=None):
    """Each image as a task on ``client``'s cluster; huge images (status ``blocks``) spread as tile and block tasks."""
    from distributed import as_completed

    from .blocks import ImageBlocks
    from .image_task import tmp_root

    items = {}
    live = {}
    for it in todo:
        f = client.submit(segment_task, it, job, key=f"impc-image-{job.run_id}-{it.index}", pure=False, retries=retries)
        items[f.key] = it
        live[f.key] = f
    ac = as_completed(list(live.values()))
    owner: dict[str, ImageBlocks] = {}
    dropped: set[str] = set()
    out = Path(job.out_dir)
    try:
        while not ac.is_empty():
            if cancel is not None:
                cancel.raise_if_cancelled()
            ready = ac.next_batch(block=False)
            if not ready:
                time.sleep(0.05)
                continue
            for f in ready:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                live.pop(f.key, None)
                if f.key in dropped:  # a block of a huge image given up on
                    continue
                if f.key in owner:
                    ib = owner.pop(f.key)
                    try:
                        ib.add(f.key, f.result())
                    except Exception as exc:
                        dropped |= _drop(client, ib, owner, live)
                        yield Outcome(ib.item.name, ib.item.index, ERROR, error=one_line(exc))
                        continue
                    if events is not None:
                        events(f"{ib.item.name}: block {ib.n_merged}/{ib.n_blocks}")
                    if ib.complete:
                        yield _guarded(ib.item, lambda: ib.finish(classifier_loader() if classifier_loader else None, config))
                    continue
                it = items.pop(f.key)
                try:
                    oc = f.result()
                except Exception as exc:
                    yield Outcome(it.name, it.index, ERROR, error=one_line(exc))
                    continue
                if oc.status != BLOCKS:
                    yield oc
                    continue
                ib = _guarded(it, lambda: ImageBlocks(client, it, job, oc.blocks, retries=retries, out=out, tmp_parent=tmp_root(out)))
                if isinstance(ib, Outcome):
                    yield ib
                    continue
                for bf in ib.block_futures:
                    owner[bf.key] = ib
                    live[bf.key] = bf
                    ac.add(bf)
                ib.block_futures = []
                if events is not None:
                    events(f"{it.name}: {ib.n_blocks} blocks over the cluster")
    finally:
        if live:
            client.cancel(list(live.values()), force=True)
        for ib in set(owner.values()):
            ib.cleanup()


def _guarded(item, fn):
    """``fn()``, or the failed Outcome of ``item`` when it raises (the run goes on)."""
    try:
        return fn()
    except InputError as exc:
        return Outcome(item.name, item.index, FAILED, error=one_line(exc))
    except Exception as exc:
        log.exception("batch: %s failed", item.path)
        return Outcome(item.name, item.index, ERROR, error=one_line(exc))


def _drop(client, ib, owner, live) -> set[str]:
    """Give up on a huge image whose block failed: cancel its other blocks, remove its temporary files."""
    keys = {k for k, v in owner.items() if v is ib}
    futures = [live.pop(k) for k in keys if k in live]
    for k in keys:
        owner.pop(k, None)
    if futures:
        client.cancel(futures, force=True)
    ib.cleanup()
    return keys
