"""Build small BioImage Model Zoo packages for tests, with bioimageio.spec's own API (0.5) or as YAML (0.4).

Networks are tiny (a two-layer CNN, or smp's ``tiny`` U-Net where a library architecture is the
point), and expected test outputs are computed here independently of napari_impc_dl, with plain
numpy formulas, so ``zoo test`` passing means our pipeline reproduces them.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")

SMALLNET_SRC = '''
import os, pathlib
_mark = os.environ.get("IMPC_ZOO_TEST_MARK")
if _mark:  # proves whether this package code ever ran
    pathlib.Path(_mark).write_text("package code executed")
import torch


class SmallNet(torch.nn.Module):
    def __init__(self, cin: int = 1, cout: int = 2):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, cout, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))
'''

SMP_KWARGS = dict(encoder_name="tu-mobilenetv3_small_050", encoder_weights=None, encoder_depth=3, in_channels=1, classes=2, decoder_channels=[32, 16, 16])


def small_net(cin: int = 1, cout: int = 2, seed: int = 0):
    import torch

    ns: dict = {}
    exec(SMALLNET_SRC.replace("_mark = os.environ.get", "_mark = None and os.environ.get"), ns)
    torch.manual_seed(seed)
    return ns["SmallNet"](cin, cout).eval()


def smp_net(seed: int = 0):
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(seed)
    return smp.Unet(**SMP_KWARGS).eval()


def test_image(shape=(1, 1, 64, 80), seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    blobs = 800 * np.exp(-(((yy - shape[-2] / 2) / 12.0) ** 2 + ((xx - shape[-1] / 3) / 9.0) ** 2))
    return (rng.normal(200, 30, shape) + blobs).astype(np.float32)


def zmuv(x: np.ndarray) -> np.ndarray:
    m = x.mean(axis=(-2, -1), keepdims=True, dtype=np.float64)
    s = x.std(axis=(-2, -1), keepdims=True, dtype=np.float64)
    return ((x - m) / (s + 1e-6)).astype(np.float32)


def run_net(net, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        y = net(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return (1.0 / (1.0 + np.exp(-y))).astype(np.float32)


def _zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return out


def _common(d: Path, name: str):
    from bioimageio.spec.model.v0_5 import Author, CiteEntry, Doi, FileDescr, LicenseId

    (d / "README.md").write_text(f"# {name}\n\nA test package.\n")
    return dict(
        name=name, description=f"{name}: a test package", authors=[Author(name="Test Author")],
        cite=[CiteEntry(text="A test citation", doi=Doi("10.1234/test.5678"))], license=LicenseId("MIT"),
        documentation=FileDescr(source=d / "README.md"),
    )


def _channels_last(net):
    import torch

    class Wrap(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    return Wrap(net).eval()


def build_v05(
    folder: Path, *, kind: str = "torchscript", name: str = "pkg05", zip_it: bool = True, layout: str = "bcyx",
    size: str = "param", post: str = "sigmoid", channel_names=("foreground", "boundary"),
):
    """``layout`` ``bcyx`` or ``byxc``; ``size`` ``param`` (16 + k*8), ``fixed`` (64 x 64) or ``per_axis``
    (y: 16 + k*8, x: 24 + k*16); ``post`` ``sigmoid``, ``none`` (raw scores) or ``scale_mean_variance``
    (output matched to the input's mean and std: needs whole-output statistics)."""
    """A spec 0.5 package built with bioimageio.spec's API.

    ``kind``: ``torchscript`` (scripted SmallNet), ``state_dict`` (smp tiny U-Net, architecture from
    the library), ``arch_file`` (SmallNet state dict with its architecture in a Python file inside
    the package: needs trust), ``onnx`` (SmallNet exported to ONNX). Returns the zip (or folder) path and the network.
    """
    import torch
    from bioimageio.spec import ValidationContext, save_bioimageio_package, save_bioimageio_package_as_folder
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromFileDescr, ArchitectureFromLibraryDescr, AxisId, BatchAxis, ChannelAxis, FileDescr, Identifier,
        InputTensorDescr, ModelDescr, OutputTensorDescr, ParameterizedSize, PytorchStateDictWeightsDescr, SigmoidDescr,
        SizeReference, SpaceInputAxis, SpaceOutputAxisWithHalo, TensorId, TorchscriptWeightsDescr, Version, WeightsDescr,
        ZeroMeanUnitVarianceDescr, ZeroMeanUnitVarianceKwargs,
    )

    from bioimageio.spec.model.v0_5 import ScaleMeanVarianceDescr, ScaleMeanVarianceKwargs

    d = folder / f"{name}-src"
    d.mkdir(parents=True)
    net = smp_net() if kind == "state_dict" else small_net(cout=len(channel_names))
    x = test_image((1, 1, 64, 64) if size == "fixed" else (1, 1, 64, 88))
    with torch.inference_mode():
        logits = net(torch.from_numpy(zmuv(x))).numpy()
    if post == "sigmoid":
        y = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        postprocessing = [SigmoidDescr()]
    elif post == "none":
        y = logits.astype(np.float32)
        postprocessing = []
    else:  # (y - mean(y)) / (std(y) + eps) * (std(x) + eps) + mean(x), per channel over y, x
        m, sd = logits.mean(axis=(2, 3), keepdims=True, dtype=np.float64), logits.std(axis=(2, 3), keepdims=True, dtype=np.float64)
        y = ((logits - m) / (sd + 1e-6) * (x.std(dtype=np.float64) + 1e-6) + x.mean(dtype=np.float64)).astype(np.float32)
        postprocessing = [ScaleMeanVarianceDescr(kwargs=ScaleMeanVarianceKwargs(reference_tensor=TensorId("raw"), axes=[AxisId("y"), AxisId("x")]))]
    if layout == "byxc":
        net = _channels_last(net)
        x, y = x.transpose(0, 2, 3, 1).copy(), y.transpose(0, 2, 3, 1).copy()
    np.save(d / "in.npy", x)
    np.save(d / "out.npy", y)
    weights = {}
    if kind == "torchscript":
        torch.jit.trace(net, torch.from_numpy(np.ascontiguousarray(x))).save(str(d / "weights.torchscript"))
        weights["torchscript"] = TorchscriptWeightsDescr(source=d / "weights.torchscript", pytorch_version=Version("2.0"))
    elif kind == "onnx":
        import warnings

        from bioimageio.spec.model.v0_5 import OnnxWeightsDescr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dyn = {0: "b", 2: "h", 3: "w"} if layout == "bcyx" else {0: "b", 1: "h", 2: "w"}
            torch.onnx.export(net, torch.from_numpy(np.ascontiguousarray(x)), str(d / "weights.onnx"), dynamo=False, input_names=["raw"], output_names=["prob"], dynamic_axes={"raw": dyn, "prob": dyn}, opset_version=17)
        weights["onnx"] = OnnxWeightsDescr(source=d / "weights.onnx", opset_version=17)
    elif kind == "state_dict":
        torch.save(net.state_dict(), d / "weights.pt")
        weights["pytorch_state_dict"] = PytorchStateDictWeightsDescr(
            source=d / "weights.pt", pytorch_version=Version("2.0"),
            architecture=ArchitectureFromLibraryDescr(import_from="segmentation_models_pytorch", callable=Identifier("Unet"), kwargs=SMP_KWARGS),
        )
    elif kind == "arch_file":
        torch.save(net.state_dict(), d / "weights.pt")
        (d / "smallnet.py").write_text(SMALLNET_SRC)
        weights["pytorch_state_dict"] = PytorchStateDictWeightsDescr(
            source=d / "weights.pt", pytorch_version=Version("2.0"),
            architecture=ArchitectureFromFileDescr(source=d / "smallnet.py", callable=Identifier("SmallNet"), kwargs={"cin": 1, "cout": 2}),
        )
    else:
        raise ValueError(kind)
    if size == "fixed":
        in_space = [SpaceInputAxis(id=AxisId("y"), size=64), SpaceInputAxis(id=AxisId("x"), size=64)]
    elif size == "per_axis":
        in_space = [SpaceInputAxis(id=AxisId("y"), size=ParameterizedSize(min=16, step=8)), SpaceInputAxis(id=AxisId("x"), size=ParameterizedSize(min=24, step=16))]
    else:
        in_space = [SpaceInputAxis(id=AxisId("y"), size=ParameterizedSize(min=16, step=8)), SpaceInputAxis(id=AxisId("x"), size=ParameterizedSize(min=16, step=8))]
    with ValidationContext(perform_io_checks=False):
        descr = ModelDescr(
            **_common(d, name),
            inputs=[InputTensorDescr(
                id=TensorId("raw"),
                axes=_order([BatchAxis(), ChannelAxis(channel_names=[Identifier("nuclei")]), *in_space], layout),
                test_tensor=FileDescr(source=d / "in.npy"),
                preprocessing=[ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(axes=[AxisId("y"), AxisId("x")]))],
            )],
            outputs=[OutputTensorDescr(
                id=TensorId("prob"),
                axes=_order([BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in channel_names]),
                             SpaceOutputAxisWithHalo(id=AxisId("y"), size=SizeReference(tensor_id=TensorId("raw"), axis_id=AxisId("y")), halo=4),
                             SpaceOutputAxisWithHalo(id=AxisId("x"), size=SizeReference(tensor_id=TensorId("raw"), axis_id=AxisId("x")), halo=4)], layout),
                test_tensor=FileDescr(source=d / "out.npy"),
                postprocessing=postprocessing,
            )],
            weights=WeightsDescr(**weights),
        )
    if zip_it:
        out = folder / f"{name}.zip"
        save_bioimageio_package(descr, output_path=out)
    else:
        out = folder / name
        save_bioimageio_package_as_folder(descr, output_path=out)
    shutil.rmtree(d)
    return out, net


