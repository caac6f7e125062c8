"""``napari-impc-dl``: the command line. Each subcommand maps onto one function of :mod:`napari_impc_dl.api`.

    napari-impc-dl segment INPUT... --out DIR [--preset nuclei | --model PATH] [--tile N] [--halo N] [--batch N] [--device D]
    napari-impc-dl batch INPUT --out DIR [--preset P | --model M] [--classifier M] [--workers N | --cluster local:N | --scheduler ADDRESS] [--force]
    napari-impc-dl synth nuclei --n N --out DIR [--size S] [--seed K]
    napari-impc-dl evaluate --pred DIR --truth DIR [--csv FILE]
    napari-impc-dl train segmentation --images DIR --masks DIR --out DIR [--from M] [--mode fine-tune|head-only] ...
    napari-impc-dl train classification --data DIR_OR_CSV --out DIR [--level image|object] [--images DIR --labels DIR] ...
    napari-impc-dl classify INPUT... --model M --out DIR [--labels FILES_OR_DIR]
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
from pathlib import Path

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
    _segment_options(p)
    p.add_argument("--export", nargs="+", choices=["roi", "geojson", "rle"], default=None, metavar="FORMAT", help="also write outlines and masks for other tools: roi (<stem>_rois.zip, a Fiji ROI set), geojson (<stem>.geojson, QuPath detections with classes and measurements), rle (masks.csv, run-length encoded as the Data Science Bowl)")
    p.add_argument("--metadata", default=None, metavar="CSV", help="--preset skeletal: a CSV joined by file name (column file; specimen groups the views of one mouse; other columns, e.g. sex, genotype, go into the summary)")
    p.add_argument("--strain", default="C57BL/6N", help="--preset skeletal: the reference strain the counts are called against (default C57BL/6N)")
    p.add_argument("--skeletal-models", nargs="+", default=None, metavar="ROLE=PATH", help="--preset skeletal: fine-tuned models to use instead of the bundled ones (roles: regions, bones, view, sex, ribs, pelvis), e.g. regions=my-regions/")
    p.add_argument("--pixel-size-mm", dest="pixel_size_mm", type=float, default=None, metavar="MM", help="--preset skeletal: the detector's pixel size in mm (default: the DICOM's pixel spacing; measurements in mm need it)")


def _segment_options(p) -> None:
    """The model, tiling, device and postprocessing options of ``segment`` (``batch`` has them too)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", default=None, help="bundled workflow: nuclei (default), chromosomes (segment + classify + count per spread), cells (segment + mitosis phase per cell), fibrosis (class per pixel), skeletal (mouse X-rays: orientation, vertebrae and ribs counted, sex, the IMPC table)")
    g.add_argument("--model", default=None, metavar="PATH_OR_NAME", help="a checkpoint (.safetensors), a BioImage Model Zoo package (zip, folder, rdf.yaml) or a model name from `zoo list`")
    p.add_argument("--tile", type=int, default=None, help="tile side in pixels (default: the model's, fitted to the image)")
    p.add_argument("--halo", type=int, default=None, help="context pixels per tile side (default: the model's)")
    p.add_argument("--batch", type=int, default=None, help="tiles per forward pass (default: 1 on the CPU, 4 on a GPU)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--channel", type=int, default=None, help="use only this channel of a multichannel image")
    p.add_argument("--channel-axis", default="auto", help="array axis holding channels: auto, none, or an index")
    p.add_argument("--level", type=int, default=None, metavar="N", help="whole-slide scans and other pyramidal TIFFs: segment resolution level N (0: full resolution)")
    p.add_argument("--pixel-size", dest="pixel_size_um", type=float, default=None, metavar="UM", help="pyramidal TIFFs: segment the coarsest level whose pixels are at most UM microns (from the file's microns per pixel); ROI / GeoJSON exports stay in full-resolution coordinates")
    p.add_argument("--foreground-threshold", type=float, default=None, help="foreground probability threshold (default 0.5)")
    p.add_argument("--seed-threshold", type=float, default=None, help="distance threshold for object seeds; for boundary models, the boundary probability below which a pixel is an object's interior (default 0.5)")
    p.add_argument("--merge-threshold", type=float, default=None, help="distance-head models: join neighbours whose shared border has a mean distance above this (one object cut in two; default: the model's: 0.25 for the chromosomes and nuclei presets and for models trained from scratch here; 1: never)")
    p.add_argument("--merge-solidity", type=float, default=None, dest="merge_min_solidity", help="with a merge: join only if the joined object fills at least this share of its convex hull (default: the model's: 0.98 for nuclei and models trained from scratch here; chromosomes: any shape)")
    p.add_argument("--min-size", type=int, default=None, help="drop objects smaller than this many pixels")
    p.add_argument("--instances", default="auto", choices=["auto", "distance", "boundary", "threshold"], help="how probabilities become objects: distance (the model's distance map, or the distance transform of its foreground), boundary (interiors of its boundary map), threshold (connected foreground, no splitting); auto picks from the model's outputs")
    p.add_argument("--diameter", type=float, default=None, metavar="PX", help="expected object diameter in pixels (default: estimated per image for models without a distance head); drives how touching objects are split for such models, and the minimum object size for all")
    p.add_argument("--weights", default=None, metavar="FORMAT", help="Model Zoo packages: weight format to run (torchscript, pytorch_state_dict, onnx; default: the first present)")
    p.add_argument("--trust-code", action="store_true", help="Model Zoo packages: allow the package's own Python code to build its network")
    p.add_argument("--classifier", default=None, metavar="MODEL", help="an object classifier (preset, training folder, checkpoint or package): adds class and p_<class> columns to objects.csv, n_<class> to counts.csv; the chromosomes and cells presets use their own unless this says another, or 'none'")


