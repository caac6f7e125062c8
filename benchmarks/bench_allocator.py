"""Model forward speed and page faults per tile size, with glibc's default allocator settings and inside
``reuse_large_buffers`` (see ``src/napari_impc_dl/inference/allocator.py``).

    python benchmarks/bench_allocator.py [--sizes 512 1024 1408] [--repeats 3]

Each setting runs in a fresh process (glibc's thresholds cannot be reset once changed). Prints one
line per tile size and setting, and a JSON object as the last line:
``{"512": {"default": {"mpx_per_s": .., "faults_per_forward": ..}, "reuse": {...}}, ...}``.
Best of ``--repeats`` passes, after one warm-up forward. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def _child(sizes: list[int], repeats: int, reuse: bool) -> None:
    import resource
    import time
    from contextlib import nullcontext

    import torch

    from napari_impc_dl import api
    from napari_impc_dl.inference.allocator import reuse_large_buffers

    model = api.load_model("nuclei", device="cpu")
    out = {}
    with reuse_large_buffers() if reuse else nullcontext(), torch.inference_mode():
        for s in sizes:
            x = torch.randn(1, model.info.in_channels, s, s).contiguous(memory_format=torch.channels_last)
            model.forward(x)
            n = max(2, round(4 * (1024 / s) ** 2))
            best, faults = 0.0, None
            for _ in range(repeats):
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                for _ in range(n):
                    model.forward(x)
                dt = time.perf_counter() - t0
                f = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n
                best = max(best, s * s * n / dt / 1e6)
                faults = f if faults is None else min(faults, f)
            out[str(s)] = {"mpx_per_s": round(best, 3), "faults_per_forward": round(faults)}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 1408])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["default", "reuse"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.sizes, args.repeats, args.child == "reuse")
    result: dict = {}
    for setting in ("default", "reuse"):
        cmd = [sys.executable, __file__, "--child", setting, "--repeats", str(args.repeats), "--sizes", *map(str, args.sizes)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        for size, fig in json.loads(res.stdout.strip().splitlines()[-1]).items():
            result.setdefault(size, {})[setting] = fig
            print(f"{size:>5} px  {setting:<8} {fig['mpx_per_s']:.2f} MP/s  {fig['faults_per_forward']:>7} page faults per forward", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
