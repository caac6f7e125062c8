"""A BioImage Model Zoo U-Net package on a 2048 x 2048 image: our tiled engine against bioimageio.core.predict.

    python benchmarks/bench_zoo.py [--size 2048] [--block 512] [--weights pytorch_state_dict] [--repeat 1]

Builds (in a temporary folder, with bioimageio.spec's API) a spec 0.5 package: a
segmentation-models-pytorch U-Net (ResNet-18 encoder, 3 stages, random weights), both
``pytorch_state_dict`` and ``torchscript`` weights, per-sample ``zero_mean_unit_variance``
preprocessing, ``sigmoid`` postprocessing, output halo 72. Its receptive field reaches 65 px up/left
and 57 px down/right of a pixel, so with a 72 px halo every output pixel away from the image border
sees all the context it depends on in both tools; with 544 px blocks both tools' tiles start on
multiples of the network's stride (8): the outputs must agree to float rounding there. (A halo
smaller than the receptive field, or tiles off the stride grid, give differences of ~1e-3.)

Both tools run the same weights format, the same block shape (``--block`` square, halo included:
bioimageio.core's ``input_block_shape``; ours ``fixed`` tile side) and the same halo, on the same
float32 image, float32 outputs (the package's own output, ``mode="raw"``). Timed: prediction of
the whole image including preprocessing statistics and postprocessing, model loading excluded.
The last line printed is one JSON object:

    ours_s, core_s, speedup (= core_s / ours_s), max_abs_diff (away from a --margin px border),
    tiles_ours, blocks_core, block, halo, size, weights, device, threads
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")

KW = dict(encoder_name="resnet18", encoder_weights=None, encoder_depth=3, in_channels=1, classes=2, decoder_channels=[64, 32, 16])
HALO = 72


def build_package(folder: Path) -> Path:
    import segmentation_models_pytorch as smp
    import torch
    from bioimageio.spec import ValidationContext, save_bioimageio_package
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromLibraryDescr, Author, AxisId, BatchAxis, ChannelAxis, CiteEntry, Doi, FileDescr, Identifier,
        InputTensorDescr, LicenseId, ModelDescr, OutputTensorDescr, ParameterizedSize, PytorchStateDictWeightsDescr,
        SigmoidDescr, SizeReference, SpaceInputAxis, SpaceOutputAxisWithHalo, TensorId, TorchscriptWeightsDescr, Version,
        WeightsDescr, ZeroMeanUnitVarianceDescr, ZeroMeanUnitVarianceKwargs,
    )

    torch.manual_seed(0)
    net = smp.Unet(**KW).eval()
    d = folder / "src"
    d.mkdir()
    x = np.random.default_rng(0).normal(100, 10, (1, 1, 256, 256)).astype(np.float32)
    xn = ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)
    with torch.inference_mode():
        y = torch.sigmoid(net(torch.from_numpy(xn))).numpy()
    np.save(d / "in.npy", x)
    np.save(d / "out.npy", y)
    torch.save(net.state_dict(), d / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, torch.from_numpy(xn)).save(str(d / "weights.torchscript"))
    (d / "README.md").write_text("# benchmark U-Net\n")
    tin = TensorId("raw")
    with ValidationContext(perform_io_checks=False):
        descr = ModelDescr(
            name="bench-unet-resnet18", description="benchmark U-Net (random weights)", authors=[Author(name="bench")],
            cite=[CiteEntry(text="U-Net", doi=Doi("10.1007/978-3-319-24574-4_28"))], license=LicenseId("MIT"),
            documentation=FileDescr(source=d / "README.md"),
            inputs=[InputTensorDescr(
                id=tin, test_tensor=FileDescr(source=d / "in.npy"),
                axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("raw")]),
                      SpaceInputAxis(id=AxisId("y"), size=ParameterizedSize(min=256, step=8)),
                      SpaceInputAxis(id=AxisId("x"), size=ParameterizedSize(min=256, step=8))],
                preprocessing=[ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(axes=[AxisId("y"), AxisId("x")]))],
            )],
            outputs=[OutputTensorDescr(
                id=TensorId("prob"), test_tensor=FileDescr(source=d / "out.npy"),
                axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("foreground"), Identifier("distance")]),
                      SpaceOutputAxisWithHalo(id=AxisId("y"), size=SizeReference(tensor_id=tin, axis_id=AxisId("y")), halo=HALO),
                      SpaceOutputAxisWithHalo(id=AxisId("x"), size=SizeReference(tensor_id=tin, axis_id=AxisId("x")), halo=HALO)],
                postprocessing=[SigmoidDescr()],
            )],
            weights=WeightsDescr(
                pytorch_state_dict=PytorchStateDictWeightsDescr(
                    source=d / "weights.pt", pytorch_version=Version("2.0"),
                    architecture=ArchitectureFromLibraryDescr(import_from="segmentation_models_pytorch", callable=Identifier("Unet"), kwargs=KW),
                ),
                torchscript=TorchscriptWeightsDescr(source=d / "weights.torchscript", pytorch_version=Version("2.0")),
            ),
        )
    out = folder / "bench-unet.zip"
    save_bioimageio_package(descr, output_path=out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--block", type=int, default=544)
    ap.add_argument("--weights", default="pytorch_state_dict", choices=["pytorch_state_dict", "torchscript"])
    ap.add_argument("--margin", type=int, default=HALO, help="border excluded from the comparison (px)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs for each tool")
    args = ap.parse_args()

    import torch
    from loguru import logger

    logger.disable("bioimageio")
    from bioimageio.core import create_prediction_pipeline, load_description, predict

    from napari_impc_dl.synthetic import make_nuclei_image
    from napari_impc_dl.zoo.adapter import load_package, predict_image, with_tiling

    work = Path(tempfile.mkdtemp(prefix="bench-zoo-"))
    os.environ.setdefault("NAPARI_IMPC_DL_HOME", str(work / "home"))
    try:
        pkg = build_package(work)
        img, _ = make_nuclei_image((args.size, args.size), seed=11, density=0.3)
        img = img.astype(np.float32)

        ours = with_tiling(load_package(pkg, mode="raw", weights=args.weights, device="cpu"), fixed=args.block, halo=HALO)
        predict_image(ours, img[:, :256, :256] if img.ndim == 3 else img[:256, :256], batch=args.batch)  # warm-up
        t_ours, a = float("inf"), None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            a = predict_image(ours, img, batch=args.batch)
            t_ours = min(t_ours, time.perf_counter() - t0)

        descr = load_description(pkg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp = create_prediction_pipeline(descr, weight_format=args.weights, devices=["cpu"])
            shape = {"raw": {"batch": 1, "channel": 1, "y": args.block, "x": args.block}}
            predict(model=pp, inputs={"raw": img[None, None, :256, :256]}, input_block_shape={"raw": {"batch": 1, "channel": 1, "y": 256, "x": 256}})  # warm-up
            t_core, b = float("inf"), None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = predict(model=pp, inputs={"raw": img[None, None]}, input_block_shape=shape)
                t_core = min(t_core, time.perf_counter() - t0)
                b = res.members["prob"].data.to_numpy()[0]
        m = args.margin
        diff = float(np.abs(a[:, m:-m, m:-m] - b[:, m:-m, m:-m]).max())
        inner = args.block - 2 * HALO
        blocks_core = (-(-args.size // inner)) ** 2
        from napari_impc_dl.inference.tiling import plan_tiles

        tiles_ours = len(plan_tiles((args.size, args.size), args.block, HALO, step=8, min_tile=256, fixed=args.block).tiles)
        result = {
            "ours_s": round(t_ours, 3), "core_s": round(t_core, 3), "speedup": round(t_core / t_ours, 3), "max_abs_diff": diff,
            "margin": m, "tiles_ours": tiles_ours, "blocks_core": blocks_core, "block": args.block, "halo": HALO, "size": args.size,
            "weights": args.weights, "batch": args.batch, "device": "cpu", "threads": torch.get_num_threads(),
        }
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