def _segment_config(a):
    """The SegmentConfig of the options :func:`_segment_options` added."""
    from .config import SegmentConfig, validated

    axis = a.channel_axis
    axis = "auto" if axis == "auto" else None if axis.lower() == "none" else _int(axis, "--channel-axis")
    return validated(
        SegmentConfig, tile=a.tile, halo=a.halo, batch=a.batch, device=a.device, channel=a.channel, channel_axis=axis,
        foreground_threshold=a.foreground_threshold, seed_threshold=a.seed_threshold, min_size=a.min_size,
        merge_threshold=a.merge_threshold, merge_min_solidity=a.merge_min_solidity, instances=a.instances, diameter=a.diameter, level=a.level, pixel_size_um=a.pixel_size_um,
    )


def _run_skeletal(a) -> int:
    from . import api

    t0 = time.perf_counter()
    models = {}
    for item in a.skeletal_models or ():
        role, sep, path = item.partition("=")
        if not sep or not path:
            from .errors import InputError

            raise InputError(f"--skeletal-models {item!r} is not ROLE=PATH", "Write e.g. --skeletal-models regions=my-regions/ bones=my-bones/")
        models[role.strip()] = path.strip()
    rep = api.skeletal(a.inputs, a.out, metadata=a.metadata, strain=a.strain, pixel_size_mm=a.pixel_size_mm, device=a.device, models=models,
                       progress=_Progress())
    for row in rep["counts"]:
        if row["flag"]:
            print(f"{row['image']}: {row['flag']}")
            continue
        ribs = f"ribs L{row['n_ribs_left']} R{row['n_ribs_right']}, " if row["n_ribs_left"] is not None else ""
        print(f"{row['image']}: {row['view']}, {row['sex']}, {ribs}vertebrae C{row['n_cervical']} T{row['n_thoracic']} L{row['n_lumbar']} "
              f"S{row['n_sacral']} Ca{row['n_caudal']}; abnormal score {row['abnormal_score']:.2f}")
    for k in ("impc", "summary", "counts", "objects"):
        print(f"{k}: {rep['files'][k]}")
    print(f"{len(rep['counts'])} X-ray(s), {time.perf_counter() - t0:.1f} s")
    return 0


def _run_segment(a) -> int:
    from . import api

    if str(a.preset or a.model or "").strip().lower() == "skeletal":
        return _run_skeletal(a)
    cfg = _segment_config(a)
    t0 = time.perf_counter()
    model = a.model or a.preset
    if a.weights or a.trust_code:  # Model Zoo options: load the package here with them
        model = api.load_model(model, device=cfg.device, weights=a.weights, trust_code=a.trust_code)
    report = api.segment(a.inputs, a.out, model=model, config=cfg, classifier=a.classifier, export=a.export or (), progress=_Progress())
    from .measure.summary import count_summary

    for row in report.counts:
        area = f" (median area {row['median_area']:.0f} px)" if "median_area" in row else ""
        flags = "".join(f"; {k} {row[k]}" for k in ("count_is_46", "mitotic_index") if k in row)  # the counts.csv columns, for grep
        print(f"{row['image']}: {count_summary(row)}{area}{flags}")
    print(f"labels:  {', '.join(str(p) for p in report.label_files)}")
    print(f"objects: {report.objects_csv}")
    print(f"counts:  {report.counts_csv}")
    what = f"{report.n_objects} objects in " if all("n_objects" in row for row in report.counts) else ""
    print(f"{what}{len(report.counts)} image(s), {time.perf_counter() - t0:.1f} s")
    return 0


