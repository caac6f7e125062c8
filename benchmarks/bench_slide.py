"""Whole-slide memory: peak RSS of `segment` on an SVS-like pyramidal TIFF of 20480² against one of 4096².

Both slides are rendered block by block from the synthetic nuclei generator (uint16, 256² tiles, Aperio
description with MPP = 0.25, levels /4 and /16), then each is segmented at full resolution in a fresh process
(`segment SLIDE --out DIR`, ``--export`` formats optional); the peak resident memory of that process is read from the kernel.

    .venv/bin/python benchmarks/bench_slide.py [--big 20480] [--small 4096] [--preset nuclei|fibrosis]

``--preset fibrosis`` writes RGB H&E-like tissue slides instead and runs the semantic preset (the
class map made in strips: memory flat at any size).

Last line: one JSON object with both peaks, their ratio (the goal: at most 1.2), times and object counts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(os.environ.get("IMPC_BENCH_DIR", "/tmp/napari-impc-dl-bench"))


def write_tissue_slide(path: Path, size: int) -> Path:
    """An RGB SVS-like slide of ``size``² of synthetic H&E-like tissue (one 2048² fibrosis tile repeated), tile by tile."""
    import numpy as np
    import tifffile

    from napari_impc_dl.synthetic.fibrosis import make_fibrosis_image

    if path.exists():
        return path
    block = make_fibrosis_image((2048, 2048), seed=11, size=2.0)[0]
    desc = f"Aperio Image Library v12.0.15 \r\n{size}x{size} [0,0 {size}x{size}] (256x256) JPEG/RGB Q=70|AppMag = 20|MPP = 0.5"

    def tiles(step: int):
        n = size // step
        for y in range(0, n, 256):
            for x in range(0, n, 256):
                yy, xx = (np.arange(y, y + 256) * step) % 2048, (np.arange(x, x + 256) * step) % 2048
                yield block[np.ix_(yy, xx)]

    tmp = path.with_suffix(".tmp.svs")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        tw.write(tiles(1), shape=(size, size, 3), dtype=np.uint8, tile=(256, 256), description=desc, photometric="rgb")
        for f in (4, 16):
            s = size // f
            tw.write(tiles(f), shape=(s, s, 3), dtype=np.uint8, tile=(256, 256), subfiletype=1, photometric="rgb", description=desc.replace(f"{size}x{size} [", f"{s}x{s} ["))
    os.replace(tmp, path)
    return path


def write_slide(path: Path, size: int) -> Path:
    """An SVS-like slide of ``size``² from a synthetic zarr image, written tile by tile (never whole in memory)."""
    import numpy as np
    import tifffile
    import zarr

    from napari_impc_dl.synthetic.nuclei import write_large_nuclei_zarr

    if path.exists():
        return path
    z = zarr.open_array(write_large_nuclei_zarr(WORK / f"slide_{size}.zarr", size, seed=7, overwrite=True), mode="r")
    desc = f"Aperio Image Library v12.0.15 \r\n{size}x{size} [0,0 {size}x{size}] (256x256) JPEG/RGB Q=70|AppMag = 40|MPP = 0.25"

    def tiles(step: int):
        for y in range(0, size, 256 * step):
            rows = np.asarray(z[y : y + 256 * step : step, ::step])
            for x in range(0, rows.shape[1], 256):
                t = np.zeros((256, 256), rows.dtype)
                part = rows[:256, x : x + 256]
                t[: part.shape[0], : part.shape[1]] = part
                yield t

    tmp = path.with_suffix(".tmp.svs")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        tw.write(tiles(1), shape=(size, size), dtype=z.dtype, tile=(256, 256), description=desc, photometric="minisblack")
        tw.write(np.asarray(z[::64, ::64]), description="Aperio thumbnail", photometric="minisblack", subfiletype=1)
        for f in (4, 16):
            s = size // f
            tw.write(tiles(f), shape=(s, s), dtype=z.dtype, tile=(256, 256), subfiletype=1, photometric="minisblack",
                     description=desc.replace(f"{size}x{size} [", f"{s}x{s} ["))
    os.replace(tmp, path)
    return path


def run(slide: Path, out: Path, export: list[str], preset: str = "nuclei") -> dict:
    extra = (["--export", *export] if export else []) + ["--preset", preset]
    code = (
        "import resource, sys, time, json\n"
        "from napari_impc_dl.cli import main\n"
        "t = time.perf_counter()\n"
        f"rc = main(['segment', {str(slide)!r}, '--out', {str(out)!r}, '--device', 'cpu', *{extra!r}])\n"
        "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not line:
        raise SystemExit(res.stdout[-2000:] + res.stderr[-2000:])
    r = json.loads(line[-1])
    import pandas as pd

    counts = pd.read_csv(out / "counts.csv")
    r["n_objects"] = int(counts.n_objects[0]) if "n_objects" in counts else None
    if "fraction_fibrosis" in counts:
        r["fraction_fibrosis"] = float(counts.fraction_fibrosis[0])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", type=int, default=20480)
    ap.add_argument("--small", type=int, default=4096)
    ap.add_argument("--export", nargs="*", default=[], help="also export (roi, geojson, rle): off by default, the figure is the segmentation's")
    ap.add_argument("--preset", choices=["nuclei", "fibrosis"], default="nuclei", help="fibrosis: RGB tissue slides through the semantic preset (class map and fractions)")
    a = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write = write_tissue_slide if a.preset == "fibrosis" else write_slide
    tag = "tissue_" if a.preset == "fibrosis" else ""
    small, big = write(WORK / f"slide_{tag}{a.small}.svs", a.small), write(WORK / f"slide_{tag}{a.big}.svs", a.big)
    print(f"slides written in {time.perf_counter() - t0:.0f} s", flush=True)
    rs = run(small, WORK / f"seg_{tag}{a.small}", a.export, a.preset)
    print("small", rs, flush=True)
    rb = run(big, WORK / f"seg_{tag}{a.big}", a.export, a.preset)
    print("big", rb, flush=True)
    print(json.dumps({"small": a.small, "big": a.big, "peak_rss_mb_small": round(rs["peak_rss_mb"], 1), "peak_rss_mb_big": round(rb["peak_rss_mb"], 1),
                      "ratio": round(rb["peak_rss_mb"] / rs["peak_rss_mb"], 3), "seconds_small": round(rs["seconds"], 1), "seconds_big": round(rb["seconds"], 1),
                      "objects_small": rs["n_objects"], "objects_big": rb["n_objects"], "self_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
