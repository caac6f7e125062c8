"""Train the bundled ``nuclei`` starter model, reproducibly, on synthetic fluorescence nuclei.

    python scripts/train_starter_model.py [--out src/napari_impc_dl/data/nuclei.safetensors]

Data: ``napari_impc_dl.synthetic.make_nuclei_image`` with dataset seed 1000 (training) and
2000 (validation); the evaluation seeds used in tests and the README (e.g. 7, 42) are never used
here. Also writes the bundled sample image (seed 3000) and its ground truth. CPU, 2 threads,
about 15 minutes on the development machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_impc_dl import __version__  # noqa: E402
from napari_impc_dl.inference.instances import InstanceParams  # noqa: E402
from napari_impc_dl.models import registry  # noqa: E402
from napari_impc_dl.models.card import ModelCard, Provenance, TilingSpec  # noqa: E402
from napari_impc_dl.models.checkpoint import save_checkpoint  # noqa: E402
from napari_impc_dl.synthetic.nuclei import dataset_image_seed, make_nuclei_image  # noqa: E402
from napari_impc_dl.training.loop import TrainConfig, train_segmentation  # noqa: E402

TRAIN_SEED, VAL_SEED, SAMPLE_SEED = 1000, 2000, 3000


def dataset(seed: int, n: int, size: int):
    pairs = [make_nuclei_image((size, size), seed=dataset_image_seed(seed, i)) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "src/napari_impc_dl/data/nuclei.safetensors")
    ap.add_argument("--n-train", type=int, default=480)
    ap.add_argument("--n-val", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import tifffile
    import torch

    torch.manual_seed(0)
    t0 = time.time()
    train = dataset(TRAIN_SEED, args.n_train, 256)
    val = dataset(VAL_SEED, args.n_val, 256)
    print(f"data: {args.n_train} train / {args.n_val} val images in {time.time() - t0:.0f}s", flush=True)
    spec = registry.architecture("mobilenetv3-minimal", in_channels=1, out_channels=2)
    model = registry.build(spec)
    cfg = TrainConfig(epochs=args.epochs, batch=8, crop=128, lr=3e-3, patience=8, seed=0, threads=args.threads)
    hist = train_segmentation(model, train, val, cfg, params=InstanceParams(), progress=lambda r: print(json.dumps(r), flush=True))
    print(f"best epoch {hist.best_epoch}: val F1@0.5 = {hist.best_f1:.4f}", flush=True)
    import segmentation_models_pytorch as smp

    card = ModelCard(
        name="nuclei",
        description=(
            "Starter U-Net (MobileNetV3-small-minimal encoder, 3 stages: no squeeze-and-excitation and a 32 px receptive radius, so tiles with a 32 px halo reproduce whole-image inference exactly) for fluorescence nuclei (DAPI/Hoechst-like), 1 channel in; "
            "outputs foreground probability and a normalised distance map for seeded-watershed instance separation."
        ),
        architecture=spec,
        channel_names=["nuclei"],
        tiling=TilingSpec(tile=1152, halo=32, step=8, min_tile=32),  # fitted to 1408 px tiles on 4096^2, 1424 on 16384^2: halo ~6-9 % of the encoder, ~2-3 % of the decoder
        object_diameter_px=20.0,
        provenance=Provenance(
            trained_on=(
                f"Synthetic images only: {args.n_train} 256x256 images from napari_impc_dl.synthetic.make_nuclei_image "
                f"(dataset seed {TRAIN_SEED}): blob-like nuclei of 5-16 px radius, sparse to crowded, touching clusters, "
                "intensity heterogeneity and chromatin texture, Gaussian blur, uneven background, Poisson + read noise. "
                "Never trained on real microscopy: check it on your images before trusting counts."
            ),
            script="python scripts/train_starter_model.py",
            seed=0,
            epochs=len(hist.epochs),
            metrics={"val_f1_at_0.5": round(hist.best_f1, 4), "best_epoch": float(hist.best_epoch)},
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            software={"torch": torch.__version__, "segmentation_models_pytorch": smp.__version__, "napari_impc_dl": __version__, "python": platform.python_version()},
        ),
        authors=["napari-impc-dl developers"],
    )
    card = save_checkpoint(model, card, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), hash {card.short_hash}", flush=True)

    img, lab = make_nuclei_image((1024, 1024), seed=SAMPLE_SEED)
    data = args.out.parent
    tifffile.imwrite(data / "sample_nuclei.tif", img, compression="zlib", metadata={"axes": "YX"})
    tifffile.imwrite(data / "sample_nuclei_labels.tif", lab, compression="zlib", metadata={"axes": "YX"})
    print(f"wrote sample image ({lab.max()} nuclei) in {time.time() - t0:.0f}s total", flush=True)


if __name__ == "__main__":
    main()
