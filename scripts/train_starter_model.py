"""Train the bundled ``nuclei`` starter model, reproducibly, with the project's own ``train`` verb.

    python scripts/train_starter_model.py [--work DIR] [--out src/napari_impc_dl/data/nuclei.safetensors]

Data: ``api.synth("nuclei")`` (``napari_impc_dl.synthetic.make_nuclei_image``), 480 images of 256² with
dataset seed 1000 (training) and 24 with seed 2000 (validation); the evaluation seeds used in tests, the
README and the benchmarks (7, 42, 500-508, ...) are never used here.

Training: ``api.train_segmentation``, the function behind ``napari-impc-dl train segmentation``; the same run
from a shell is::

    napari-impc-dl synth nuclei --n 480 --size 256 --seed 1000 --out WORK/train
    napari-impc-dl synth nuclei --n 24 --size 256 --seed 2000 --out WORK/val
    napari-impc-dl train segmentation --images WORK/train/images --masks WORK/train/masks --val WORK/val \\
        --out WORK/seg --arch mobilenetv3-minimal --patch 128 --batch 8 --lr 3e-3 --epochs 30 --patience 10 --seed 0

(``RECIPE`` below: a network started from random weights wants a higher peak learning rate than the trainer's
fine-tuning default, and 128² patches give four times the steps of 256² ones for the same pixels.) The best
checkpoint by validation F1@0.5 is then copied into the package with the card's bundled name, description and
tiling (a 32 px halo: the encoder's receptive radius, so tiled labels equal whole-image labels), and the bundled
sample image (seed 3000) and its ground truth are written beside it. CPU, 2 threads: about 20 minutes on the
development machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_impc_dl import api  # noqa: E402
from napari_impc_dl.models.card import TilingSpec  # noqa: E402
from napari_impc_dl.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

TRAIN_SEED, VAL_SEED, SAMPLE_SEED = 1000, 2000, 3000
#: the trainer's settings (``SegmentationTrainConfig`` fields), as in the shell command of the docstring
RECIPE = {"arch": "mobilenetv3-minimal", "patch": 128, "batch": 8, "lr": 3e-3, "epochs": 30, "patience": 10, "seed": 0}
DESCRIPTION = (
    "Starter U-Net (MobileNetV3-small-minimal encoder, 3 stages: no squeeze-and-excitation and a 32 px receptive radius, so tiles "
    "with a 32 px halo reproduce whole-image inference exactly) for fluorescence nuclei (DAPI/Hoechst-like), 1 channel in; "
    "outputs foreground probability and a normalised distance map for seeded-watershed instance separation."
)
#: fitted to 1408 px tiles on 4096², 1424 on 16384²: the halo is about 6-9 % of the encoder's work, 2-3 % of the decoder's
TILING = TilingSpec(tile=1152, halo=32, step=8, min_tile=32)


def trained_on(n_train: int) -> str:
    return (
        f"Synthetic images only: {n_train} 256x256 images from napari_impc_dl.synthetic.make_nuclei_image (dataset seed {TRAIN_SEED}): "
        "blob-like nuclei of 5-16 px radius, sparse to crowded, touching clusters, intensity heterogeneity and chromatin texture, "
        "Gaussian blur, uneven background, Poisson + read noise. Never trained on real microscopy: check it on your images before trusting counts."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "src/napari_impc_dl/data/nuclei.safetensors")
    ap.add_argument("--work", type=Path, default=None, help="folder for the data and the training run (default: a temporary one)")
    ap.add_argument("--n-train", type=int, default=480)
    ap.add_argument("--n-val", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    ap.add_argument("--only-instances", action="store_true", help="write the trainer's postprocessing defaults for a new model (the convex "
                    "border merge, training.tasks.CONVEX_MERGE) into the card of --out, weights untouched (what a rerun gives: the search keeps it)")
    args = ap.parse_args()
    if args.only_instances:
        from napari_impc_dl.training.tasks import CONVEX_MERGE

        net, card = load_checkpoint(args.out)
        card = save_checkpoint(net, card.model_copy(update={"instances": card.instances.model_copy(update=CONVEX_MERGE)}), args.out)
        args.out.chmod(0o644)
        print(json.dumps({"instances": card.instances.model_dump(), "hash": card.short_hash}), flush=True)
        return

    import shutil

    work = args.work or Path(tempfile.mkdtemp(prefix="train-nuclei-"))
    t0 = time.time()
    for part, seed, n in (("train", TRAIN_SEED, args.n_train), ("val", VAL_SEED, args.n_val)):
        if len(list((work / part / "masks").glob("*.tif"))) != n:
            shutil.rmtree(work / part, ignore_errors=True)
            api.synth("nuclei", n, work / part, size=256, seed=seed)
    print(f"data in {work}: {args.n_train} train / {args.n_val} val images in {time.time() - t0:.0f}s", flush=True)
    rep = api.train_segmentation(
        work / "seg", images=work / "train/images", masks=work / "train/masks", val_dir=str(work / "val"), device="cpu", name="nuclei",
        progress=lambda row: print(json.dumps(row), flush=True), command="python scripts/train_starter_model.py", **{**RECIPE, "epochs": args.epochs},
    )
    print(f"best epoch {rep.best_epoch}: {json.dumps(rep.metrics)}", flush=True)

    net, card = load_checkpoint(rep.model)
    prov = card.provenance.model_copy(update={"trained_on": trained_on(args.n_train), "script": "python scripts/train_starter_model.py",
                                               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    card = card.model_copy(update={"name": "nuclei", "description": DESCRIPTION, "channel_names": ["nuclei"], "tiling": TILING,
                                   "provenance": prov, "authors": ["napari-impc-dl developers"]})
    card = save_checkpoint(net, card, args.out)
    args.out.chmod(0o644)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), hash {card.short_hash}", flush=True)

    import tifffile

    from napari_impc_dl.synthetic.nuclei import make_nuclei_image

    img, lab = make_nuclei_image((1024, 1024), seed=SAMPLE_SEED)
    data = args.out.parent
    tifffile.imwrite(data / "sample_nuclei.tif", img, compression="zlib", metadata={"axes": "YX"})
    tifffile.imwrite(data / "sample_nuclei_labels.tif", lab, compression="zlib", metadata={"axes": "YX"})
    print(f"wrote sample image ({lab.max()} nuclei) in {time.time() - t0:.0f}s total", flush=True)


if __name__ == "__main__":
    main()
