"""Batch throughput (in-process and on a dask LocalCluster of 1 and 2 workers) against plain ``segment``; one huge zarr.

    python benchmarks/bench_batch.py [--n 40] [--size 512] [--big 16384] [--no-big] [--device cpu] [--workdir DIR]

The same ``--n`` synthetic nuclei images (``--size`` px, cached in ``--workdir``) are segmented
with the bundled ``nuclei`` model by

* ``plain``: ``api.segment`` over all of them in this process (torch on all cores);
* ``in_process``: ``api.batch`` without dask (the batch machinery: manifest, log, parts, merge);
* ``workers_1`` / ``workers_2``: ``api.batch`` on a ``LocalCluster`` of 1 / 2 worker processes
  (torch on ``cores // N`` threads each, so every run uses the same total threads).

Models are loaded and the cluster is started and warmed up (every worker loads the model, then
a first small batch) before the clock starts; ``cold_s`` says what start-up costs on top. Each
mode runs ``--rounds`` times, each run paired with a plain run just before it (the machine is
shared: its speed drifts by 10-30 % over minutes, and by 2x when others' jobs start):
``efficiency`` = the median over the pairs of ``(images/s of the run) / (images/s of its plain
run)`` (``efficiency_range``: the lowest and highest pair), ``overhead_per_image_s`` = the
median of ``(run seconds - plain seconds) / n``. Then one ``--big`` square zarr
image (a synthetic 2048 px field tiled, so it is made in seconds) is segmented by ``api.batch``
on 2 workers: tiles and postprocessing blocks as tasks, merged on the client;
``merge_share = merge_s / run seconds`` (client time laying blocks into the labels store and
writing the table part). The last line printed is one JSON object. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _images(workdir: Path, n: int, size: int) -> Path:
    import tifffile

    from napari_impc_dl.synthetic import make_nuclei_image

    folder = workdir / f"images-{n}x{size}"
    if len(list(folder.glob("*.tif"))) != n:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i in range(n):
            img, _ = make_nuclei_image((size, size), seed=1000 + i)
            tifffile.imwrite(folder / f"field{i:03d}.tif", img)
    return folder


def _big(workdir: Path, side: int) -> Path:
    import numpy as np
    import zarr

    from napari_impc_dl.synthetic import make_nuclei_image

    folder = workdir / f"big-{side}"
    path = folder / f"slide{side}.zarr"
    if not (path / "zarr.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        tile, _ = make_nuclei_image((2048, 2048), seed=77, density=0.4)
        z = zarr.create_array(str(path), shape=(side, side), chunks=(1024, 1024), dtype=tile.dtype)
        reps = -(-side // 2048)
        for r in range(reps):  # a row of fields at a time: memory stays small
            band = np.tile(tile, (1, reps))[:, :side]
            z[r * 2048 : min(side, (r + 1) * 2048), :] = band[: min(2048, side - r * 2048)]
    return folder


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--big", type=int, default=16384)
    ap.add_argument("--no-big", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3, help="paired (plain, run) rounds per mode; medians are reported")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "napari-impc-dl-bench-batch"))
    args = ap.parse_args()

    from napari_impc_dl.inference.allocator import share_one_arena

    share_one_arena()  # as the command line does
    import distributed

    from napari_impc_dl import api
    from napari_impc_dl.config import SegmentConfig
    from napari_impc_dl.distributed.executors import local_cluster
    from napari_impc_dl.distributed.worker import Job, load_task

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    folder = _images(workdir, args.n, args.size)
    paths = sorted(folder.glob("*.tif"))
    cores = os.cpu_count() or 1
    model = api.load_model("nuclei", device=args.device)
    api.segment(paths[:2], workdir / "warm", model=model)  # kernels for the tile shape, heap

    def out_dir(tag: str) -> Path:
        d = workdir / f"out-{tag}"
        shutil.rmtree(d, ignore_errors=True)
        return d

    def plain() -> float:
        return _timed(lambda: api.segment(paths, out_dir("plain"), model=model))

    results: dict = {"n_images": args.n, "size": args.size, "cores": cores, "device": args.device, "rounds": args.rounds}
    runs: dict = {}

    def rounds(name: str, run, extra: dict | None = None) -> None:
        """``--rounds`` pairs (plain, run), alternating, so both see the machine in the same state."""
        pairs = [(plain(), _timed(run)) for _ in range(args.rounds)]
        runs[name] = {"plain_s": [p for p, _ in pairs], "run_s": [t for _, t in pairs], **(extra or {})}
        print(f"{name}: " + ", ".join(f"{t:.1f} s (plain {p:.1f} s)" for p, t in pairs), file=sys.stderr, flush=True)

    rounds("in_process", lambda: api.batch(folder, out_dir("inproc"), model=model))
    for n in (1, 2):
        t0 = time.perf_counter()
        # torch on cores // N threads per worker (what --workers N does), one image at a time per worker
        cluster = local_cluster(n, threads_per_worker=max(1, cores // n))  # the command line's cluster (worker environment too)
        client = distributed.Client(cluster)
        try:
            job = Job(out_dir=str(workdir), model="nuclei", classifier=None, config=SegmentConfig(device=args.device).model_dump())
            client.gather([client.submit(load_task, job, workers=[w], pure=False) for w in client.scheduler_info()["workers"]])
            warm = api.batch(paths[: 2 * n], out_dir(f"warm{n}"), model="nuclei", client=client, device=args.device)
            cold = time.perf_counter() - t0
            rounds(f"workers_{n}", lambda: api.batch(folder, out_dir(f"w{n}"), model="nuclei", client=client, device=args.device), {"cold_s": round(cold, 1), "warm_ok": warm.ok})
            if n == 2 and not args.no_big:
                big = _big(workdir, args.big)
                t0 = time.perf_counter()
                r = api.batch(big, out_dir("big"), model="nuclei", client=client, device=args.device)
                wall = time.perf_counter() - t0
                tm = next(iter(r.timings.values()))
                results["big"] = {
                    "side": args.big, "run_s": round(wall, 2), "merge_s": tm["merge_s"], "merge_share": round(tm["merge_s"] / wall, 4),
                    "mpx_per_s": round(args.big**2 / 1e6 / wall, 3), "tiles": tm["tiles"], "blocks": tm["blocks"],
                    "postprocess_s": round(tm["postprocess_s"], 2), "measure_s": round(tm["measure_s"], 2), "n_objects": r.n_objects, "ok": r.ok,
                }
                print(f"{args.big}^2 on 2 workers: {wall:.1f} s, merge {tm['merge_s']:.2f} s", file=sys.stderr, flush=True)
        finally:
            client.close()
            cluster.close()
    for name, r in runs.items():
        ratios = [p / t for p, t in zip(r["plain_s"], r["run_s"])]
        r["images_per_s"] = round(args.n / statistics.median(r["run_s"]), 3)
        r["plain_images_per_s"] = round(args.n / statistics.median(r["plain_s"]), 3)
        r["efficiency"] = round(statistics.median(ratios), 3)  # median of the paired ratios
        r["efficiency_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        r["overhead_per_image_s"] = round(statistics.median((t - p) / args.n for p, t in zip(r["plain_s"], r["run_s"])), 4)
        r["run_s"], r["plain_s"] = [round(v, 2) for v in r["run_s"]], [round(v, 2) for v in r["plain_s"]]
    results.update(runs)
    results["efficiency"] = runs["workers_2"]["efficiency"]
    results["merge_share"] = results.get("big", {}).get("merge_share")
    results["bench_s"] = round(time.perf_counter() - t_start, 1)
    for tag in ("plain", "inproc", "w1", "w2", "warm1", "warm2", "big", "warm"):
        shutil.rmtree(workdir / f"out-{tag}", ignore_errors=True)
    shutil.rmtree(workdir / "warm", ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
