"""``napari-impc-dl``: the command line. Each subcommand maps onto one function of :mod:`napari_impc_dl.api`.

    napari-impc-dl segment INPUT... --out DIR [--preset nuclei | --model PATH] [--tile N] [--halo N] [--batch N] [--device D]
    napari-impc-dl synth nuclei --n N --out DIR [--size S] [--seed K]
    napari-impc-dl evaluate --pred DIR --truth DIR [--csv FILE]
    napari-impc-dl demo [--out DIR]

Bad input ends in one line on stderr (``error: what. what to do``) and exit status 2;
Ctrl-C cancels cleanly (exit 130) and leaves no partial outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import __version__
from .errors import Cancelled, InputError


class _Progress:
    """A one-line progress display on stderr (only when it is a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, done: int, total: int, stage: str) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        sys.stderr.write(f"\r{stage}: {done}/{total}".ljust(70))
        if done >= total:
            sys.stderr.write("\r" + " " * 70 + "\r")
        sys.stderr.flush()


def _add_segment(sub) -> None:
    p = sub.add_parser("segment", help="segment images into instance labels + objects.csv + counts.csv")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files: tif, ome-tif, zarr / ome-zarr, png, jpg, npy")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", default=None, help="bundled model name (default: nuclei)")
    g.add_argument("--model", default=None, metavar="PATH", help="a napari-impc-dl checkpoint (.safetensors)")
    p.add_argument("--tile", type=int, default=None, help="tile side in pixels (default: the model's, fitted to the image)")
    p.add_argument("--halo", type=int, default=None, help="context pixels per tile side (default: the model's)")
    p.add_argument("--batch", type=int, default=4, help="tiles per forward pass (default 4)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--channel", type=int, default=None, help="use only this channel of a multichannel image")
    p.add_argument("--channel-axis", default="auto", help="array axis holding channels: auto, none, or an index")
    p.add_argument("--foreground-threshold", type=float, default=None, help="foreground probability threshold (default 0.5)")
    p.add_argument("--seed-threshold", type=float, default=None, help="distance threshold for object seeds (default 0.5)")
    p.add_argument("--min-size", type=int, default=None, help="drop objects smaller than this many pixels")


def _run_segment(a) -> int:
    from . import api
    from .config import SegmentConfig, validated

    axis = a.channel_axis
    axis = "auto" if axis == "auto" else None if axis.lower() == "none" else _int(axis, "--channel-axis")
    cfg = validated(
        SegmentConfig, tile=a.tile, halo=a.halo, batch=a.batch, device=a.device, channel=a.channel, channel_axis=axis,
        foreground_threshold=a.foreground_threshold, seed_threshold=a.seed_threshold, min_size=a.min_size,
    )
    t0 = time.perf_counter()
    report = api.segment(a.inputs, a.out, model=a.model or a.preset, config=cfg, progress=_Progress())
    for row in report.counts:
        print(f"{row['image']}: {row['n_objects']} objects (median area {row['median_area']:.0f} px)")
    print(f"labels:  {', '.join(str(p) for p in report.label_files)}")
    print(f"objects: {report.objects_csv}")
    print(f"counts:  {report.counts_csv}")
    print(f"{report.n_objects} objects in {len(report.counts)} image(s), {time.perf_counter() - t0:.1f} s")
    return 0


def _int(v: str, flag: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise InputError(f"{flag} must be an integer, 'auto' or 'none' (got {v!r})") from None


def _run_synth(a) -> int:
    from . import api

    paths = api.synth(a.kind, a.n, a.out, size=a.size, seed=a.seed)
    print(f"wrote {len(paths)} images to {paths[0].parent} and their masks to {paths[0].parent.parent / 'masks'}")
    return 0


def _run_evaluate(a) -> int:
    from . import api

    summary = api.evaluate(a.pred, a.truth, out_csv=a.csv, iou_threshold=a.iou)
    if a.csv:
        print(f"per-image rows: {a.csv}")
    print(json.dumps(summary))
    return 0


def _run_demo(a) -> int:
    from . import api

    r = api.demo(a.out, device=a.device, progress=_Progress())
    print(f"Segmented the bundled sample with the bundled 'nuclei' model: {r['n_objects']} nuclei found "
          f"(ground truth {r['n_true']}, F1@0.5 = {r['f1_at_0.5']:.3f}).")
    print(f"labels:  {r['labels']}")
    print(f"objects: {r['objects_csv']}")
    print(f"counts:  {r['counts_csv']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="napari-impc-dl", description="Deep-learning segmentation for bioimages (napari plugin CLI).")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_segment(sub)
    p = sub.add_parser("synth", help="write a synthetic dataset with ground truth")
    p.add_argument("kind", choices=["nuclei"])
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p = sub.add_parser("evaluate", help="score predicted label files against ground truth (matched by name)")
    p.add_argument("--pred", required=True, metavar="DIR")
    p.add_argument("--truth", required=True, metavar="DIR")
    p.add_argument("--csv", default=None, metavar="FILE", help="per-image rows (default: DIR_pred/evaluation.csv)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold for a match (default 0.5)")
    p = sub.add_parser("demo", help="segment the bundled sample image with the bundled nuclei model")
    p.add_argument("--out", default="napari-impc-dl-demo", metavar="DIR")
    p.add_argument("--device", default="auto")
    return ap


_COMMANDS = {"segment": _run_segment, "synth": _run_synth, "evaluate": _run_evaluate, "demo": _run_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "evaluate" and args.csv is None:
        from pathlib import Path

        args.csv = str(Path(args.pred) / "evaluation.csv")
    try:
        return _COMMANDS[args.command](args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cancelled: no outputs were written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