def _add_batch(sub) -> None:
    p = sub.add_parser("batch", help="segment a folder, glob or CSV of images: resumable, failures recorded, on a dask cluster if asked")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="a folder (searched recursively for tif, png, jpg, npy, .zarr), a quoted glob ('plates/**/*.tif'), a CSV with a 'path' column (other columns go into the tables), or image files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing); rerunning into it resumes")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, metavar="N", help="run on a dask LocalCluster of N worker processes (default: in this process)")
    g.add_argument("--cluster", default=None, metavar="local:N", help="the same as --workers N")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run on a running dask scheduler, e.g. tcp://HOST:8786 (dask scheduler / dask worker, dask-jobqueue; see docs/batch.md)")
    p.add_argument("--force", action="store_true", help="redo every image, also those an earlier run finished")
    p.add_argument("--hash", dest="hash_inputs", action="store_true", help="recognise unchanged inputs by their sha256 instead of their modification time")
    _segment_options(p)
    p.add_argument("--export", nargs="+", choices=["roi", "geojson", "rle"], default=None, metavar="FORMAT", help="also write per image a Fiji ROI set (roi), QuPath GeoJSON (geojson), and rows of one merged masks.csv (rle)")


def _run_batch(a) -> int:
    from . import api
    from .distributed.progress import BatchProgress
    from .errors import Cancelled

    cfg = _segment_config(a)
    workers = a.workers
    if a.cluster is not None:
        kind, _, n = a.cluster.partition(":")
        if kind.strip().lower() != "local" or not n.strip().isdigit():
            raise InputError(f"--cluster must be local:N (got {a.cluster!r})", "For Slurm, PBS or LSF start a scheduler and workers with dask-jobqueue and pass --scheduler ADDRESS (see docs/batch.md)")
        workers = int(n)
    bar = BatchProgress()
    try:
        r = api.batch(
            a.inputs, a.out, model=a.model or a.preset, config=cfg, classifier=a.classifier, workers=workers, scheduler=a.scheduler,
            force=a.force, hash_inputs=a.hash_inputs, export=a.export or (), weights=a.weights, trust_code=a.trust_code, progress=bar,
        )
    except (Cancelled, KeyboardInterrupt):
        bar.close()
        print(f"cancelled: finished images are kept in {a.out}; rerun the same command to do the rest", file=sys.stderr)
        return 130
    bar.close()
    done = r.n_inputs - r.n_failed
    print(f"{done} of {r.n_inputs} image(s) done ({len(r.computed)} computed now, {len(r.skipped)} finished before), {r.n_objects} objects, {r.seconds:.1f} s")
    for path in r.tables:
        print(f"{path.stem + ':':<9}{path}")
    print(f"{'manifest:':<9}{r.manifest_csv}")
    if r.failures:
        print(f"{r.n_failed} image(s) failed, listed in {r.failures_csv}:", file=sys.stderr)
        for path, reason in r.failures[:10]:
            print(f"  {path}: {reason}", file=sys.stderr)
        if r.n_failed > 10:
            print(f"  ... and {r.n_failed - 10} more", file=sys.stderr)
        return 1
    return 0


