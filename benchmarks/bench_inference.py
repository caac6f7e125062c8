"""End-to-end tiled segmentation against the bare model forward; peak memory at 4k and 16k.

    python benchmarks/bench_inference.py [--device cpu|cuda|auto] [--size 4096] [--big 16384] [--no-big] [--arch resnet34]

Generates (once, cached in --workdir) synthetic uint16 nuclei images as zarr, then, each in a
fresh process so peak RSS is that run's alone, runs ``napari_impc_dl.api.segment`` with the
starter model and the engine's default tile and halo: open, read, tile, batch, forward, stitch,
postprocess, write labels, measure, write CSVs. The model is loaded before the clock starts. The
4k image is segmented ``1 + --repeats`` times in its process: the first run warms up (it also
pays imports, kernel set-up for the tile shape and heap growth: ``end_to_end_first_s``). Before
each timed run the bare forward is timed once in the same process, so each pair sees the machine
in the same state (on a shared 2-core machine the forward's speed drifts by 10-30 % over
minutes); medians are reported. The 16k run is a single run, for its peak memory. The bare
forward runs the very model the engine runs (same device, batch, memory format, precision,
BatchNorm folding and allocator settings: see ``inference/allocator.py``) over the same number of
pixels in 512 x 512 tiles, with no IO, no halo and no postprocessing. Each child process starts
as the command line does (``share_one_arena``: all threads allocate from one malloc arena, and the
heap is kept from one run to the next; ``one_arena`` in the output says whether it took effect).
The last line printed is one JSON object:

    end_to_end_s, mpx_per_s, postprocess_s, bare_forward_s, efficiency, efficiency_paired,
    postprocess_share, peak_rss_mb_4k, peak_rss_mb_16k, ... (tile shape, tiles, objects, device, timings)

On CUDA each forward is bracketed by CUDA events: ``gpu_busy_share`` is the GPU time between
them over the wall time of the run (the share of the run the GPU was computing), and
``gpu_util_sampled`` the mean of NVML's utilisation sampled every 50 ms when ``pynvml`` is
installed (else null). ``mpx_per_s_16k`` is the 16k image's end-to-end rate from its zarr.
``--arch resnet34`` (any registry encoder) times a randomly initialised U-Net of that encoder
with the starter's tiling and postprocessing instead of a trained model: speed, not accuracy.
With postprocessing overlapped with inference (the default on a GPU), ``postprocess_s`` is the
part of it after inference ended (what inference did not hide) and ``postprocess_overlapped_s``
its whole time.

``efficiency = bare_forward_s / (end_to_end_s - postprocess_s)``;
``efficiency_paired`` is the median over the timed runs of the same ratio with each run's own
bare forward; ``postprocess_share = postprocess_s / end_to_end_s``. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(args) -> None:
    from napari_impc_dl.inference.allocator import share_one_arena

    one_arena = share_one_arena()  # first, as the command line does: threads share glibc's main arena
    from napari_impc_dl import api

    model = _model(args)  # imports and model construction are not the job
    busy = _GpuBusy(model)
    h, w = _image_shape(args.image)
    runs, bare = [], []
    for i in range(args.runs):  # the first run warms up (kernels for the tile shape, heap); the median of the rest is reported
        if i and args.bare:  # the bare forward runs between the timed runs, so both see the machine in the same state
            bare.append(_bare(model, args, h * w))
        out = Path(tempfile.mkdtemp(prefix="bench-out-", dir=args.workdir))
        busy.reset()
        t0 = time.perf_counter()
        report = api.segment([args.image], out, model=model, device=args.device, batch=args.batch, tile=args.tile, halo=args.halo)
        e2e = time.perf_counter() - t0
        gpu_s, util = busy.result()
        shutil.rmtree(out, ignore_errors=True)
        t = report.timings[0]
        runs.append({
            "end_to_end_s": e2e,
            "postprocess_s": t["postprocess_s"],
            "inference_s": t["inference_s"],
            "measure_s": t["measure_s"],
            "postprocess_overlapped_s": t.get("postprocess_overlapped_s"),
            "gpu_busy_share": None if gpu_s is None else round(gpu_s / e2e, 3),
            "gpu_util_sampled": util,
        })
    timed = runs[1:] or runs
    # efficiency of each timed run against the bare forward measured just before it
    pairs = [b / (r["end_to_end_s"] - r["postprocess_s"]) for r, b in zip(timed, bare)]
    timed_sorted = sorted(timed, key=lambda r: r["end_to_end_s"])
    print(json.dumps({
        **timed_sorted[len(timed_sorted) // 2],
        "end_to_end_first_s": runs[0]["end_to_end_s"],
        "end_to_end_all_s": [round(r["end_to_end_s"], 3) for r in runs],
        "postprocess_all_s": [round(r["postprocess_s"], 3) for r in runs],
        "bare_forward_all_s": [round(b, 3) for b in bare],
        "efficiency_pairs": [round(e, 3) for e in pairs],
        "tiles": t["tiles"],
        "tile_shape": t["tile_shape"],
        "batch": t["batch"],
        "overhead": t["overhead"],
        "device": t["device"],
        "n_objects": report.n_objects,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "one_arena": one_arena,
    }))


def _model(args):
    """The trained model ``--model``, or with ``--arch`` a random U-Net of that encoder with its card's tiling."""
    from napari_impc_dl import api

    model = api.load_model(args.model, device=args.device)
    if not args.arch:
        return model

    import torch

    from napari_impc_dl.inference.runnable import CheckpointModel
    from napari_impc_dl.models import registry

    spec = registry.architecture(args.arch, in_channels=model.info.in_channels, out_channels=len(model.info.output_names))
    card = model.card.model_copy(update={"name": f"random-{args.arch}", "architecture": spec})
    torch.manual_seed(0)
    return CheckpointModel(registry.build(spec).eval(), card, source="random").to(str(model.device))


