"""Train a preset's bundled starter models, reproducibly, on its synthetic generator.

    python scripts/train_preset_models.py chromosomes|cells|fibrosis [--work DIR] [--seg-minutes M] [--cls-minutes M]

For each preset: a training set (dataset seed 1100 for chromosomes, 1200 for cells, 1300 for
fibrosis) and a validation set (seed 2100 / 2200 / 2300) from ``napari_impc_dl.api.synth``; then the project's own
``train`` verb (``api.train_segmentation`` for the U-Net, ``api.train_classification`` at object
level for the classifier, trained on the true masks; the chromosomes classifier instead on the U-Net's
own objects of fresh spreads, classed against the truth with ``chromosome_pair`` / ``chromosome_piece``
for its merges and cuts, see ``napari_impc_dl.training.error_classes``; ``fibrosis`` has a semantic U-Net only, trained
on class maps with ``classes=background,tissue,fibrosis``); then the best checkpoints are copied into
``src/napari_impc_dl/data/`` with an honest card (synthetic data only). The bundled sample image
(seed 3100 / 3200 / 3300) and its truth are written there too. The evaluation seeds of
``benchmarks/eval_presets.py`` (5000 and up) are never used here. CPU, 2 threads: about 25 minutes
per preset on the development machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_impc_dl import api  # noqa: E402
from napari_impc_dl.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

DATA = ROOT / "src/napari_impc_dl/data"

#: the segmentation augmentations these starters were trained with (the trainer's default before blur and illumination joined it)
OLD_AUGMENT = ["flips", "rot90", "intensity", "noise"]
#: no border merge: what these starters were bundled with (the trainer gives a new model training.tasks.CONVEX_MERGE since)
NO_MERGE = {"merge_threshold": None, "merge_min_solidity": None}

#: per preset: dataset seeds, data sizes, the U-Net's and the classifier's training settings, card texts
SETUP = {
    "chromosomes": {
        "seeds": (1100, 2100, 3100), "n_train": 120, "n_val": 10, "size": 768,
        "seg": {"arch": "mobilenetv3-minimal", "patch": 256, "batch": 8, "lr": 3e-3, "epochs": 11, "patience": 6, "contact_weight": 5.0, "augment": OLD_AUGMENT},
        "cls": {"arch": "mobilenetv3-small", "size": 64, "input": "image+mask", "crop": "fixed", "crop_side": 112, "batch": 64, "lr": 2e-3, "epochs": 40, "patience": 8, "balance": "none"},
        # the classifier learns on the U-Net's own objects (merged pairs, cut pieces; see training.error_classes) of
        # fresh spreads, plus the true objects of the first set with half of its touching pairs merged (more pair
        # examples); validation on the U-Net's objects of a set of its own. A fixed 112 px window (not the bounding
        # box) keeps the scale, so a pair's double width shows.
        "cls_data": {"segmented": [(1110, 120, {}), (1111, 60, {"density": 1.15, "contrast": 0.85, "scale": 1.08}), (1112, 120, {}),
                                (1113, 80, {"density": 0.9, "contrast": 1.15, "scale": 0.92})], "true": 1110, "val": (2110, 20, {})},
        "data": (
            "Synthetic Giemsa-stained metaphase spreads only ({n} 768x768 images of napari_impc_dl.synthetic.chromosomes, dataset seed {seed}): "
            "46 chromosomes (or aneuploid 44-48, or partial spreads) with human karyotype lengths and centromere positions, G-band-like texture, "
            "touching and crossing pairs, 0-3 interphase nuclei, debris and stain blobs, uneven light, blur and noise. "
            "Never trained on real microscopy: check it on your spreads (and fine-tune on a few annotated ones) before reporting counts."
        ),
        "cls_minutes": 16.0,
        "cls_data_text": (
            "Synthetic Giemsa-stained metaphase spreads only (napari_impc_dl.synthetic.chromosomes, 768x768): the objects the bundled "
            "chromosomes U-Net finds on 120 spreads of dataset seed 1110, 60 of seed 1111 (density x1.15, contrast x0.85, size x1.08), "
            "120 of seed 1112 and 80 of seed 1113 (density x0.9, contrast x1.15, size x0.92), "
            "classed against the truth (training.error_classes: merged pairs, pieces of cut chromosomes), plus the true objects of the seed-1110 "
            "spreads with half of their touching chromosome pairs merged. Never trained on real microscopy: check it on your spreads "
            "(and fine-tune on a few annotated ones) before reporting counts."
        ),
        "channels": ["brightfield (Giemsa)"],
        # join neighbours whose shared border lies inside a chromosome by the distance map (cut at the centromere), any
        # shape (a chromosome bends): 0.25 of 0.15-0.3 gave the best counts on 20 spreads of the validation seed 2100
        # (MAE 0.80 -> 0.45). With the classifier retrained on the merged objects 0.175-0.225 looked better there
        # (MAE 0.35-0.40 against 0.50) but not on 4 x 40 held-out spreads (mean MAE 0.61 at 0.2, 0.59 at 0.25): kept
        "instances": {"merge_threshold": 0.25, "merge_min_solidity": None},
        "seg_text": "Starter U-Net for metaphase spreads (brightfield, Giemsa-like, greyscale): every object of a spread (chromosomes, interphase nuclei, debris) as instances, touching chromosomes separated.",
        "cls_text": (
            "Starter object classifier for metaphase spreads: chromosome / chromosome_pair (two merged into one object) / chromosome_piece "
            "(the smaller part of a cut one) / nucleus / debris from each object's crop (image and mask), trained on the starter U-Net's own "
            "objects so the count per spread survives its merges and cuts."
        ),
    },
    "cells": {
        "seeds": (1200, 2200, 3200), "n_train": 160, "n_val": 12, "size": 512,
        "seg": {"arch": "mobilenetv3-minimal", "patch": 256, "batch": 8, "lr": 3e-3, "epochs": 15, "patience": 6, "contact_weight": 5.0, "augment": OLD_AUGMENT},
        "cls": {"arch": "mobilenetv3-small", "size": 64, "input": "image+mask", "crop": "bbox", "margin": 0.3, "batch": 64, "lr": 2e-3, "epochs": 40, "patience": 12},
        # the phase classifier learns on the U-Net's own cells too (a cell it cuts keeps its phase in each part: dividing
        # cells bigger than the training ones are cut), plus the true cells of the first set
        "cls_data": {"segmented": [(1210, 120, {}), (1211, 60, {"density": 1.15, "contrast": 0.85, "scale": 1.08})], "true": 1210, "val": (2210, 20, {}), "classes": "majority"},
        "cls_minutes": 18.0,
        "cls_data_text": (
            "Synthetic two-channel fluorescence fields only (napari_impc_dl.synthetic.cells, 512x512): the cells the bundled cells U-Net "
            "finds on 120 fields of dataset seed 1210 and 60 of seed 1211 (density x1.15, contrast x0.85, size x1.08), each given the phase "
            "of the true cell under most of it (training.error_classes.majority_classes), plus the true cells of the seed-1210 fields. "
            "Never trained on real microscopy: check it on your cells (and fine-tune on a few annotated ones) before reporting phases."
        ),
        "data": (
            "Synthetic two-channel fluorescence fields only ({n} 512x512 images of napari_impc_dl.synthetic.cells, dataset seed {seed}): "
            "touching cells (cytoplasm / membrane channel) with a nucleus channel showing the phase (interphase, prophase, prometaphase, "
            "metaphase, anaphase, telophase, apoptosis) at frequencies like an asynchronous population, uneven light, blur and noise. "
            "Never trained on real microscopy: check it on your cells (and fine-tune on a few annotated ones) before reporting phases."
        ),
        "channels": ["cytoplasm / membrane", "nuclei"],
        "instances": NO_MERGE,
        "seg_text": "Starter U-Net for cells in two-channel fluorescence (channel 0 cytoplasm / membrane, channel 1 nuclei): cell instances, touching cells separated.",
        "cls_text": "Starter object classifier of mitosis phase (CellCognition's classes) from each cell's crop (both channels and the cell mask).",
    },
    "fibrosis": {
        "seeds": (1300, 2300, 3300), "n_train": 96, "n_val": 10, "size": 512,
        "seg": {"arch": "mobilenetv3-minimal", "patch": 256, "batch": 8, "lr": 3e-3, "epochs": 30, "patience": 8, "min_foreground": 0.0,
                "classes": ["background", "tissue", "fibrosis"], "background": ["background"], "augment": OLD_AUGMENT},
        "cls": None,
        "data": (
            "Synthetic H&E-like brightfield tissue only ({n} 512x512 RGB tiles of napari_impc_dl.synthetic.fibrosis, dataset seed {seed}): "
            "eosin-pink parenchyma with hematoxylin nuclei, pale collagen-rich fibrotic patches and bands with wavy fibres and sparse spindle "
            "nuclei, vessels and airspaces, glass around the section, stain and illumination variation, blur and noise. "
            "Never trained on real slides: check it against a pathologist's scoring on your stain (and fine-tune on a few annotated tiles) before reporting fractions."
        ),
        "channels": ["red", "green", "blue"],
        "seg_text": "Starter semantic U-Net for fibrosis on H&E-like brightfield tissue (RGB): background (glass), tissue and fibrosis per pixel; per image the fibrotic share of the tissue.",
        "cls_text": "",
    },
}


def _with_instances(card, settings: dict):
    """``card`` with the preset's postprocessing ``settings`` (e.g. ``merge_threshold``) over those the trainer chose."""
    return card.model_copy(update={"instances": card.instances.model_copy(update=settings)})


