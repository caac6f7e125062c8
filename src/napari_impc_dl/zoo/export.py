"""Our checkpoints and bundled presets -> BioImage Model Zoo packages (spec 0.5).

A U-Net package holds what bioimageio.core's ``test_model`` needs, offline:

* ``weights.pt`` (``pytorch_state_dict``: tensors only; architecture
  ``segmentation_models_pytorch.Unet`` with our registry's keyword arguments) and
  ``weights.torchscript`` (traced; checked at a second size against the eager network);
* ``test_input.npy`` (a synthetic nuclei image of the model's channel count) and
  ``test_output.npy`` (the package's own prediction of it);
* ``cover.png`` (2:1: the test input, and the foreground probability over it), ``README.md``
  (intended use, training data, metrics, limits, how to run it, from the card's provenance);
* preprocessing that reproduces ours: ``scale_range`` per sample and channel (our
  percentile normalisation: ``(x - p_low) / (p_high - p_low)``, spec ``eps`` 1e-6), and
  postprocessing ``sigmoid`` (the network outputs logits, as our checkpoints do);
* ``config.napari_impc_dl.card``: our full card, so an import restores tile size, halo and the
  instance-postprocessing defaults, and tags.

Classifier checkpoints (``task == "classification"``) get their own files and description
(:mod:`.export_classifier`: fixed-size input, class probabilities with ``softmax``, a timm
architecture). The model may also be given as a training folder (its ``model.safetensors``).

After writing, the package is opened again with our own loader and its test re-run with both
weight formats; an export that would not reproduce itself is not written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

DEFAULT_CITES = [
    ("Ronneberger, Fischer, Brox (2015): U-Net: Convolutional Networks for Biomedical Image Segmentation", "10.1007/978-3-319-24574-4_28"),
    ("Iakubovskii (2019): Segmentation Models Pytorch", "https://github.com/qubvel-org/segmentation_models.pytorch"),
]


@dataclass
class ExportReport:
    path: Path
    name: str
    formats: list[str]
    test_max_abs_diff: dict
    size_bytes: int


def _parse_cite(text: str) -> tuple[str, str]:
    """``"TEXT | DOI_OR_URL"``, or a text containing a DOI (``10.xxxx/...``) or a URL."""
    if "|" in text:
        t, ref = (s.strip() for s in text.split("|", 1))
        return t or ref, ref
    m = re.search(r"(https?://\S+)", text) or re.search(r"(10\.\d{4,9}/\S+)", text)
    if not m:
        raise InputError(f"Citation '{text}' has no DOI or URL", "Write --cite 'TEXT | DOI_OR_URL', e.g. --cite 'Smith et al. 2024 | 10.1234/abcd'")
    return text.strip(), m.group(1).rstrip(".,;)")


def _cite_entry(text: str, ref: str):
    from bioimageio.spec.model.v0_5 import CiteEntry, Doi, HttpUrl

    ref = ref.strip()
    if ref.lower().startswith("doi:"):
        ref = ref[4:]
    if ref.startswith("https://doi.org/"):
        ref = ref[len("https://doi.org/"):]
    if re.match(r"^10\.\d{4,9}/", ref):
        return CiteEntry(text=text, doi=Doi(ref))
    return CiteEntry(text=text, url=HttpUrl(ref))


def _pytorch_version() -> str:
    import torch

    return re.match(r"\d+\.\d+(\.\d+)?", torch.__version__).group(0)


def _test_image(card, size: int, seed: int = 20240601) -> np.ndarray:
    from ..synthetic import make_nuclei_image

    img, _ = make_nuclei_image((size, size), seed=seed, density=0.25)
    img = img.astype(np.float32)
    chans = [img]
    for c in range(1, card.architecture.in_channels):  # extra channels: the same nuclei, other gains and noise
        rng = np.random.default_rng(seed + c)
        chans.append((img * (0.5 + 0.4 * c) + rng.normal(0, 20, img.shape)).astype(np.float32))
    return np.stack(chans)[None]  # (1, C, H, W)


def _cover(x: np.ndarray, p: np.ndarray, path: Path) -> None:
    """2:1 PNG: the input (percentile-scaled) and the foreground probability in magenta over it."""
    from PIL import Image

    g = x[0, 0].astype(np.float64)
    lo, hi = np.percentile(g, [1, 99.8])
    g = np.clip((g - lo) / max(hi - lo, 1e-9), 0, 1)
    f = np.clip(p[0, 0], 0, 1)
    left = np.stack([g, g, g], -1)
    right = np.stack([0.55 * g + 0.45 * f, 0.55 * g, 0.55 * g + 0.45 * f], -1)
    img = (np.concatenate([left, right], 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(img).resize((512, 256), Image.BILINEAR).save(path, optimize=True)


def _readme(card, name: str, description: str, authors: list[str], size: int) -> str:
    prov = card.provenance
    t = card.tiling
    lines = [
        f"# {name}", "", description or card.description or "", "",
        "Exported by [napari-impc-dl](https://github.com/) from its checkpoint format; runs in napari-impc-dl, "
        "bioimageio.core and other BioImage Model Zoo consumers.", "",
        "## What it does", "",
        f"A 2D U-Net (segmentation-models-pytorch `Unet`, encoder `{card.architecture.encoder}`) for instance segmentation "
        f"of {', '.join(card.channel_names)} images. It outputs two maps per pixel: **foreground** probability and a "
        "normalised **distance** to the object's edge (1 at the centre). Instances come from a seeded watershed: seeds "
        f"where distance > {card.instances.seed_threshold}, flooded inside foreground > {card.instances.foreground_threshold}, "
        f"objects under {card.instances.min_size} px dropped"
        + (f", then neighbours whose shared border has a mean distance above {card.instances.merge_threshold} joined (one object cut in two"
           + (f"; only where the joined object fills at least {card.instances.merge_min_solidity} of its convex hull"
              if card.instances.merge_min_solidity is not None else "") + ")"
           if card.instances.merge_threshold is not None else "")
        + " (napari-impc-dl does this; other tools give the two maps).", "",
        "## Input and preprocessing", "",
        f"- {card.architecture.in_channels} channel(s): {', '.join(card.channel_names)}; any 2D size of "
        f"{t.min_tile} + k x {t.step} pixels (tile larger images; recommended tile {t.tile} px, halo {t.halo} px).",
        f"- Per image and channel: `(x - p{card.normalization.low:g}) / (p{card.normalization.high:g} - p{card.normalization.low:g})` "
        "(spec `scale_range`, percentiles over the whole image).", "",
        "## Training data", "",
        prov.trained_on or "Not recorded in the checkpoint.", "",
    ]
    if prov.script or prov.epochs or prov.seed is not None:
        lines += [f"- script: `{prov.script}`" if prov.script else "", f"- epochs: {prov.epochs}" if prov.epochs else "", f"- seed: {prov.seed}" if prov.seed is not None else "", ""]
    lines += ["## Metrics", ""]
    if prov.metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in sorted(prov.metrics.items())] + [""]
    else:
        lines += ["No validation metrics were recorded with this checkpoint.", ""]
    lines += ["## Limits", ""]
    lim = []
    if "synthetic" in (prov.trained_on or "").lower():
        lim.append("Trained on synthetic images only: check it on your own images (e.g. against a few hand-drawn masks) before trusting counts.")
    if card.pixel_size_um:
        lim.append(f"Trained at {card.pixel_size_um:g} µm/pixel; rescale images with very different pixel sizes.")
    if card.object_diameter_px:
        lim.append(f"Typical object diameter in training data: {card.object_diameter_px:g} px; much larger or smaller objects segment worse.")
    lim.append("2D only; stacks are segmented plane by plane. Touching objects larger than the postprocessing halo may be split at block borders.")
    lines += [f"- {x}" for x in lim] + [""]
    lines += [
        "## How to run", "",
        "```bash", "napari-impc-dl zoo import this_package.zip", f"napari-impc-dl segment images/*.tif --model {re.sub(r'[^a-z0-9_-]+', '-', name.lower()).strip('-')} --out results/", "```", "",
        "or with bioimageio.core: `bioimageio predict this_package.zip ...` (gives the two maps).", "",
        "## Provenance", "",
        f"- weights sha256 (napari-impc-dl card): `{card.weights_sha256}`",
        f"- created: {prov.created or 'unknown'}; software: {', '.join(f'{k} {v}' for k, v in prov.software.items()) or 'unknown'}",
        f"- authors: {'; '.join(authors)}", "",
    ]
    return "\n".join(line for line in lines if line is not None) + "\n"


def export_package(
    model,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | None = None,
    license: str | None = None,
    cite: list[str] | None = None,
    tags: list[str] | None = None,
    check: bool = True,
) -> ExportReport:
    """Export a preset name, a checkpoint or a training folder (segmentation U-Net or classifier) as a spec 0.5 zip at ``out``."""
    from ..classify.loading import checkpoint_path
    from ..models.checkpoint import load_checkpoint
    from ..presets import PRESETS, preset_path

    ref = str(model)
    path = preset_path(ref) if ref.strip().lower() in PRESETS else checkpoint_path(ref)
    if not path.is_file():
        raise InputError(f"Model '{ref}' is neither a bundled preset, a checkpoint file nor a training folder", f"Use one of {', '.join(PRESETS)}, a .safetensors checkpoint or the folder `train` wrote")
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise InputError(f"Output '{out}' must end in .zip", "e.g. --out my-model.zip")
    if not out.parent.exists():
        raise InputError(f"Folder '{out.parent}' does not exist", "Create it first")
    net, card = load_checkpoint(path, device="cpu")
    if card.task == "semantic":
        raise InputError(f"'{path}' is a semantic model ({', '.join(card.output_names)}); Model Zoo export covers instance segmentation and classifiers", "Share the checkpoint itself: it runs wherever napari-impc-dl is installed")
    is_cls = card.task == "classification"
    name = (name or card.name).strip()
    description = (description if description is not None else card.description or f"napari-impc-dl {card.task} model").strip()
    authors = [a.strip() for s in (authors or card.authors or []) for a in s.split(";") if a.strip()]
    if not authors:
        raise InputError("A package needs at least one author", "Give --authors 'First Last' (several: --authors 'A B' 'C D')")
    license = (license or card.license or "").strip()
    if is_cls:
        from .export_classifier import classifier_cites

        cites = [_parse_cite(c) for c in (cite or [])] + classifier_cites(card)
    else:
        cites = [_parse_cite(c) for c in (cite or [])] + DEFAULT_CITES

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent.absolute()))  # absolute: bioimageio resolves relative sources against the package
    try:
        d = staging / "pkg"
        d.mkdir()
        net = net.eval()
        if is_cls:
            from .export_classifier import write_classifier_files

            descr = write_classifier_files(net, card, d, name, description, authors, license, cites, tags)
        else:
            descr = _write_unet_files(net, card, d, name, description, authors, license, cites, tags)
        tmp_zip = staging / "package.zip"
        _save(descr, tmp_zip)
        diffs = {}
        if check:
            from .conformance.test import run_test

            for fmt in ("torchscript", "pytorch_state_dict"):
                rep = run_test(tmp_zip, weights=fmt, cache_dir=staging / "check")
                if not rep.passed:
                    raise InputError(f"The exported package does not reproduce its own test output with {fmt} weights ({rep.lines()[-1]})", "Please report this as a bug")
                diffs[fmt] = max(o.max_abs_diff for o in rep.outputs)
        os.replace(tmp_zip, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportReport(path=out, name=name, formats=["torchscript", "pytorch_state_dict"], test_max_abs_diff=diffs, size_bytes=out.stat().st_size)


def _write_unet_files(net, card, d: Path, name, description, authors, license, cites, tags):
    """Weights, test tensors, cover and README of a U-Net package in ``d``; returns its description."""
    import torch

    from ..models.registry import smp_kwargs

    t = card.tiling
    size = t.min_tile + max(0, -(-(256 - t.min_tile) // t.step)) * t.step  # a valid size >= 256
    x = _test_image(card, size)
    np.save(d / "test_input.npy", x)
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, d / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.from_numpy(np.zeros_like(x)), check_trace=False)
        traced.save(str(d / "weights.torchscript"))
        # a trace may bake in shapes: check it at another valid size
        other = torch.randn(1, card.architecture.in_channels, t.min_tile + 3 * t.step, t.min_tile + 5 * t.step)
        with torch.inference_mode():
            diff = float((traced(other) - net(other)).abs().max())
    if diff > 1e-4:
        raise InputError(f"The traced network differs from the original at another input size (max difference {diff:.2g})", "This architecture cannot be exported as torchscript")
    # the package's prediction of its test input, computed exactly as the package describes it
    from . import processing as P

    pre = [P.EnsureDtype("ensure_dtype", "input", dtype="float32"), P.ScaleRange("scale_range", "input", axes=("y", "x"), min_percentile=card.normalization.low, max_percentile=card.normalization.high)]
    dims = ("batch", "channel", "y", "x")
    stats = P.compute_stats(P.measures_of(pre), {"input": (x, dims)})
    xin = P.apply_ops(pre, x, dims, stats).astype(np.float32)
    with torch.inference_mode():
        logits = net(torch.from_numpy(xin)).numpy()
    y = P.Sigmoid("sigmoid", "output")(logits, dims, {}).astype(np.float32)
    np.save(d / "test_output.npy", y)
    _cover(x, y, d / "cover.png")
    (d / "README.md").write_text(_readme(card, name, description, authors, size), encoding="utf-8")
    return _descr(card, d, name, description, authors, license, cites, tags, smp_kwargs(card.architecture))


def model_descr(card, d: Path, *, name, description, authors, license, cites, tags, architecture: tuple[str, str, dict], tensors):
    """The spec 0.5 ``ModelDescr`` of the package files in ``d``, built inside one validation context.

    What every export shares is here: name, description, authors, citations, licence, README, cover,
    tags, our card in ``config``, and the two weight formats (``weights.pt`` built by
    ``architecture = (import_from, callable, kwargs)``, and ``weights.torchscript``). ``tensors(f)``
    returns ``(inputs, outputs)``; ``f(name)`` is the :class:`FileDescr` of a file in ``d`` with its sha256.
    """
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromLibraryDescr, Author, FileDescr, Identifier, LicenseId, ModelDescr, PytorchStateDictWeightsDescr,
        Sha256, TorchscriptWeightsDescr, Version, WeightsDescr,
    )
    from pydantic import ValidationError

    from .package import sha256_file

    def f(fname: str) -> FileDescr:  # every file with its sha256, so consumers can check integrity
        return FileDescr(source=d / fname, sha256=Sha256(sha256_file(d / fname)))

    ver = Version(_pytorch_version())
    import_from, call, kwargs = architecture
    config = {"napari_impc_dl": {"card": card.model_dump(mode="json"), "exported_by": f"napari-impc-dl {__import__('napari_impc_dl').__version__}"}}
    try:
        with ValidationContext(perform_io_checks=False, root=d):
            inputs, outputs = tensors(f)
            return ModelDescr(
                name=name,
                description=description[:1024],
                authors=[Author(name=a) for a in authors],
                cite=[_cite_entry(tx, ref) for tx, ref in cites],
                license=LicenseId(license),
                documentation=f("README.md"),
                covers=[f("cover.png")],
                tags=list(dict.fromkeys(tags)),
                inputs=inputs,
                outputs=outputs,
                weights=WeightsDescr(
                    pytorch_state_dict=PytorchStateDictWeightsDescr(
                        source=d / "weights.pt", sha256=Sha256(sha256_file(d / "weights.pt")), pytorch_version=ver,
                        architecture=ArchitectureFromLibraryDescr(import_from=import_from, callable=Identifier(call), kwargs=kwargs),
                    ),
                    torchscript=TorchscriptWeightsDescr(source=d / "weights.torchscript", sha256=Sha256(sha256_file(d / "weights.torchscript")), pytorch_version=ver, parent="pytorch_state_dict"),
                ),
                config=config,
            )
    except ValidationError as exc:
        e = exc.errors()[0]
        raise InputError(f"The package description is invalid: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}", "Check --name, --license (an SPDX id such as MIT or CC-BY-4.0), --cite and --authors") from None


def _descr(card, d: Path, name, description, authors, license, cites, tags, arch_kwargs):
    from bioimageio.spec.model.v0_5 import (
        AxisId, BatchAxis, ChannelAxis, Identifier, InputTensorDescr, IntervalOrRatioDataDescr, OutputTensorDescr, ParameterizedSize,
        ScaleRangeDescr, ScaleRangeKwargs, SigmoidDescr, SizeReference, SpaceInputAxis, SpaceOutputAxisWithHalo, TensorId,
    )

    t = card.tiling
    halo = max(0, min(t.halo, (t.min_tile - 1) // 2))
    tin, tout = TensorId("input"), TensorId("probabilities")
    tag_list = ["napari-impc-dl", "unet", "pytorch", "2d", "segmentation", "instance-segmentation", "fluorescence-light-microscopy", *[c.lower() for c in card.channel_names], *(tags or [])]

    def tensors(f):
        inputs = [InputTensorDescr(
            id=tin,
            description=f"{card.architecture.in_channels}-channel 2D image ({', '.join(card.channel_names)})",
            axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(_ident(c)) for c in card.channel_names]),
                  SpaceInputAxis(id=AxisId("y"), size=ParameterizedSize(min=t.min_tile, step=t.step)),
                  SpaceInputAxis(id=AxisId("x"), size=ParameterizedSize(min=t.min_tile, step=t.step))],
            test_tensor=f("test_input.npy"),
            data=IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=[AxisId("y"), AxisId("x")], min_percentile=card.normalization.low, max_percentile=card.normalization.high))],
        )]
        outputs = [OutputTensorDescr(
            id=tout,
            description="per-pixel probabilities: foreground, and the normalised distance to the object's edge",
            axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(_ident(c)) for c in card.output_names]),
                  SpaceOutputAxisWithHalo(id=AxisId("y"), size=SizeReference(tensor_id=tin, axis_id=AxisId("y")), halo=halo),
                  SpaceOutputAxisWithHalo(id=AxisId("x"), size=SizeReference(tensor_id=tin, axis_id=AxisId("x")), halo=halo)],
            test_tensor=f("test_output.npy"),
            data=IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=[SigmoidDescr()],
        )]
        return inputs, outputs

    return model_descr(card, d, name=name, description=description, authors=authors, license=license, cites=cites, tags=tag_list,
                       architecture=("segmentation_models_pytorch", "Unet", arch_kwargs), tensors=tensors)


def _ident(s: str) -> str:
    v = re.sub(r"[^A-Za-z0-9_]+", "_", s).strip("_")
    return v if v and not v[0].isdigit() else f"c_{v}"


def _save(descr, path: Path) -> None:
    from bioimageio.spec import save_bioimageio_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_bioimageio_package(descr, output_path=path)
