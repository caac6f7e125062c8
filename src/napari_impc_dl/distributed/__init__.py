"""Batch runs over many images (resumable) and dask.distributed execution, for folders and one huge image.

    inputs      INPUT (folder, glob, CSV with a ``path`` column, files) -> BatchItems with unique names
    manifest    input fingerprints, model / parameter hashes, the append-only log ``.batch/done.jsonl``, manifest.csv
    tables      per-image parts -> one objects.csv / counts.csv (any ``<name>.<table>.csv`` part too), failures.csv
    image_task  one image -> its labels and table parts in the output folder (in this process or on a worker)
    worker      what a worker process keeps: loaded models, torch threads, its device, open images
    blocks      one huge image over a cluster: tile tasks, block tasks, the seam-free merge on the client
    executors   in-process loop or a dask ``Client`` (LocalCluster, a running scheduler, or the caller's)
    progress    counts, rate and ETA on a terminal (tqdm), one log line a minute otherwise
    run         :func:`run_batch`, what ``api.batch`` and ``napari-impc-dl batch`` call

Nothing here imports torch or dask at import time; ``distributed`` (the ``distributed`` extra) is
imported only when a dask option is given.
"""