def _finalise(src: Path, dst: Path, name: str, text: str, data_text: str, script: str, extra: dict | None = None) -> dict:
    """Copy a trained checkpoint into the package with its bundled name, description and provenance."""
    net, card = load_checkpoint(src)
    extra = dict(extra or {})
    card = _with_instances(card, extra.pop("instances", {}))
    prov = card.provenance.model_copy(update={"trained_on": data_text, "script": script, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    card = card.model_copy(update={"name": name, "description": text, "provenance": prov, "authors": ["napari-impc-dl developers"], **extra})
    card = save_checkpoint(net, card, dst)
    return {"file": str(dst.relative_to(ROOT)), "MB": round(dst.stat().st_size / 1e6, 2), "hash": card.short_hash, "metrics": card.provenance.metrics}


def _segmenter_objects(work: Path, preset: str, spec: dict) -> tuple[Path, Path]:
    """Train and validation folders (``images/``, ``labels/``, ``classes.csv``) of the bundled U-Net's own objects on
    fresh synthetic sets, classed against the truth by :mod:`napari_impc_dl.training.error_classes` (``classes_from_truth``
    for a count; with ``"classes": "majority"`` in ``cls_data``, ``majority_classes`` for a state such as a phase)."""
    import numpy as np
    import pandas as pd
    import tifffile

    from napari_impc_dl.measure.evaluate import read_labels
    from napari_impc_dl.training.error_classes import classes_from_truth, majority_classes, merge_touching

    def layout(dst: Path, sets, true_seed) -> Path:
        if (dst / "classes.csv").is_file():
            return dst
        for sub in ("images", "labels"):
            (dst / sub).mkdir(parents=True, exist_ok=True)
        rows = []
        rng = np.random.default_rng(0)
        for seed, n, kw in sets:
            src = work / f"objects-{seed}"
            if not (src / "truth.csv").is_file():
                api.synth(preset, n, src, size=SETUP[preset]["size"], seed=seed, **kw)
            images = sorted((src / "images").glob("*.tif"))
            if not (src / "segmented" / "objects.csv").is_file():
                api.segment(images, src / "segmented", model=DATA / f"{preset}.safetensors", classifier="none")
            truth = {name: dict(zip(g["label"].astype(int), g["class"].astype(str))) for name, g in pd.read_csv(src / "objects_truth.csv").groupby("image")}
            for img in images:
                tc = truth.get(img.stem, {})
                pred_labels = src / "segmented" / f"{img.stem}_labels.tif"
                true, pred = read_labels(src / "masks" / img.name), read_labels(pred_labels)
                if spec.get("classes") == "majority":  # a state of each object (a phase)
                    kinds = [("s", pred, majority_classes(pred, true, tc))] + ([("t", true, tc)] if seed == true_seed else [])
                else:  # a count (chromosomes): merged pairs and cut pieces, and more pairs from the truth
                    kinds = [("s", pred, classes_from_truth(pred, true, tc))] + ([("t", *merge_touching(true, tc, rng, 0.5))] if seed == true_seed else [])
                for tag, lab, classes in kinds:
                    name = f"{img.stem}_{tag}"
                    shutil.copyfile(img, dst / "images" / f"{name}.tif")
                    tifffile.imwrite(dst / "labels" / f"{name}.tif", lab, compression="zlib")
                    rows += [(name, k, c) for k, c in sorted(classes.items())]
        pd.DataFrame(rows, columns=["image", "label", "class"]).to_csv(dst / "classes.csv", index=False)
        return dst

    return layout(work / "cls-train", spec["segmented"], spec["true"]), layout(work / "cls-val", [spec["val"]], None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", choices=sorted(SETUP))
    ap.add_argument("--work", type=Path, default=None, help="folder for the data and training runs (default: a temporary one)")
    ap.add_argument("--seg-minutes", type=float, default=19.0)
    ap.add_argument("--cls-minutes", type=float, default=None, help="the classifier's time limit (default: the preset's, 6 minutes unless SETUP says)")
    ap.add_argument("--only", choices=["seg", "cls", "sample", "cards", "instances"], default=None, help="one step; 'cards' re-copies the trained models of --work with their cards; 'instances' writes the preset's postprocessing settings into the bundled U-Net's card")
    args = ap.parse_args()
    st = SETUP[args.preset]
    if args.only == "instances":  # the bundled U-Net's card gets the preset's postprocessing settings, weights untouched
        net, card = load_checkpoint(DATA / f"{args.preset}.safetensors")
        card = save_checkpoint(net, _with_instances(card, st.get("instances", {})), DATA / f"{args.preset}.safetensors")
        print(json.dumps({"instances": card.instances.model_dump(), "hash": card.short_hash}), flush=True)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix=f"train-{args.preset}-"))
    train_seed, val_seed, sample_seed = st["seeds"]
    t0 = time.time()
    for part, seed, n in (("train", train_seed, st["n_train"]), ("val", val_seed, st["n_val"])):
        if not (work / part / "truth.csv").is_file():
            api.synth(args.preset, n, work / part, size=st["size"], seed=seed)
    print(f"data in {work}: {time.time() - t0:.0f}s", flush=True)
    script = f"python scripts/train_preset_models.py {args.preset}"
    data_text = st["data"].format(n=st["n_train"], seed=train_seed)
    log = lambda row: print(json.dumps(row), flush=True)  # noqa: E731
    seg_extra = {"channel_names": st["channels"], **({"instances": st["instances"]} if "instances" in st else {})}
    if args.only in (None, "seg"):
        rep = api.train_segmentation(
            work / "seg", images=work / "train/images", masks=work / "train/masks", val_dir=str(work / "val"), seed=0,
            time_limit_min=args.seg_minutes, name=args.preset, progress=log, **st["seg"],
        )
        print(json.dumps(_finalise(rep.model, DATA / f"{args.preset}.safetensors", args.preset, st["seg_text"], data_text, script, seg_extra)), flush=True)
    if args.only in (None, "cls") and st["cls"] is not None:
        if "cls_data" in st:
            tr, va = _segmenter_objects(work, args.preset, st["cls_data"])
            data, cls_images, cls_labels, cls_val = tr / "classes.csv", tr / "images", tr / "labels", va
        else:
            data, cls_images, cls_labels, cls_val = work / "train/objects_truth.csv", work / "train/images", work / "train/masks", work / "val"
        rep = api.train_classification(
            work / "cls", data=data, images=cls_images, labels=cls_labels, level="object",
            val_dir=str(cls_val), seed=0, time_limit_min=args.cls_minutes or st.get("cls_minutes", 6.0), name=f"{args.preset}-classes", progress=log, **st["cls"],
        )
        print(json.dumps(_finalise(rep.model, DATA / f"{args.preset}_classes.safetensors", f"{args.preset}-classes", st["cls_text"], st.get("cls_data_text", data_text), script)), flush=True)
    if args.only == "cards":
        print(json.dumps(_finalise(work / "seg/model.safetensors", DATA / f"{args.preset}.safetensors", args.preset, st["seg_text"], data_text, script, seg_extra)), flush=True)
        if st["cls"] is not None:
            print(json.dumps(_finalise(work / "cls/model.safetensors", DATA / f"{args.preset}_classes.safetensors", f"{args.preset}-classes", st["cls_text"], st.get("cls_data_text", data_text), script)), flush=True)
    if args.only in (None, "sample"):
        tmp = work / "sample"
        api.synth(args.preset, 1, tmp, size=1024, seed=sample_seed)
        img = next((tmp / "images").iterdir())
        shutil.copyfile(img, DATA / f"sample_{args.preset}.tif")
        shutil.copyfile(tmp / "masks" / img.name, DATA / f"sample_{args.preset}_labels.tif")
        import pandas as pd

        for table in ("objects_truth", "truth"):  # rows named after the bundled file
            if not (tmp / f"{table}.csv").is_file():  # a semantic preset has no objects
                continue
            df = pd.read_csv(tmp / f"{table}.csv")
            df["image"] = f"sample_{args.preset}"
            df.to_csv(DATA / f"sample_{args.preset}_{table}.csv", index=False)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
