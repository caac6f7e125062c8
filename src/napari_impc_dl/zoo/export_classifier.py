"""The classifier half of :func:`~napari_impc_dl.zoo.export.export_package`: a classification checkpoint as spec 0.5 files.

The package (what bioimageio.core's ``test_model`` needs, offline):

* input ``input``: axes batch, channel, y, x with the **fixed** size ``input_size``;
  image level: the plane resized to the square under the card's rule (``pad | crop | stretch``),
  preprocessing ``scale_range`` per sample and channel over ``y, x`` (our percentile
  normalisation of the prepared square, exactly); object level: the **prepared crop batch**
  (windows cut around each object from the image already normalised with whole-image
  percentiles, plus the mask channel when the card says so), preprocessing ``ensure_dtype`` only;
* output ``probabilities``: axes batch and channel (one channel per class, the class names as
  identifiers), postprocessing ``softmax`` over the channel (the network outputs logits);
* weights ``pytorch_state_dict`` (architecture ``timm.create_model`` with our registry's keyword
  arguments, ``pretrained=False``: built offline, without ``--trust-code``) and ``torchscript``
  (traced; checked at another batch size against the eager network);
* test tensors made by the code ``classify`` runs: image level two synthetic X-ray-like views
  (portrait, so the resize rule matters), prepared as :meth:`ClassifierModel.prepare_image` does
  but before the percentiles; object level the first crops of a synthetic shapes image from
  :func:`~napari_impc_dl.classify.crops.iter_crop_batches`; the expected output is the
  package's own prediction of them;
* ``cover.png`` (the test inputs with their class probabilities), ``README.md`` (classes, level,
  input preparation, the training figures of ``card.provenance.metrics``), tags and
  ``config.napari_impc_dl.card`` (an import recognises our own packages).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError

TIMM_CITE = ("Wightman (2019): PyTorch Image Models", "https://github.com/huggingface/pytorch-image-models")
#: timm model name prefix -> the architecture's paper
ARCH_CITES = {
    "resnet": ("He, Zhang, Ren, Sun (2016): Deep Residual Learning for Image Recognition", "https://arxiv.org/abs/1512.03385"),
    "efficientnet": ("Tan, Le (2019): EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", "https://arxiv.org/abs/1905.11946"),
    "mobilenetv3": ("Howard et al. (2019): Searching for MobileNetV3", "https://arxiv.org/abs/1905.02244"),
    "vgg": ("Simonyan, Zisserman (2015): Very Deep Convolutional Networks for Large-Scale Image Recognition", "https://arxiv.org/abs/1409.1556"),
}
TEST_SEED = 20240601


def classifier_cites(card) -> list[tuple[str, str]]:
    """The default citations of a classifier: its architecture's paper (when known) and timm."""
    from ..models.classifiers import CLASSIFIERS

    timm_name = CLASSIFIERS.get(card.architecture.encoder, "")
    arch = next((c for prefix, c in ARCH_CITES.items() if timm_name.startswith(prefix)), None)
    return ([arch] if arch else []) + [TIMM_CITE]


def identifiers(names: list[str]) -> list[str]:
    """Spec identifiers for ``names`` (channel and class names), unique."""
    from .export import _ident

    out: list[str] = []
    for n in names:
        v, k = _ident(n), 1
        while v in out:
            k += 1
            v = f"{_ident(n)}_{k}"
        out.append(v)
    return out