def _int(v: str, flag: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise InputError(f"{flag} must be an integer, 'auto' or 'none' (got {v!r})") from None


_XRAY_FLAGS = {"view": "--view", "p_abnormal": "--p-abnormal", "exposure": "--exposure", "noise": "--noise", "body_scale": "--body-scale",
               "rotation_range": "--rotation-range", "allow_cut": "--allow-cut"}


def _run_synth_xray(a) -> int:
    from . import api

    given = {k: getattr(a, k) for k in _XRAY_FLAGS if getattr(a, k) is not None}
    paths = api.synth("xray", a.n, a.out, size=a.size, seed=a.seed, density=a.density, contrast=a.contrast, scale=a.scale, **given)
    out = Path(a.out)
    print(f"wrote {len(paths)} X-ray images to {out / 'images'}, their class maps to {out / 'regions'}, "
          f"vertebra and rib labels to {out / 'instances'}, truth.csv, instances.csv and classes.csv")
    return 0


def _run_synth(a) -> int:
    from . import api

    if a.kind == "xray":
        return _run_synth_xray(a)
    extra_flags = [flag for k, flag in _XRAY_FLAGS.items() if getattr(a, k) is not None]
    if extra_flags:
        verb = "applies" if len(extra_flags) == 1 else "apply"
        raise InputError(f"{', '.join(extra_flags)} {verb} to the xray dataset only, not '{a.kind}'", "Leave them out")
    paths = api.synth(a.kind, a.n, a.out, size=a.size, seed=a.seed, density=a.density, contrast=a.contrast, scale=a.scale)
    truth = f", their masks to {Path(a.out) / 'masks'}, truth.csv and objects_truth.csv"
    extra = {
        "nuclei": f" and their masks to {Path(a.out) / 'masks'}",
        "shapes": f", their labels to {Path(a.out) / 'labels'} and classes.csv",
        "views": " (one folder per view)",
        "chromosomes": truth,
        "cells": truth + " (nucleus masks in nuclei/)",
        "fibrosis": f", their class maps to {Path(a.out) / 'masks'} and truth.csv",
    }[a.kind]
    print(f"wrote {len(paths)} images to {a.out}{extra}")
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
    _add_batch(sub)
    p = sub.add_parser("synth", help="write a synthetic dataset with ground truth")
    p.add_argument("kind", choices=["nuclei", "shapes", "views", "chromosomes", "cells", "fibrosis", "xray"], help=(
        "nuclei: images/ + masks/; shapes: rods, nuclei and debris with labels/ + classes.csv; views: X-ray-like dorsoventral/ and lateral/ images; "
        "chromosomes: metaphase spreads, cells: two-channel cells with a mitosis phase (both: images/, masks/, truth.csv, objects_truth.csv); "
        "fibrosis: H&E-like RGB tissue with class maps in masks/ (0 background, 1 tissue, 2 fibrosis) and truth.csv; "
        "xray: mouse X-ray phantoms with regions/ (class maps, classes.csv), instances/ (one label per vertebra and rib, instances.csv) "
        "and truth.csv (sex, pose, abnormalities and the IMPC_XRY_008-017 counts)"))
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default 768 for chromosomes, 512 for cells, fibrosis and xray, else 256)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--density", type=float, default=1.0, help="chromosomes / cells / fibrosis: x the default density (tighter spreads, more cells, more fibrosis), for shifted test sets")
    p.add_argument("--contrast", type=float, default=1.0, help="chromosomes / cells / fibrosis: x the default staining contrast")
    p.add_argument("--scale", type=float, default=1.0, help="chromosomes / cells / fibrosis: x every length (magnification)")
    p.add_argument("--view", choices=["dv", "lateral", "both"], default=None, help="xray: dorso-ventral (default), lateral, or both views of each mouse (--n mice, 2 x N images)")
    p.add_argument("--p-abnormal", type=float, default=None, help="xray: share of mice with a skeletal abnormality (default 0.3)")
    p.add_argument("--exposure", type=float, default=None, help="xray: x the default exposure (gain: brighter images), for shifted test sets")
    p.add_argument("--noise", type=float, default=None, help="xray: x the default photon and read noise (0: none)")
    p.add_argument("--body-scale", type=float, default=None, help="xray: x the default soft-tissue width (fatter or leaner mice)")
    p.add_argument("--rotation-range", type=float, default=None, help="xray: largest rotation in degrees, 0-180 (default 180: any angle; 0: head up)")
    p.add_argument("--allow-cut", action="store_const", const=True, default=None, help="xray: let the frame crop the skeleton too (default: skull, spine, ribs and pelvis always in view)")
    p = sub.add_parser("evaluate", help="score predicted label files against ground truth (matched by name)")
    p.add_argument("--pred", required=True, metavar="DIR_OR_CSV", help="predicted label files, a masks.csv (segment --export rle), or a predictions.csv / objects.csv with classes")
    p.add_argument("--truth", required=True, metavar="DIR_OR_CSV", help="true label files, a masks.csv, or a CSV of true classes (image[,label],class or path,class)")
    p.add_argument("--csv", default=None, metavar="FILE", help="per-image rows (default: DIR_pred/evaluation.csv)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold for a match (default 0.5)")
    _add_train(sub)
    _add_classify(sub)
    _add_zoo(sub)
    p = sub.add_parser("demo", help="segment the bundled sample image with the bundled nuclei model")
    p.add_argument("--out", default="napari-impc-dl-demo", metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    return ap


def _add_zoo(sub) -> None:
    z = sub.add_parser("zoo", help="BioImage Model Zoo: import, test and export model packages (offline)")
    zs = z.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    p = zs.add_parser("import", help="validate a package (zip, folder or rdf.yaml) and add it to the local model library")
    p.add_argument("package", metavar="PATH", help="a package zip, its unzipped folder or its rdf.yaml (never downloaded)")
    p.add_argument("--name", default=None, help="library name (default: from the package's name)")
    p.add_argument("--force", action="store_true", help="replace a library model of the same name")
    p = zs.add_parser("test", help="run a package's test inputs and compare with its test outputs; exit 0 only on pass")
    p.add_argument("package", metavar="PATH_OR_NAME", help="a package zip, folder or rdf.yaml, or a model name from `zoo list`")
    p.add_argument("--weights", default=None, metavar="FORMAT", help="torchscript, pytorch_state_dict or onnx (default: the first present)")
    p.add_argument("--trust-code", action="store_true", help="allow the package's own Python code to build its network")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p = zs.add_parser("export", help="export a preset, checkpoint or training folder (segmentation or classifier) as a spec 0.5 package (zip)")
    p.add_argument("model", metavar="MODEL", help="a bundled preset name, a .safetensors checkpoint or a training folder")
    p.add_argument("--out", required=True, metavar="PKG.zip", help="the package file to write (its folder must exist)")
    p.add_argument("--name", default=None, help="package name (default: the model's)")
    p.add_argument("--description", default=None, help="one paragraph (default: the model card's)")
    p.add_argument("--authors", nargs="+", default=None, metavar="NAME", help="one or more author names (or 'A; B')")
    p.add_argument("--license", default=None, help="SPDX licence id, e.g. MIT or CC-BY-4.0 (default: the model card's)")
    p.add_argument("--cite", nargs="+", default=None, metavar="'TEXT | DOI_OR_URL'", help="extra citations")
    p.add_argument("--tags", nargs="+", default=None, help="extra keywords for the Model Zoo")
    zs.add_parser("list", help="list the models in the local library")
    p = zs.add_parser("remove", help="remove a model from the local library")
    p.add_argument("name", help="the model's name in `zoo list`")


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


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train or fine-tune a segmentation U-Net or a classifier (model + reports in --out)")
    ts = t.add_subparsers(dest="task", required=True, metavar="TASK")
    seg = ts.add_parser("segmentation", help="instance segmentation from images + instance masks (matched by file name); semantic with --classes")
    seg.add_argument("--images", required=True, metavar="DIR", help="training images (tif, png, npy, ...)")
    seg.add_argument("--masks", required=True, metavar="DIR", help="instance masks: 0 background, 1..n one id per object")
    seg.add_argument("--arch", default=None, help="encoder: mobilenetv3-minimal (default), resnet18, resnet34, efficientnet-b0, mobilenetv3-small, tiny")
    seg.add_argument("--patch", type=int, default=None, help="training patch side in pixels (default 256)")
    seg.add_argument("--min-foreground", type=float, default=None, help="minimum foreground share of a patch (default 0.02)")
    seg.add_argument("--contact-weight", type=float, default=None, help="extra loss weight where two objects meet (thin or packed touching objects: try 5; default 0)")
    seg.add_argument("--keep-thresholds", dest="tune_thresholds", action="store_const", const=False, default=None,
                     help="keep the foreground / seed thresholds (0.5 / 0.5, or those of --from) and the border merge instead of picking those with the best validation F1")
    seg.add_argument("--classes", dest="sem_classes", default=None, metavar="A,B,...", help="semantic segmentation: the masks are class maps, value k = the k-th name (e.g. background,tissue,fibrosis); the model gives a class per pixel and the area fraction of each")
    seg.add_argument("--background", default=None, metavar="A,...", help="semantic: the classes that are not tissue (fractions are of the others; default the first class)")
    cls = ts.add_parser("classification", help="image- or object-level CNN classifier")
    cls.add_argument("--data", default=None, metavar="DIR_OR_CSV", help="image level: a folder per class or a CSV path,class; object level: the CSV image,label,class")
    cls.add_argument("--level", choices=["image", "object"], default="image")
    cls.add_argument("--images", default=None, metavar="DIR", help="object level: the images")
    cls.add_argument("--labels", default=None, metavar="DIR", help="object level: their instance label images (same file names)")
    cls.add_argument("--classes", default=None, metavar="CSV", help="object level: the CSV image,label,class (same as --data)")
    cls.add_argument("--arch", default=None, help="resnet18 (default), resnet34, efficientnet-b0, mobilenetv3-small, vgg16_bn, tiny")
    cls.add_argument("--input", choices=["image", "mask", "image+mask"], default=None, help="object level: what the network sees (default image+mask)")
    cls.add_argument("--size", type=int, default=None, help="input side in pixels (default 64 objects, 224 images)")
    cls.add_argument("--resize", choices=["pad", "crop", "stretch"], default=None, help="image level: keep aspect and pad (default), crop, or stretch")
    cls.add_argument("--crop", choices=["fixed", "bbox"], default=None, help="object level: fixed window or bounding box + margin (default)")
    cls.add_argument("--crop-side", type=int, default=None, help="object level: window side for --crop fixed (default 64)")
    cls.add_argument("--margin", type=float, default=None, help="object level: bounding-box margin per side, as a share of its side (default 0.25)")
    cls.add_argument("--padding", choices=["zero", "reflect", "none"], default=None, help="windows crossing the border (default zero)")
    cls.add_argument("--balance", choices=["weights", "sampling", "none"], default=None, help="imbalanced classes (default: loss weights)")
    cls.add_argument("--pretrained", choices=["imagenet"], default=None, help="start from ImageNet weights (downloads; needs a network)")
    for p in (seg, cls):
        p.add_argument("--out", required=True, metavar="DIR", help="folder for the model and its reports")
        p.add_argument("--from", dest="from_model", default=None, metavar="M", help="start from a checkpoint, training folder, state-dict file or Model Zoo package")
        p.add_argument("--mode", choices=["fine-tune", "head-only"], default=None, help="fine-tune all layers (default) or train the head only")
        p.add_argument("--epochs", type=int, default=None, help="default 100 (early stop and --time-limit may end sooner)")
        p.add_argument("--batch", type=int, default=None, help="samples per step (default 8 patches for segmentation, 32 crops or images for classification)")
        p.add_argument("--lr", type=float, default=None, help="learning rate (default 3e-4)")
        p.add_argument("--patience", type=int, default=None, help="early stop after this many epochs without improvement (default 15, 0: never)")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--val-fraction", type=float, default=None, help="share held out for validation, by image (default 0.1)")
        g.add_argument("--val", dest="val_dir", default=None, metavar="DIR", help="a separate validation set, laid out like the training data")
        p.add_argument("--time-limit", dest="time_limit_min", type=float, default=None, metavar="MIN", help="wall-clock limit in minutes")
        p.add_argument("--resume", action="store_true", help="continue the run in --out")
        p.add_argument("--device", default=None, help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps (default auto)")
        p.add_argument("--seed", type=int, default=None, help="seed of the validation split, the initial weights, the sampling and the augmentations: same seed, same run (default 0)")
        p.add_argument("--channel", type=int, default=None, help="train on this channel of multichannel images")
        p.add_argument("--augment", nargs="+", default=None, choices=["flips", "rot90", "zoom", "intensity", "noise", "blur", "illumination", "affine", "elastic"], help="augmentations (default: the task's; segmentation: flips rot90 intensity noise blur illumination)")
        p.add_argument("--name", default=None, help="model name (default: the --out folder's name)")


def _epoch_line(rec: dict) -> None:
    if rec.get("kind") != "epoch":
        return
    figs = "  ".join(f"{k[4:]} {v:.3f}" for k, v in rec.items() if k.startswith("val_") and k[4:] in ("loss", "f1", "iou", "accuracy", "balanced_accuracy", "miou", "fraction_error"))
    print(f"epoch {rec['epoch']}/{rec['epochs']}  train loss {rec['train_loss']:.3f}  {figs}  ({rec['seconds']:.1f} s, best {rec['best_epoch']})", file=sys.stderr, flush=True)


def _run_train(a) -> int:
    from . import api

    common = ("from_model", "mode", "epochs", "batch", "lr", "patience", "val_fraction", "val_dir", "time_limit_min", "device", "seed", "augment", "name")
    if a.task == "segmentation":
        fields = dict((k, getattr(a, k)) for k in common + ("arch", "patch", "min_foreground", "contact_weight", "tune_thresholds"))
        split = lambda v: [c.strip() for c in v.split(",")] if v is not None else None  # noqa: E731
        fields.update(classes=split(a.sem_classes), background=split(a.background))
    else:
        fields = dict((k, getattr(a, k)) for k in common + ("arch", "input", "size", "resize", "crop", "crop_side", "margin", "padding", "balance", "pretrained"))
        fields["level"] = a.level
    overrides = {k: v for k, v in fields.items() if v is not None}
    command = "napari-impc-dl " + " ".join(sys.argv[1:])
    if a.task == "segmentation":
        r = api.train_segmentation(a.out, images=a.images, masks=a.masks, channel=a.channel, resume=a.resume, progress=_epoch_line, command=command, **overrides)
    else:
        data = a.classes or a.data
        if data is None:
            from .errors import InputError

            raise InputError("No training data: give --data (class folders or CSV) or, for objects, --classes CSV with --images and --labels", "See napari-impc-dl train classification --help")
        r = api.train_classification(a.out, data=data, images=a.images, labels=a.labels, channel=a.channel, resume=a.resume, progress=_epoch_line, command=command, **overrides)
    figs = {k: round(v, 4) for k, v in r.metrics.items() if isinstance(v, float) and not k.startswith(("precision_", "recall_", "f1_"))}
    print(f"{r.stopped} after {len(r.history)} epoch(s); best epoch {r.best_epoch}; {r.samples_per_s:.1f} samples/s")
    print(f"model:   {r.model or '(none: stopped before the first epoch ended)'}")
    print(f"reports: {r.out_dir}")
    print(json.dumps({"stopped": r.stopped, "best_epoch": r.best_epoch, **figs}))
    return 0


def _add_classify(sub) -> None:
    p = sub.add_parser("classify", help="classify images (predictions.csv) or their labelled objects (objects.csv + counts.csv)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files")
    p.add_argument("--model", required=True, metavar="M", help="a classifier: a preset that classifies objects (chromosomes, cells), training folder, checkpoint, Model Zoo package or library name")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--labels", nargs="+", default=None, metavar="FILES_OR_DIR", help="object classifiers: label images (one per input) or a folder (e.g. a segment --out)")
    p.add_argument("--channel", type=int, default=None, help="use only this channel of multichannel images")
    p.add_argument("--batch", type=int, default=None, help="crops or images per forward pass (default 64 on the CPU, 256 on a GPU)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")


def _run_classify(a) -> int:
    from . import api

    labels = a.labels[0] if a.labels and len(a.labels) == 1 else a.labels
    r = api.classify(a.inputs, a.out, model=a.model, labels=labels, channel=a.channel, batch=a.batch, device=a.device, progress=_Progress())
    if r.level == "image":
        for _, row in r.table.iterrows():
            print(f"{row['image']}: {row['class']} ({max(v for k, v in row.items() if k.startswith('p_')):.2f})")
    else:
        for row in r.counts:
            print(f"{row['image']}: {row['n_objects']} objects; " + ", ".join(f"{k[2:]} {v}" for k, v in row.items() if k.startswith("n_") and k != "n_objects"))
    for f in r.files:
        print(f"wrote {f}")
    return 0


_COMMANDS = {"train": _run_train, "classify": _run_classify, "segment": _run_segment, "batch": _run_batch, "synth": _run_synth, "evaluate": _run_evaluate, "demo": _run_demo, "zoo": _run_zoo}


def main(argv: list[str] | None = None) -> int:
    from .inference.allocator import share_one_arena

    share_one_arena()  # before any thread starts: every image reuses the heap of the one before (see allocator.py)
    args = build_parser().parse_args(argv)
    if args.command == "evaluate" and args.csv is None and not str(args.pred).lower().endswith(".csv"):
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
