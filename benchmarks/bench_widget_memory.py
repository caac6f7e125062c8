"""Segment a 16384 x 16384 zarr image from the napari Segment widget: peak memory and event-loop latency.

    xvfb-run -a python benchmarks/bench_widget_memory.py [--size 16384] [--workdir DIR] [--device auto] [--pan]

Writes (once, cached in --workdir) a synthetic uint16 nuclei image as a plain zarr array, opens it
in a real napari window through this plugin's reader (lazy; strided coarser levels for display),
opens the Segment widget, chooses the image and clicks Run with the bundled ``nuclei`` model and
the widget's defaults. While it runs, a 20 ms QTimer measures how long the GUI event loop is
blocked, and a sampler records the process's resident memory. With ``--pan`` the camera also
moves to a new place every 2 s (napari then reads full-resolution chunks there), as a user
looking around would. The last line printed is one JSON object:

    size, seconds, n_objects, peak_rss_gb (whole process: napari, Qt, torch, model),
    rss_before_run_gb, max_gap_ms / p99_gap_ms (event-loop latency), labels levels, device, timings,
    first_run_s / first_run_max_gap_ms (a first run on a 512 x 512 crop, where torch and the model load;
    skip it with --no-warm to measure the big run as the very first one)

Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "napari-impc-dl-bench"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--pan", action="store_true", help="move the camera every 2 s during the run")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--no-warm", dest="warm", action="store_false", help="measure the very first run (torch loads in it)")
    args = ap.parse_args()

    import numpy as np
    import psutil

    from napari_impc_dl.synthetic import write_large_nuclei_zarr

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    image = work / f"nuclei_{args.size}.zarr"
    if not image.exists():
        t0 = time.perf_counter()
        write_large_nuclei_zarr(image, args.size, seed=1)
        print(f"wrote {image} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    proc = psutil.Process()
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(proc.memory_info().rss)
            stop.wait(0.05)

    threading.Thread(target=sample, daemon=True, name="rss-sampler").start()

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 900)
    [layer] = viewer.open(str(image), plugin="napari-impc-dl")
    _, widget = viewer.window.add_plugin_dock_widget("napari-impc-dl", "Segment")
    widget.image_combo.setCurrentText(layer.name)
    first_run_s = first_gap = None
    widget.device_combo.setCurrentIndex(max(0, widget.device_combo.findData(args.device)))
    gaps: list[float] = []
    long_gaps: list[tuple[float, str]] = []  # pauses over 100 ms, with what the run was doing just before
    last = [time.perf_counter()]
    stage = [""]

    def tick() -> None:
        now = time.perf_counter()
        gap = now - last[0] - 0.020
        gaps.append(gap)
        if gap > 0.1:
            long_gaps.append((round(gap * 1000, 1), stage[0]))
        last[0] = now
        if stage[0] != "napari adds the Labels layer" or not widget.running:
            stage[0] = widget.progress.format() if widget.running else "napari draws the result"

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)

    real_show = widget._show

    def show(*a):  # label pauses caused by napari creating the result layer
        stage[0] = "napari adds the Labels layer"
        real_show(*a)

    widget._show = show

    def run_and_wait(limit: float) -> float:
        t = time.perf_counter()
        widget.run_button.click()
        while widget.running and time.perf_counter() - t < limit:
            app.processEvents()
            time.sleep(0.002)
        return time.perf_counter() - t

    # first run, on a small crop: torch and the model load here (a one-time pause, reported apart)
    if args.warm:
        viewer.add_image(np.asarray(layer.data[0][:512, :512]), name="crop")
        widget.image_combo.setCurrentText("crop")
        last[0] = time.perf_counter()
        timer.start()
        first_run_s = run_and_wait(600)
        timer.stop()
        first_gap = max(gaps, default=0.0)
        gaps.clear()
        long_gaps.clear()
        widget.image_combo.setCurrentText(layer.name)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.01)
    rss_before = proc.memory_info().rss
    rng = np.random.default_rng(0)

    def pan() -> None:  # look somewhere else, zoomed in: napari reads level-0 chunks there
        viewer.camera.center = tuple(float(v) for v in rng.uniform(0, args.size, 2))
        viewer.camera.zoom = float(rng.uniform(0.2, 2.0))

    panner = QTimer()
    panner.setInterval(2000)
    panner.timeout.connect(pan)

    t0 = time.perf_counter()
    last[0] = t0
    timer.start()
    if args.pan:
        panner.start()
    seconds = run_and_wait(args.timeout)
    timer.stop()
    panner.stop()
    for _ in range(100):  # let napari draw the result
        app.processEvents()
        time.sleep(0.01)
    stop.set()
    labels = viewer.layers[f"{layer.name} labels"] if f"{layer.name} labels" in viewer.layers else None
    rec = (labels.metadata.get("napari_impc_dl") if labels is not None else None) or {}
    g = np.array(gaps) if gaps else np.zeros(1)
    print(
        json.dumps(
            {
                "size": args.size,
                "seconds": round(seconds, 1),
                "n_objects": rec.get("n_objects"),
                "peak_rss_gb": round(max(max(samples), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30, 3),
                "rss_before_run_gb": round(rss_before / 2**30, 3),
                "max_gap_ms": round(float(g.max()) * 1000, 1),
                "p99_gap_ms": round(float(np.percentile(g, 99)) * 1000, 1),
                "ticks": len(gaps),
                "pauses_over_100ms": long_gaps[:20],
                "first_run_s": None if first_run_s is None else round(first_run_s, 1),
                "first_run_max_gap_ms": None if first_gap is None else round(first_gap * 1000, 1),
                "pan": args.pan,
                "labels_levels": [list(level.shape) for level in labels.data] if labels is not None and labels.multiscale else None,
                "device": rec.get("timings", {}).get("device"),
                "timings": rec.get("timings"),
                "status": widget.status.text(),
            }
        )
    )
    viewer.close()


if __name__ == "__main__":
    main()