class _GpuBusy:
    """GPU time inside the model's forwards (CUDA events around each) and NVML utilisation sampling; no-ops off CUDA."""

    def __init__(self, model) -> None:
        self.on = model.device.type == "cuda"
        self.spans: list = []
        self.depth = 0
        self.samples: list[float] = []
        self._stop = None
        if not self.on:
            return
        import torch

        for name in ("forward", "forward_region"):
            inner = getattr(model, name, None)
            if inner is None:
                continue

            def timed(*a, _inner=inner, **k):
                if self.depth:  # forward_region calling forward: counted once
                    return _inner(*a, **k)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                self.depth += 1
                try:
                    start.record()
                    y = _inner(*a, **k)
                    end.record()
                finally:
                    self.depth -= 1
                self.spans.append((start, end))  # read after the run: no sync here
                return y

            setattr(model, name, timed)

    def reset(self) -> None:
        self.spans, self.samples = [], []
        if not self.on:
            return
        try:
            import threading

            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._stop = threading.Event()

            def sample():
                while not self._stop.wait(0.05):
                    self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

            threading.Thread(target=sample, daemon=True).start()
        except Exception:  # noqa: BLE001 - no NVML: events only
            self._stop = None

    def result(self) -> tuple[float | None, float | None]:
        if self._stop is not None:
            self._stop.set()
        if not self.on:
            return None, None
        import torch

        torch.cuda.synchronize()
        gpu_s = sum(a.elapsed_time(b) for a, b in self.spans) / 1000.0
        util = round(sum(self.samples) / len(self.samples), 1) if self.samples else None
        return gpu_s, util


def _image_shape(path) -> tuple[int, int]:
    from napari_impc_dl.io.image import open_image

    src = open_image(path)
    try:
        return src.spatial_shape
    finally:
        src.close()