def _channels(img: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``(n, H, W)`` float32 from a one-channel image: extra channels are the same scene, other gains and noise."""
    img = img.astype(np.float32)
    chans = [img]
    for c in range(1, n):
        rng = np.random.default_rng(seed + c)
        chans.append((img * (0.5 + 0.4 * c) + rng.normal(0, 20, img.shape)).astype(np.float32))
    return np.stack(chans)


def _source(arr: np.ndarray, name: str):
    from ..io.image import ImageSource

    return ImageSource.from_array(arr if arr.shape[0] > 1 else arr[0], name=name, channel_axis=0 if arr.shape[0] > 1 else None)


def image_test_input(card) -> np.ndarray:
    """Two synthetic views (dorsoventral, lateral) as the package's raw input ``(2, C, S, S)``: read and resized as ``classify`` does."""
    from ..classify.resize import read_plane, resize_square
    from ..synthetic.views import VIEWS, make_view_image

    spec = card.classification
    S = spec.input_size
    n = min(1024, max(64, 2 * S))
    out = []
    for i, view in enumerate(VIEWS):
        img = make_view_image(view, n, TEST_SEED + i)[:, n // 8 : n - n // 8]  # portrait: the resize rule matters
        src = _source(_channels(img, spec.image_channels, TEST_SEED + i), f"test-{view}")
        out.append(resize_square(read_plane(src, (), None, target=S), S, spec.resize))
    return np.stack(out).astype(np.float32)


def object_test_input(clf, n_crops: int = 4) -> np.ndarray:
    """The first crops of a synthetic shapes image ``(B, C', S, S)``, cut and normalised as ``classify_objects`` does with ``clf``."""
    from ..classify.crops import iter_crop_batches
    from ..synthetic.shapes import make_shapes_image

    card = clf.card
    spec = card.classification
    side = max(256, min(512, 2 * spec.crop.side)) if spec.crop.mode == "fixed" else 256  # 8 to 13 objects
    img, labels, _ = make_shapes_image((side, side), TEST_SEED)
    src = _source(_channels(img, spec.image_channels, TEST_SEED), "test-shapes")
    normalize = clf.fit_normalizer(src.sample(()))

    def read(ys, xs):
        return src.read((), ys, xs)

    got: list[np.ndarray] = []
    for _, crops in iter_crop_batches(read, labels, src.spatial_shape, spec.crop, spec.input_size, normalize=normalize, batch=n_crops):
        got.append(crops)
        if sum(len(c) for c in got) >= n_crops:
            break
    if not got:
        raise InputError("The synthetic test image has no objects", "Please report this as a bug")
    return np.concatenate(got)[:n_crops]


def write_classifier_files(net, card, d: Path, name, description, authors, license, cites, tags):
    """Weights, test tensors, cover and README of a classifier package in ``d``; returns its description."""
    import torch

    from . import processing as P
    from ..classify.runnable import ClassifierModel
    from ..models.classifiers import timm_kwargs

    spec = card.classification
    x = image_test_input(card) if spec.level == "image" else object_test_input(ClassifierModel(net, card))
    if x.shape[1] != card.architecture.in_channels:
        raise InputError(f"The classifier takes {card.architecture.in_channels} channels but its card prepares {x.shape[1]}", "The checkpoint's card is inconsistent; re-train or re-export it")
    np.save(d / "test_input.npy", x)
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, d / "weights.pt")
    dims = ("batch", "channel", "y", "x")
    pre = [P.EnsureDtype("ensure_dtype", "input", dtype="float32")]
    if spec.level == "image":
        n = card.normalization
        pre.append(P.ScaleRange("scale_range", "input", axes=("y", "x"), min_percentile=n.low, max_percentile=n.high))
    xin = P.apply_ops(pre, x, dims, P.compute_stats(P.measures_of(pre), {"input": (x, dims)})).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.from_numpy(xin), check_trace=False)
        traced.save(str(d / "weights.torchscript"))
        # a trace may bake in the batch size: check it at another one
        other = torch.randn(x.shape[0] + 3, *x.shape[1:])
        with torch.inference_mode():
            diff = float((traced(other) - net(other)).abs().max())
            logits = net(torch.from_numpy(xin)).numpy()
    if diff > 1e-4:
        raise InputError(f"The traced classifier differs from the original at another batch size (max difference {diff:.2g})", "This architecture cannot be exported as torchscript")
    y = P.Softmax("softmax", "probabilities", axis="channel")(logits, ("batch", "channel"), {}).astype(np.float32)
    np.save(d / "test_output.npy", y)
    _cover(x if spec.level == "object" else xin, y, spec, d / "cover.png")
    (d / "README.md").write_text(_readme(card, name, description, authors), encoding="utf-8")
    return _descr(card, d, name, description, authors, license, cites, tags, timm_kwargs(card.architecture))