def _order(axes: list, layout: str) -> list:
    return axes if layout == "bcyx" else [axes[0], axes[2], axes[3], axes[1]]


def edit_rdf(folder: Path, fn) -> None:
    """Load ``folder``'s rdf.yaml, let ``fn`` change the dict, write it back."""
    import yaml

    rdf = next(p for p in (folder / "bioimageio.yaml", folder / "rdf.yaml") if p.exists())
    content = yaml.safe_load(rdf.read_text())
    fn(content)
    rdf.write_text(yaml.safe_dump(content, sort_keys=False))


def build_url_state_dict(folder: Path) -> Path:
    """Spec 0.5: torchscript on disk, pytorch_state_dict listed only by URL (as many zoo packages)."""
    f, _ = build_v05(folder, kind="torchscript", name="urlpkg", zip_it=False)

    def add(c):
        c["weights"]["pytorch_state_dict"] = {
            "source": "https://example.invalid/never/weights.pt",
            "sha256": "0" * 64,
            "architecture": {"callable": "Unet", "import_from": "segmentation_models_pytorch", "kwargs": SMP_KWARGS},
            "pytorch_version": "2.0",
        }

    edit_rdf(f, add)
    return _zip_folder(f, folder / "urlpkg.zip")


def build_tf_only(folder: Path) -> Path:
    f, _ = build_v05(folder, kind="torchscript", name="tfpkg", zip_it=False)
    (f / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n not really")

    def swap(c):
        c["weights"] = {"keras_hdf5": {"source": "model.h5", "tensorflow_version": "2.15"}}

    edit_rdf(f, swap)
    for p in f.glob("*.torchscript"):
        p.unlink()
    return _zip_folder(f, folder / "tfpkg.zip")


def build_v04(folder: Path, name: str = "pkg04") -> Path:
    """A spec 0.4 package written as YAML: scale_range per sample (percentiles), sigmoid, torchscript."""
    import torch

    d = folder / name
    d.mkdir(parents=True)
    net = small_net(seed=3)
    x = test_image((1, 1, 72, 64), seed=5)
    torch.jit.trace(net, torch.from_numpy(x)).save(str(d / "model.pt"))
    lo, hi = np.percentile(x, [2.0, 99.5], axis=(-2, -1), keepdims=True)
    xn = ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)
    np.save(d / "test_input.npy", x)
    np.save(d / "test_output.npy", run_net(net, xn))
    (d / "README.md").write_text("# old\n")
    (d / "rdf.yaml").write_text(
        f"""format_version: 0.4.10
type: model
name: {name}
description: a spec 0.4 test package
authors: [{{name: Test Author}}]
cite: [{{text: A test citation, doi: 10.1234/test.5678}}]
license: MIT
documentation: README.md
tags: [test]
timestamp: 2021-01-01T00:00:00
test_inputs: [test_input.npy]
test_outputs: [test_output.npy]
inputs:
  - name: input0
    axes: bcyx
    data_type: float32
    data_range: [-.inf, .inf]
    shape: {{min: [1, 1, 16, 16], step: [0, 0, 8, 8]}}
    preprocessing:
      - name: scale_range
        kwargs: {{mode: per_sample, axes: xy, min_percentile: 2.0, max_percentile: 99.5}}
outputs:
  - name: output0
    axes: bcyx
    data_type: float32
    data_range: [0, 1]
    shape: {{reference_tensor: input0, scale: [1, 0, 1, 1], offset: [0, 1, 0, 0]}}
    halo: [0, 0, 4, 4]
    postprocessing:
      - name: sigmoid
weights:
  torchscript:
    source: model.pt
    pytorch_version: "1.13"
"""
    )
    return d / "rdf.yaml"