def _bare(model, args, n_pixels: int) -> float:
    """Seconds of the bare forward over ``n_pixels`` in 512 x 512 tiles (the engine's batch, memory format, precision, allocator)."""
    import torch

    from napari_impc_dl.config import GPU_BATCH
    from napari_impc_dl.inference.allocator import reuse_large_buffers
    from napari_impc_dl.inference.engine import _autocast

    dev = model.device
    batch = args.batch or (1 if dev.type == "cpu" else GPU_BATCH)
    n_tiles = max(1, round(n_pixels / (512 * 512)))
    x = torch.randn(batch, model.info.in_channels, 512, 512, device=dev).contiguous(memory_format=torch.channels_last)
    with reuse_large_buffers(), torch.inference_mode(), _autocast(dev):
        for _ in range(2):
            model.forward(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(0, n_tiles, batch):
            model.forward(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def _run_child(args, image: Path, runs: int, bare: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", "--image", str(image), "--workdir", str(args.workdir), "--device", args.device, "--model", args.model, f"--runs={runs}"]
    cmd += [f"--arch={args.arch}"] if args.arch else []
    cmd += ["--bare"] if bare else []
    cmd += [f"--batch={args.batch}"] if args.batch else []
    cmd += [f"--tile={args.tile}"] if args.tile else []
    cmd += [f"--halo={args.halo}"] if args.halo is not None else []
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"benchmark run on {image} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--arch", default=None, help="time a random U-Net with this registry encoder (e.g. resnet34) and --model's tiling, instead of --model")
    ap.add_argument("--batch", type=int, default=None, help="tiles per forward pass (default: the engine's, 1 on the CPU)")
    ap.add_argument("--tile", type=int, default=None, help="override the model's default tile (default: the model's)")
    ap.add_argument("--halo", type=int, default=None, help="override the model's default halo (default: the model's)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the 4k job and of the bare forward; medians are reported")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--big", type=int, default=16384)
    ap.add_argument("--no-big", action="store_true", help="skip the 16k run (peak_rss_mb_16k = null)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "napari-impc-dl-bench")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--image", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        return _child(args)

    from napari_impc_dl.synthetic import write_large_nuclei_zarr

    images = {}
    for size in [args.size] + ([] if args.no_big else [args.big]):
        path = args.workdir / f"nuclei_{size}.zarr"
        if not path.exists():
            t0 = time.perf_counter()
            write_large_nuclei_zarr(path, size, seed=11)
            print(f"generated {path} in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        images[size] = path
    small = _run_child(args, images[args.size], runs=1 + args.repeats, bare=True)  # timed warm, bare forwards in between

    print(f"{args.size}: {json.dumps(small)}", file=sys.stderr, flush=True)
    bare_all = small["bare_forward_all_s"]
    bare = sorted(bare_all)[len(bare_all) // 2]
    pairs = sorted(small["efficiency_pairs"])
    big = None if args.no_big else _run_child(args, images[args.big], runs=1)  # for its peak memory
    if big:
        print(f"{args.big}: {json.dumps(big)}", file=sys.stderr, flush=True)
    e2e, post = small["end_to_end_s"], small["postprocess_s"]
    print(json.dumps({
        "end_to_end_s": round(e2e, 3),
        "end_to_end_first_s": round(small["end_to_end_first_s"], 3),
        "end_to_end_all_s": small["end_to_end_all_s"],
        "mpx_per_s": round(args.size * args.size / 1e6 / e2e, 3),
        "postprocess_s": round(post, 3),
        "bare_forward_s": round(bare, 3),
        "bare_forward_all_s": bare_all,
        "efficiency": round(bare / (e2e - post), 3),
        "efficiency_paired": pairs[len(pairs) // 2],
        "efficiency_pairs": small["efficiency_pairs"],
        "postprocess_share": round(post / e2e, 3),
        "peak_rss_mb_4k": round(small["peak_rss_mb"], 1),
        "peak_rss_mb_16k": round(big["peak_rss_mb"], 1) if big else None,
        "end_to_end_s_16k": round(big["end_to_end_s"], 1) if big else None,
        "mpx_per_s_16k": round(args.big * args.big / 1e6 / big["end_to_end_s"], 2) if big else None,
        "gpu_busy_share": small.get("gpu_busy_share"),
        "gpu_busy_share_16k": big.get("gpu_busy_share") if big else None,
        "gpu_util_sampled": small.get("gpu_util_sampled"),
        "postprocess_overlapped_s": small.get("postprocess_overlapped_s"),
        "model": f"random-{args.arch}" if args.arch else args.model,
        "inference_s": round(small["inference_s"], 3),
        "measure_s": round(small["measure_s"], 3),
        "tile_shape": small["tile_shape"],
        "tiles": small["tiles"],
        "halo_overhead": small["overhead"],
        "halo": args.halo,
        "batch": small["batch"],
        "n_objects": small["n_objects"],
        "device": small["device"],
        "one_arena": small["one_arena"],
        "size": args.size,
        "big": None if args.no_big else args.big,
        "threads": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