# ----------------------------------------------------------------------------- cover


def _cover(x: np.ndarray, p: np.ndarray, spec, path: Path) -> None:
    """2:1 PNG: up to four test inputs (network values, the mask channel in magenta) and their class probabilities as bars."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = 512, 256
    n = min(len(x), 4)
    rows = 2 if n > 2 else 1
    cols = -(-n // rows)
    cell = min(H // rows, (W // 2) // cols)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    mask_last = spec.level == "object" and spec.crop.input != "image"
    for i in range(n):
        g = x[i, 0].astype(np.float64) if not (mask_last and x.shape[1] == 1) else np.zeros(x.shape[-2:])
        lo, hi = np.percentile(g, [1, 99.8])
        g = np.clip((g - lo) / max(hi - lo, 1e-9), 0, 1)
        rgb = np.stack([g, g, g], -1)
        if mask_last:
            m = x[i, -1] > 0.5
            rgb[m] = 0.6 * rgb[m] + 0.4 * np.array([1.0, 0.0, 1.0])
        tile = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).resize((cell - 4, cell - 4), Image.BILINEAR)
        canvas.paste(tile, ((i % cols) * cell + 2, (i // cols) * cell + 2 + (H - rows * cell) // 2))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    order = np.argsort(-p[:n].mean(0))[:6]  # the (at most six) classes most probable over the shown inputs
    x0, y0 = W // 2 + 8, 8
    band = (H - 16) // n
    bar_h = max(3, min(14, (band - 6) // max(1, len(order))))
    for i in range(n):
        top = y0 + i * band
        draw.text((x0, top), f"#{i + 1}", fill=(0, 0, 0), font=font)
        for j, k in enumerate(order):
            yy = top + 2 + j * (bar_h + 1)
            length = int(round(float(p[i, k]) * 120))
            draw.rectangle([x0 + 28, yy, x0 + 28 + max(1, length), yy + bar_h - 1], fill=(200, 40, 200) if k == p[i].argmax() else (150, 150, 150))
            draw.text((x0 + 154, yy - 2), f"{spec.classes[k][:18]} {p[i, k]:.2f}", fill=(0, 0, 0), font=font)
    canvas.save(path, optimize=True)


# ----------------------------------------------------------------------------- README


def _readme(card, name: str, description: str, authors: list[str]) -> str:
    from ..models.classifiers import CLASSIFIERS

    prov, spec, n = card.provenance, card.classification, card.normalization
    S = spec.input_size
    per = "image plane" if spec.level == "image" else "labelled object"
    lines = [
        f"# {name}", "", description or card.description or "", "",
        "Exported by [napari-impc-dl](https://github.com/) from its checkpoint format; runs in napari-impc-dl, "
        "bioimageio.core and other BioImage Model Zoo consumers.", "",
        "## What it does", "",
        f"An {spec.level}-level classifier (timm `{CLASSIFIERS.get(card.architecture.encoder, card.architecture.encoder)}`, "
        f"napari-impc-dl architecture `{card.architecture.encoder}`): one of {len(spec.classes)} classes per {per}. "
        "It outputs one probability per class (tensor `probabilities`: batch x class, softmax over the classes; "
        "the predicted class is the most probable one).", "",
        "## Classes", "",
        "| # | class | channel of `probabilities` |", "|---|---|---|",
        *[f"| {i} | {c} | `{ident}` |" for i, (c, ident) in enumerate(zip(spec.classes, identifiers(spec.classes)))], "",
        "## Input and its preparation", "",
    ]
    if spec.level == "image":
        rule = {
            "pad": "the longer side is scaled to the square's side and the shorter one padded by repeating its edge pixels (nothing cut, nothing distorted)",
            "crop": "the shorter side is scaled to the square's side and the centre square kept",
            "stretch": "both sides are scaled to the square's side independently",
        }[spec.resize]
        lines += [
            f"- {spec.image_channels} channel(s) ({', '.join(card.channel_names)}), one {S} x {S} square per image plane (tensor `input`: batch x channel x y x x, fixed size).",
            f"- Resize rule `{spec.resize}`: {rule}; downscaling is antialiased (bilinear).",
            f"- Per image and channel, over the prepared square: `(x - p{n.low:g}) / (p{n.high:g} - p{n.low:g})` "
            "(the package's preprocessing: spec `scale_range` per sample over y, x). Give the package the resized square, not the original image.", "",
        ]
    else:
        c = spec.crop
        window = f"a fixed {c.side} x {c.side} px square centred on the object" if c.mode == "fixed" else f"a square around the object's bounding box, its longer side times {1 + 2 * c.margin:g} (margin {c.margin:g} on each side)"
        pad = {"zero": "filled with zeros (after normalisation)", "reflect": "mirrored", "none": "avoided by shifting the window inside the image"}[c.padding]
        what = {"image": f"the image's {spec.image_channels} channel(s)", "mask": "the object's mask alone", "image+mask": f"the image's {spec.image_channels} channel(s) and, last, the object's mask"}[c.input]
        lines += [
            f"- **The package's input is a batch of prepared crops**, one per labelled object: {S} x {S} pixels, channels {', '.join(card.channel_names)} "
            "(tensor `input`: batch x channel x y x x, fixed size). Its preprocessing only makes them float32: crops must be prepared as below "
            "(napari-impc-dl does it: `classify --labels`, `segment --classifier`).",
            f"- The image is first normalised per channel with percentiles of the **whole image**: `(x - p{n.low:g}) / (p{n.high:g} - p{n.low:g})`, so brightness stays comparable between objects.",
            f"- Window: {window}; resampled to {S} x {S} (torchvision `roi_align`, averaging about side / {S} samples per output pixel). Windows crossing the image border are {pad}.",
            f"- Network input: {what}" + (" (1 on this object, 0 elsewhere, neighbours included; nearest-label sampling)." if c.input != "image" else "."), "",
        ]
    lines += ["## Training data", "", prov.trained_on or "Not recorded in the checkpoint.", ""]
    data = (prov.training or {}).get("data") or {}
    for key, label in (("train_classes", "training"), ("val_classes", "validation")):
        counts = data.get(key)
        if isinstance(counts, dict) and counts:
            lines.append(f"- {label} examples per class: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if prov.script or prov.epochs or prov.seed is not None:
        lines += [f"- script: `{prov.script}`" if prov.script else "", f"- epochs: {prov.epochs}" if prov.epochs else "", f"- seed: {prov.seed}" if prov.seed is not None else ""]
    lines += ["", "## Metrics", ""]
    m = prov.metrics
    if m:
        overall = [(k, label) for k, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1"), ("loss", "loss (cross-entropy)")) if k in m]
        lines += ["On the validation set at the end of training:", "", "| metric | value |", "|---|---|", *[f"| {label} | {m[k]:.4g} |" for k, label in overall]]
        known = {k for k, _ in overall}
        per_class = [c for c in spec.classes if any(f"{s}_{c}" in m for s in ("precision", "recall", "f1"))]
        if per_class:
            lines += ["", "| class | precision | recall | F1 |", "|---|---|---|---|"]
            lines += [f"| {c} | " + " | ".join(f"{m[f'{s}_{c}']:.3g}" if f"{s}_{c}" in m else "" for s in ("precision", "recall", "f1")) + " |" for c in per_class]
            known |= {f"{s}_{c}" for c in per_class for s in ("precision", "recall", "f1")}
        rest = sorted(k for k in m if k not in known)
        if rest:
            lines += ["", "| other | value |", "|---|---|", *[f"| {k} | {m[k]:.4g} |" for k in rest]]
        lines.append("")
    else:
        lines += ["No validation metrics were recorded with this checkpoint.", ""]
    lim = []
    if "synthetic" in (prov.trained_on or "").lower():
        lim.append("Trained on synthetic images only: check it on your own images before trusting its classes.")
    lim.append(f"It knows only its {len(spec.classes)} classes: anything else is still assigned one of them (look at the probabilities).")
    if spec.level == "object":
        lim.append("Object-level: crops prepared differently (other normalisation, window or mask) give other answers; prepare them as described above.")
    else:
        lim.append(f"Images are reduced to {S} x {S} pixels: details smaller than about 1/{S} of the image are lost.")
    if card.pixel_size_um:
        lim.append(f"Trained at {card.pixel_size_um:g} µm/pixel.")
    lines += ["## Limits", "", *[f"- {x}" for x in lim], ""]
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")
    run = f"napari-impc-dl classify images/*.tif --model {slug} --out results/" if spec.level == "image" else f"napari-impc-dl segment images/*.tif --out seg/ && napari-impc-dl classify images/*.tif --labels seg/ --model {slug} --out results/"
    lines += [
        "## How to run", "",
        "```bash", "napari-impc-dl zoo import this_package.zip", run, "```", "",
        "or with bioimageio.core: `bioimageio predict this_package.zip ...` on " + ("resized squares." if spec.level == "image" else "crops prepared as above."), "",
        "## Provenance", "",
        f"- weights sha256 (napari-impc-dl card): `{card.weights_sha256}`",
        f"- created: {prov.created or 'unknown'}; software: {', '.join(f'{k} {v}' for k, v in prov.software.items()) or 'unknown'}",
        f"- authors: {'; '.join(authors)}", "",
    ]
    return "\n".join(line for line in lines if line is not None) + "\n"


# ----------------------------------------------------------------------------- description


def _descr(card, d: Path, name, description, authors, license, cites, tags, arch_kwargs):
    from bioimageio.spec.model.v0_5 import (
        AxisId, BatchAxis, ChannelAxis, EnsureDtypeDescr, EnsureDtypeKwargs, Identifier, InputTensorDescr, IntervalOrRatioDataDescr,
        OutputTensorDescr, ScaleRangeDescr, ScaleRangeKwargs, SoftmaxDescr, SoftmaxKwargs, SpaceInputAxis, TensorId,
    )

    from .export import model_descr

    spec, n = card.classification, card.normalization
    S = spec.input_size
    tag_list = ["napari-impc-dl", "pytorch", "timm", "2d", "classification", f"{spec.level}-classification", *[c.lower() for c in spec.classes], *(tags or [])]
    pre = [EnsureDtypeDescr(kwargs=EnsureDtypeKwargs(dtype="float32"))]
    if spec.level == "image":
        pre.append(ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=[AxisId("y"), AxisId("x")], min_percentile=n.low, max_percentile=n.high)))
        in_text = f"image plane resized to {S} x {S} (rule '{spec.resize}'); the preprocessing normalises it"
    else:
        in_text = f"prepared crops, one per object ({spec.crop.mode} window, {spec.crop.input}), cut from the image normalised with whole-image percentiles: see README"
    out_text = f"class probabilities ({', '.join(spec.classes)})"

    def tensors(f):
        inputs = [InputTensorDescr(
            id=TensorId("input"),
            description=_short(in_text),
            axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in identifiers(card.channel_names)]),
                  SpaceInputAxis(id=AxisId("y"), size=S), SpaceInputAxis(id=AxisId("x"), size=S)],
            test_tensor=f("test_input.npy"),
            data=IntervalOrRatioDataDescr(type="float32"),
            preprocessing=pre,
        )]
        outputs = [OutputTensorDescr(
            id=TensorId("probabilities"),
            description=_short(out_text),
            axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in identifiers(spec.classes)])],
            test_tensor=f("test_output.npy"),
            data=IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=[SoftmaxDescr(kwargs=SoftmaxKwargs(axis=AxisId("channel")))],
        )]
        return inputs, outputs

    return model_descr(card, d, name=name, description=description, authors=authors, license=license, cites=cites, tags=tag_list,
                       architecture=("timm", "create_model", arch_kwargs), tensors=tensors)


def _short(text: str, n: int = 128) -> str:
    """A tensor description fits the spec's 128 characters."""
    return text if len(text) <= n else text[: n - 3].rstrip(" ,(") + "..."