def build_starter_variant(folder: Path, variant: str) -> Path:
    """Our nuclei starter as a package shaped like most Model Zoo U-Nets (spec 0.5 zip in ``folder``).

    ``variant``: ``foreground`` (the distance head dropped: one ``foreground`` channel) or
    ``boundary`` (the distance head turned into a ``boundary`` channel: the last convolution's
    distance output negated and shifted, so boundary < 0.5 exactly where distance > 0.25; the
    interiors of foreground + boundary models). Both keep a genuine smp U-Net, so the package has
    torchscript and state-dict weights like our own export.
    """
    import torch

    from napari_impc_dl.models.checkpoint import load_checkpoint
    from napari_impc_dl.presets import preset_path
    from napari_impc_dl.zoo.export import DEFAULT_CITES, _save, _write_unet_files

    net, card = load_checkpoint(preset_path("nuclei"), device="cpu")
    conv = net.segmentation_head[0]
    with torch.no_grad():
        if variant == "foreground":
            new = torch.nn.Conv2d(conv.in_channels, 1, conv.kernel_size, padding=conv.padding)
            new.weight.copy_(conv.weight[:1])
            new.bias.copy_(conv.bias[:1])
            names = ["foreground"]
        elif variant == "boundary":
            new = torch.nn.Conv2d(conv.in_channels, 2, conv.kernel_size, padding=conv.padding)
            shift = float(np.log(0.25 / 0.75))  # logit(0.25): boundary = sigmoid(logit(0.25) - distance logit)
            new.weight.copy_(torch.cat([conv.weight[:1], -conv.weight[1:2]]))
            new.bias.copy_(torch.stack([conv.bias[0], shift - conv.bias[1]]))
            names = ["foreground", "boundary"]
        else:
            raise ValueError(variant)
    net.segmentation_head[0] = new
    card = card.model_copy(update={
        "name": f"nuclei-{variant}", "output_names": names,
        "architecture": card.architecture.model_copy(update={"out_channels": len(names)}),
    })
    d = folder / f"nuclei-{variant}-src"
    d.mkdir(parents=True)
    descr = _write_unet_files(net.eval(), card, d, card.name, f"The nuclei starter with a {variant} output only (a test package)", ["Test Author"], "MIT", DEFAULT_CITES, [])
    out = folder / f"nuclei-{variant}.zip"
    _save(descr, out)
    shutil.rmtree(d)
    return out
