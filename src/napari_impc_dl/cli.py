"""``napari-impc-dl``: the command line. Each subcommand maps onto one function of :mod:`napari_impc_dl.api`.

    napari-impc-dl segment INPUT... --out DIR [--preset nuclei | --model PATH] [--tile N] [--halo N] [--batch N] [--device D]
    napari-impc-dl synth nuclei --n N --out DIR [--size S] [--seed K]
    napari-impc-dl evaluate --pred DIR --truth DIR [--csv FILE]
    napari-impc-dl demo [--out DIR]
    napari-impc-dl zoo import PKG | zoo test PKG [--weights F] [--trust-code] | zoo export MODEL --out PKG.zip ... | zoo list

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
    g.add_argument("--model", default=None, metavar="PATH_OR_NAME", help="a checkpoint (.safetensors), a BioImage Model Zoo package (zip, folder, rdf.yaml) or a model name from `zoo list`")
    p.add_argument("--tile", type=int, default=None, help="tile side in pixels (default: the model's, fitted to the image)")
    p.add_argument("--halo", type=int, default=None, help="context pixels per tile side (default: the model's)")
    p.add_argument("--batch", type=int, default=None, help="tiles per forward pass (default: 1 on the CPU, 4 on a GPU)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--channel", type=int, default=None, help="use only this channel of a multichannel image")
    p.add_argument("--channel-axis", default="auto", help="array axis holding channels: auto, none, or an index")
    p.add_argument("--foreground-threshold", type=float, default=None, help="foreground probability threshold (default 0.5)")
    p.add_argument("--seed-threshold", type=float, default=None, help="distance threshold for object seeds (default 0.5)")
    p.add_argument("--min-size", type=int, default=None, help="drop objects smaller than this many pixels")
    p.add_argument("--weights", default=None, metavar="FORMAT", help="Model Zoo packages: weight format to run (torchscript, pytorch_state_dict, onnx; default: the first present)")
    p.add_argument("--trust-code", action="store_true", help="Model Zoo packages: allow the package's own Python code to build its network")


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
    model = a.model or a.preset
    if a.weights or a.trust_code:  # Model Zoo options: load the package here with them
        model = api.load_model(model, device=cfg.device, weights=a.weights, trust_code=a.trust_code)
    report = api.segment(a.inputs, a.out, model=model, config=cfg, progress=_Progress())
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
    _add_zoo(sub)
    p = sub.add_parser("demo", help="segment the bundled sample image with the bundled nuclei model")
    p.add_argument("--out", default="napari-impc-dl-demo", metavar="DIR")
    p.add_argument("--device", default="auto")
    return ap


def _add_zoo(sub) -> None:
    z = sub.add_parser("zoo", help="BioImage Model Zoo: import, test and export model packages (offline)")
    zs = z.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    p = zs.add_parser("import", help="validate a package (zip, folder or rdf.yaml) and add it to the local model library")
    p.add_argument("package", metavar="PATH")
    p.add_argument("--name", default=None, help="library name (default: from the package's name)")
    p.add_argument("--force", action="store_true", help="replace a library model of the same name")
    p = zs.add_parser("test", help="run a package's test inputs and compare with its test outputs; exit 0 only on pass")
    p.add_argument("package", metavar="PATH_OR_NAME")
    p.add_argument("--weights", default=None, metavar="FORMAT", help="torchscript, pytorch_state_dict or onnx (default: the first present)")
    p.add_argument("--trust-code", action="store_true", help="allow the package's own Python code to build its network")
    p.add_argument("--device", default="cpu")
    p = zs.add_parser("export", help="export a preset or checkpoint as a spec 0.5 package (zip)")
    p.add_argument("model", metavar="MODEL", help="a bundled preset name or a .safetensors checkpoint")
    p.add_argument("--out", required=True, metavar="PKG.zip")
    p.add_argument("--name", default=None, help="package name (default: the model's)")
    p.add_argument("--description", default=None)
    p.add_argument("--authors", nargs="+", default=None, metavar="NAME", help="one or more author names (or 'A; B')")
    p.add_argument("--license", default=None, help="SPDX licence id, e.g. MIT or CC-BY-4.0 (default: the model card's)")
    p.add_argument("--cite", nargs="+", default=None, metavar="'TEXT | DOI_OR_URL'", help="extra citations")
    p.add_argument("--tags", nargs="+", default=None)
    zs.add_parser("list", help="list the models in the local library")
    p = zs.add_parser("remove", help="remove a model from the local library")
    p.add_argument("name")


def _run_zoo(a) -> int:
    from . import api

    if a.zoo_command == "import":
        r = api.import_model(a.package, name=a.name, replace=a.force)
        print("\n".join(r.summary))
        print(f"{'already in' if r.already else 'added to'} the model library as '{r.name}' ({r.folder})")
        print(f"use it with: napari-impc-dl segment IMAGE... --model {r.name} --out DIR")
        return 0
    if a.zoo_command == "test":
        rep = api.test_package(a.package, weights=a.weights, trust_code=a.trust_code, device=a.device)
        print("\n".join(rep.lines()))
        return 0 if rep.passed else 1
    if a.zoo_command == "export":
        r = api.export_model(a.model, a.out, name=a.name, description=a.description, authors=a.authors, license=a.license, cite=a.cite, tags=a.tags)
        print(f"wrote {r.path} ({r.size_bytes / 2**20:.1f} MiB): '{r.name}', weights {', '.join(r.formats)}; "
              f"re-tested: max abs difference {max(r.test_max_abs_diff.values(), default=0):.2g}")
        return 0
    from .zoo import library

    if a.zoo_command == "list":
        es = library.entries()
        for e in es:
            print(f"{e.name:<28} {e.package_name}  [{', '.join(e.meta.get('formats', []))}]  from {e.meta.get('source', '?')}")
        print(f"{len(es)} model(s) in {library.models_dir()}")
        return 0
    library.remove(a.name)
    print(f"removed '{a.name}'")
    return 0


_COMMANDS = {"segment": _run_segment, "synth": _run_synth, "evaluate": _run_evaluate, "demo": _run_demo, "zoo": _run_zoo}


def main(argv: list[str] | None = None) -> int:
    from .inference.allocator import share_one_arena

    share_one_arena()  # before any thread starts: every image reuses the heap of the one before (see allocator.py)
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
