"""Train the ``skeletal`` preset's bundled models, reproducibly, on mouse X-ray phantoms.

    python scripts/train_skeletal_models.py [--work DIR] [--only STEP] [--minutes-scale F]

Steps (``--only`` runs one; the data step is skipped when its folder is complete):

* ``data``: phantoms of both views from :func:`napari_impc_dl.api.synth` (``xray``, training dataset seed
  1400, 160 mice; validation seed 2400, 12 mice; p_abnormal 0.6 so every abnormality is seen often),
  and what the classifiers learn from, made with the preset's own code on the true class maps
  (:mod:`napari_impc_dl.skeletal.prepare`): head-up crops for the view and sex classifiers, rib and
  pelvis objects for the shape classifiers, from the training mice and 4 x 30 more with one rare
  abnormality each (rib shape, rib fusion, asymmetric or malformed pelvis; seeds 1401-1404); the view and
  sex classifiers also see 300 more mice (seed 1405);
* ``regions``: the semantic U-Net (12 classes, :data:`~napari_impc_dl.synthetic.xray_layout.CLASSES`), on the
  pictures and class maps resized to 256 px (:mod:`napari_impc_dl.skeletal.scale`);
* ``bones``: the instance U-Net (a label per vertebra and rib);
* ``view``: dv / lateral, mirrored or not, on the head-up crop; ``sex``: female / male on the standard view;
* ``ribs``: normal / misshapen / fused per rib; ``pelvis``: normal / asymmetric / malformed;
* ``cards``: copy the trained models into ``src/napari_impc_dl/data/`` with honest cards; ``sample``: one
  phantom of each view as napari sample data.

The evaluation seeds of ``benchmarks/eval_presets.py`` (7400 and up) are never used here. CPU, 2 threads:
about 80 minutes in all on the development machine.
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
from napari_impc_dl.skeletal import prepare  # noqa: E402
from napari_impc_dl.skeletal.models import MODEL_FILES  # noqa: E402
from napari_impc_dl.synthetic.xray_layout import CLASSES  # noqa: E402

DATA = ROOT / "src/napari_impc_dl/data"
SEEDS = {"train": (1400, 160), "val": (2400, 12), "sample": 3400}
#: extra mice for the shape classifiers, each with exactly one rare abnormality (dataset seeds 1401-1404)
RARE = {"rib_shape": 1401, "rib_fusion": 1402, "pelvis_asymmetric": 1403, "pelvis_malformed": 1404}
N_RARE = 30
#: more mice for the view and sex classifiers (pictures only: their crops are cheap), dataset seed 1405
MORE = (1405, 300)

DATA_TEXT = (
    "Synthetic mouse X-ray phantoms only ({n} mice, dorso-ventral and lateral views, 512x512, napari_impc_dl.synthetic.xray, "
    "dataset seed {seed}, 60 % with an abnormality): cartoon bones (skull, 7/13/6/4/26-31 vertebrae, 13 rib pairs, pelvis, limbs) "
    "inside a soft-tissue body, at any rotation and mirrored half the time, with exposure, scatter and noise. "
    "Never trained on real radiographs: check it on your centre's images (and fine-tune on a few annotated ones) before reporting counts."
)

BONES_MIN_SIZE = 3
"""Smallest bone kept, in pixels (chosen on phantoms of seeds 9000-9011: caudal within one 0.58 vs 0.0 at 12)."""

#: step -> (kind, training settings, card text)
STEPS = {
    "regions": ("semantic", {"arch": "mobilenetv3-small", "patch": 256, "batch": 8, "lr": 3e-3, "epochs": 60, "patience": 0, "min_foreground": 0.0,
                             "classes": list(CLASSES), "background": ["background", "marker"], "augment": ["flips", "rot90", "intensity", "noise"]},
                "Starter semantic U-Net for mouse X-rays (any orientation): background, soft tissue, skull, cervical, thoracic, lumbar, sacral, caudal, ribs, pelvis, limbs, marker per pixel, at half the scale of the bones model (a whole mouse in 256 px).", 25),
    "bones": ("instance", {"arch": "mobilenetv3-minimal", "patch": 256, "batch": 8, "lr": 3e-3, "epochs": 14, "patience": 0, "contact_weight": 5.0, "min_foreground": 0.01,
                        "augment": ["flips", "rot90", "intensity", "noise"]},
              "Starter U-Net for mouse X-rays: every vertebra and rib as an instance (touching and overlapping bones separated).", 28),
    "view": ("image", {"arch": "mobilenetv3-small", "size": 160, "batch": 32, "lr": 2e-3, "epochs": 30, "patience": 0, "augment": ["intensity", "noise"]},
             "Starter view classifier for mouse X-rays turned head-up: dorso-ventral or lateral, mirrored or not.", 4),
    "sex": ("image", {"arch": "mobilenetv3-small", "size": 160, "batch": 32, "lr": 2e-3, "epochs": 30, "patience": 0, "augment": ["intensity", "noise"]},
            "Starter sex classifier for mouse X-rays in the standard view (head up, the mouse's left on the left): female / male.", 5),
    "ribs": ("object", {"arch": "mobilenetv3-small", "size": 64, "input": "image+mask", "crop": "bbox", "margin": 0.35, "batch": 64, "lr": 2e-3, "epochs": 8, "patience": 0},
             "Starter rib classifier for mouse X-rays: normal, misshapen (kinked or wavy) or fused to a neighbour, from each rib's crop.", 5),
    "pelvis": ("object", {"arch": "mobilenetv3-small", "size": 96, "input": "image+mask", "crop": "bbox", "margin": 0.3, "batch": 32, "lr": 2e-3, "epochs": 20, "patience": 0},
               "Starter pelvis classifier for mouse X-rays: normal, asymmetric or malformed, from the pelvis's crop.", 4),
}


def _data(work: Path) -> None:
    for part in ("train", "val"):
        seed, n = SEEDS[part]
        d = work / part
        if not (d / "truth.csv").is_file():
            api.synth("xray", n, d, size=512, seed=seed, view="both", p_abnormal=0.6)
        if not (d / "view.csv").is_file():
            prepare.classifier_data(d)
    for kind, seed in RARE.items():
        d = work / f"rare_{kind}"
        if not (d / "truth.csv").is_file():
            api.synth("xray", N_RARE, d, size=512, seed=seed, view="both", abnormalities=[kind])
        if not (d / "view.csv").is_file():
            prepare.classifier_data(d)
    for part in ("train", "val"):  # the regions model works at half the scale (napari_impc_dl.skeletal.scale)
        if not (work / f"{part}_regions256" / "masks").is_dir():
            prepare.regions_data(work / part, work / f"{part}_regions256")
    more = work / "more"
    if not (more / "truth.csv").is_file():
        api.synth("xray", MORE[1], more, size=512, seed=MORE[0], view="both", p_abnormal=0.3)
    if not (more / "view.csv").is_file():
        prepare.classifier_data(more)
    if not (work / "cls" / "ribs.csv").is_file():  # the classifiers learn from the training mice and the rare ones
        prepare.merge([work / "train", *(work / f"rare_{k}" for k in RARE)], work / "cls")
    if not (work / "cls_views" / "view.csv").is_file():  # view and sex: those and 300 more mice
        prepare.merge([work / "train", *(work / f"rare_{k}" for k in RARE), more], work / "cls_views")


def _train(step: str, work: Path, minutes: float, log) -> Path:
    kind, kw, _, _ = STEPS[step]
    tr, va = work / "train", work / "val"
    if kind in ("image", "object"):
        tr = work / ("cls_views" if kind == "image" else "cls")
    common = dict(seed=0, time_limit_min=minutes, name=f"skeletal-{step}", progress=log)
    if kind == "semantic":
        tr, vdir = work / "train_regions256", work / "val_regions256"
        rep = api.train_segmentation(work / step, images=tr / "images", masks=tr / "masks", val_dir=str(vdir), **common, **kw)
    elif kind == "instance":
        vdir = work / f"val_{step}"
        if not vdir.is_dir():
            vdir.mkdir()
            (vdir / "images").symlink_to(va / "images")
            (vdir / "masks").symlink_to(va / "instances")
        rep = api.train_segmentation(work / step, images=tr / "images", masks=tr / "instances", val_dir=str(vdir), **common, **kw)
    elif kind == "image":
        rep = api.train_classification(work / step, data=tr / f"{step}.csv", level="image", val_fraction=0.1, **common, **kw)
    else:
        rep = api.train_classification(work / step, data=tr / f"{step}.csv", images=tr / "images", labels=tr / prepare.LABEL_DIRS[step],
                                       level="object", val_fraction=0.1, **common, **kw)
    return rep.model


def _finalise(step: str, src: Path) -> dict:
    _, _, text, _ = STEPS[step]
    dst = DATA / MODEL_FILES[step]
    net, card = load_checkpoint(src)
    seed, n = SEEDS["train"]
    more = {"view": " Also 300 more mice (seed 1405) and the rare-abnormality mice below.", "sex": " Also 300 more mice (seed 1405) and the rare-abnormality mice below.",
            "ribs": "", "pelvis": ""}.get(step)
    if more is not None:
        more += " Also 4 x 30 mice with exactly one rare abnormality each (rib shape, rib fusion, asymmetric or malformed pelvis; seeds 1401-1404)."
    prov = card.provenance.model_copy(update={"trained_on": DATA_TEXT.format(n=n, seed=seed) + (more or ""), "script": "python scripts/train_skeletal_models.py",
                                              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    update = {"name": f"skeletal-{step}", "description": text, "provenance": prov, "authors": ["napari-impc-dl developers"], "channel_names": ["X-ray (bone bright)"]}
    if step == "bones":  # the last tail vertebrae are a few pixels: keep them (the training default drops objects under 12 px);
        # no border merge (the bundled model predates the trainer's convex merge for new models)
        update["instances"] = card.instances.model_copy(update={"min_size": BONES_MIN_SIZE, "merge_threshold": None, "merge_min_solidity": None})
    card = card.model_copy(update=update)
    card = save_checkpoint(net, card, dst)
    return {"file": str(dst.relative_to(ROOT)), "MB": round(dst.stat().st_size / 1e6, 2), "hash": card.short_hash, "metrics": card.provenance.metrics}


def _sample(work: Path) -> None:
    import pandas as pd

    tmp = work / "sample"
    api.synth("xray", 1, tmp, size=512, seed=SEEDS["sample"], view="both", p_abnormal=0.0)
    truth = pd.read_csv(tmp / "truth.csv")
    for view in ("dv", "lateral"):
        img = next(p for p in (tmp / "images").iterdir() if p.stem.endswith(view))
        shutil.copyfile(img, DATA / f"sample_xray_{view}.tif")
        shutil.copyfile(tmp / "instances" / img.name, DATA / f"sample_xray_{view}_labels.tif")
        row = truth[truth["image"] == img.stem].copy()
        row["image"] = f"sample_xray_{view}"
        row.to_csv(DATA / f"sample_xray_{view}_truth.csv", index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="folder for the data and training runs (default: a temporary one)")
    ap.add_argument("--only", choices=["data", *STEPS, "cards", "sample"], default=None)
    ap.add_argument("--minutes-scale", type=float, default=1.0, help="multiply every step's time limit")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="train-skeletal-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log = lambda row: print(json.dumps(row), flush=True)  # noqa: E731
    _data(work)
    print(f"data in {work}: {time.time() - t0:.0f}s", flush=True)
    for step, (_, _, _, minutes) in STEPS.items():
        if args.only in (None, step):
            model = _train(step, work, minutes * args.minutes_scale, log)
            print(json.dumps({step: _finalise(step, model)}), flush=True)
        elif args.only == "cards" and (work / step / "model.safetensors").is_file():
            print(json.dumps({step: _finalise(step, work / step / "model.safetensors")}), flush=True)
    if args.only in (None, "sample"):
        _sample(work)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
