"""A BioImage Model Zoo classification package as a classifier Runnable.

:func:`load_zoo_classifier` gives an object with the interface of
:class:`~napari_impc_dl.classify.runnable.ClassifierModel` (``info``, ``card``, ``spec``, ``classes``,
``device``, ``to``, ``fit_normalizer``, ``prepare_image``, ``forward``), so ``classify`` and
``segment --classifier`` run it through the same batches, device and out-of-memory machinery. The
package is opened, validated and its weights loaded by :mod:`.adapter` (:class:`~.adapter.ZooModel`
without its image set-up); this module only adapts the tensors:

* **our own packages** (``config.napari_impc_dl.card`` of a classifier): the card's input
  preparation, unchanged (image level: the resize rule, then percentiles over the prepared
  square; object level: crops cut from the image normalised with whole-image percentiles, plus
  the mask channel), then the package's network and postprocessing (softmax): the same
  probabilities as the checkpoint it was exported from.
* **other packages**: an output with one value per class (channel and batch axes only, any other
  axis of size 1) makes a package a classifier. It runs at image level: the input's fixed size (or
  its minimum size) is the square side; :meth:`prepare_image` resizes a plane to it keeping the
  aspect ratio (``pad``) and applies the package's own preprocessing with statistics of that
  square. Classes are the output's channel names (or ``class_0``, ``class_1`` ...). When the
  postprocessing does not make probabilities (no softmax, sigmoid or declared [0, 1] range), a
  softmax over the classes is applied (``info.extra["softmax_added"]``).

A package with a map per pixel is a segmentation model: one :class:`InputError` says so.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..inference.runnable import ModelInfo, TileRules, percentile_normalizer
from . import processing as P

#: how a foreign package's image is made square (see ``classify.resize``)
FOREIGN_RESIZE = "pad"


def class_output(spec):
    """The first output with one value per class (a channel axis, a batch axis, nothing else but size-1 axes), or None."""
    for o in spec.outputs:
        if o.channel is None:
            continue
        rest = [a for a in o.axes if a.kind not in ("batch", "channel") and not (a.size is not None and a.size.fixed == 1)]
        if not rest:
            return o
    return None


def _square_size(t, label: str) -> int:
    sizes = []
    for a in t.space[-2:]:
        s = a.size
        if s is not None and s.fixed is not None:
            sizes.append(s.fixed)
        elif s is not None and s.min is not None:
            sizes.append(s.min if s.min >= 16 or not s.step else s.min + -(-(16 - s.min) // s.step) * s.step)
        else:
            raise InputError(f"{label}: its input size along '{a.id}' is not fixed (it refers to another tensor)", "A classifier package needs a fixed (or minimum) input size")
    if sizes[0] != sizes[1]:
        raise InputError(f"{label}: its input is {sizes[0]} x {sizes[1]} pixels; napari-impc-dl prepares square inputs", "Use a classifier with a square input")
    if not 16 <= sizes[0] <= 2048:
        raise InputError(f"{label}: its input side is {sizes[0]} pixels; napari-impc-dl classifies at 16 to 2048", "")
    return sizes[0]


def _synthesised_card(spec, inp, out, size: int, n_in: int, label: str):
    from ..models.card import ArchitectureSpec, ClassificationSpec, ModelCard

    k = out.n_channels() or 0
    names = list(out.channel.channel_names) if out.channel.channel_names else [f"class_{i}" for i in range(k)]
    if not 2 <= len(names) <= 256:
        raise InputError(
            f"{label}: its output '{out.id}' has {len(names)} channel(s); a classifier needs one per class (2 to 256)",
            "A single score (a binary classifier with one output) is not supported; use a package with one output per class",
        )
    ch = list(inp.channel.channel_names) if inp.channel is not None and inp.channel.channel_names else [f"channel {i}" for i in range(n_in)]
    return ModelCard(
        name=(spec.name or "package")[:128],
        description=spec.description,
        task="classification",
        architecture=ArchitectureSpec(arch="Classifier", encoder="bioimageio-package", in_channels=n_in, out_channels=len(names), decoder_channels=()),
        classification=ClassificationSpec(level="image", classes=names, input_size=size, resize=FOREIGN_RESIZE, image_channels=n_in),
        channel_names=ch,
        output_names=names,
        license=spec.license or "unknown",
        authors=list(spec.authors),
    )


class ZooClassifier:
    """A classification package (our export, or another image-level classifier) with the ClassifierModel interface."""

    def __init__(self, package_spec, *, weights: str | None = None, trust_code: bool = False) -> None:
        from .adapter import ZooModel
        from .spec import card_of

        spec = self.package_spec = package_spec
        label = f"Package '{spec.name}'"
        own = card_of(spec)
        out = class_output(spec)
        if (own is not None and own.task != "classification") or out is None:
            maps = next((o.id for o in spec.outputs if len(o.space) >= 2), None)
            why = f"its output '{maps}' is a map per pixel" if maps else "none of its outputs has one value per class"
            raise InputError(
                f"{label} ({spec.package.source}) is a segmentation model, not a classifier ({why})",
                "Use it with `segment --model`; a classifier package has an output with batch and channel (class) axes only",
            )
        required = [t for t in spec.inputs if not t.optional]
        if len(required) != 1:
            raise InputError(f"{label} needs {len(required)} input tensors; a classifier takes one image", "Run it with bioimageio.core")
        inp = self.inp = required[0]
        if len(inp.space) < 2 or any(a.kind not in ("batch", "channel") and a not in inp.space[-2:] and not (a.size is not None and a.size.fixed == 1) for a in inp.axes):
            raise InputError(f"{label}: its input has axes {inp.axes_text()}; napari-impc-dl classifies 2D (YX) images", "")
        n_in = inp.n_channels()
        if n_in is None:
            raise InputError(f"{label}: its input's channel count is not fixed", "A classifier needs a fixed number of channels")
        size = _square_size(inp, label)
        self.own = own is not None
        self.card = own if self.own else _synthesised_card(spec, inp, out, size, n_in, label)
        self.spec = self.card.classification
        if self.own and (size != self.spec.input_size or n_in != self.card.architecture.in_channels or (out.n_channels() or 0) != len(self.spec.classes)):
            raise InputError(f"{label}: its tensors do not match its napari-impc-dl card (input {inp.axes_text()}, output {out.axes_text()})", "Re-export the model")
        self.zoo = ZooModel(spec, weights=weights, trust_code=trust_code, images=False)
        self.out = out
        # axis ids: the engine's canonical (B, C, y, x) in, (B, K) out
        ya, xa = inp.space[-2], inp.space[-1]
        b_in = next((a for a in inp.axes if a.kind == "batch"), None)
        self.b_in = b_in.id if b_in is not None else None
        self.batch_one = b_in is None or (b_in.size is not None and b_in.size.fixed == 1)
        self.c_in = inp.channel.id if inp.channel is not None else "__c"
        self.in_canon = (self.b_in or "__b", self.c_in, ya.id, xa.id)
        b_out = next((a for a in out.axes if a.kind == "batch"), None)
        self.b_out = b_out.id if b_out is not None else "__b"
        self.out_dims = (self.b_out, out.channel.id)
        self.pre_ops = self.zoo.pre_ops[inp.id]
        self.post_ops = list(self.zoo.post_ops[out.id])
        if P.measures_of(self.post_ops):
            raise InputError(f"{label}: its postprocessing needs statistics ({', '.join(op.name for op in self.post_ops if op.measures)})", "napari-impc-dl runs classifier postprocessing without statistics (e.g. softmax)")
        if any(m.tensor != inp.id for m in P.measures_of(self.pre_ops)):
            raise InputError(f"{label}: its preprocessing needs statistics of another tensor", "A classifier takes one input")
        bounds = P.output_bounds(self.post_ops, out.data_range)
        softmax_added = not self.own and not (bounds is not None and bounds[0] >= 0 and bounds[1] <= 1)
        if softmax_added:
            self.post_ops.append(P.Softmax("softmax", out.id, axis=out.channel.id))
        self.torch_post = _torch_steps(self.post_ops, self.out_dims)
        s = self.spec.input_size
        self.info = ModelInfo(
            name=spec.name,
            content_hash=self.zoo.content_hash[:12],
            in_channels=n_in,
            output_names=list(self.spec.classes),
            tiling=TileRules(tile=s, halo=0, step=1, min_tile=s, fixed=s),
            source=str(spec.package.source),
            extra={"task": "classification", "level": self.spec.level, "weights": self.zoo.format, "format_version": spec.format_version, "output": out.id, "softmax_added": softmax_added},
        )

    # ------------------------------------------------------------------ the ClassifierModel interface

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def device(self):
        return self.zoo.device

    def to(self, device) -> "ZooClassifier":
        self.zoo.to(device)
        return self

    def fit_normalizer(self, sample: np.ndarray):
        """Our packages: the card's percentiles of a ``(C, N)`` sample; others: the package's preprocessing with the sample's statistics."""
        if self.own:
            n = self.card.normalization
            return percentile_normalizer(sample, n.low, n.high)
        dims = self.in_canon[1:]
        s = np.asarray(sample)[:, None, :]
        stats = P.compute_stats(P.measures_of(self.pre_ops), {self.inp.id: (s, dims)})
        return lambda x: np.ascontiguousarray(P.apply_ops(self.pre_ops, x, dims, stats), np.float32)

    def prepare_image(self, source, plane: tuple[int, ...] = (), channels: list[int] | None = None) -> np.ndarray:
        """Image level: the network input ``(C, S, S)`` of one plane (ours: resize rule and percentiles; others: resize, then the package's preprocessing)."""
        from ..classify.resize import prepare_image, read_plane, resize_square

        s = self.spec.input_size
        if self.own:
            n = self.card.normalization
            return prepare_image(source, s, self.spec.resize, n.low, n.high, plane, channels)
        x = resize_square(read_plane(source, plane, channels, target=s), s, self.spec.resize)
        dims = self.in_canon[1:]
        stats = P.compute_stats(P.measures_of(self.pre_ops), {self.inp.id: (x, dims)})
        return np.ascontiguousarray(P.apply_ops(self.pre_ops, x, dims, stats), np.float32)

    def forward(self, x):
        """``(B, C, S, S)`` prepared batch -> ``(B, K)`` class probabilities (the package's network and postprocessing)."""
        import torch

        from .adapter import _to_layout

        if self.batch_one and x.shape[0] > 1:
            return torch.cat([self.forward(x[i : i + 1]) for i in range(x.shape[0])])
        xi, src = (x, self.in_canon) if self.b_in is not None else (x[0], self.in_canon[1:])
        ys = self.zoo.net([_to_layout(xi, src, self.inp.dims)])
        idx = self.package_spec.outputs.index(self.out)
        if len(ys) <= idx:
            raise InputError(f"Package '{self.package_spec.name}' describes {len(self.package_spec.outputs)} outputs but its network returned {len(ys)}", "The package is inconsistent")
        y, dims = ys[idx], self.out.dims
        if self.b_out == "__b":
            y, dims = y.unsqueeze(0), ("__b",) + dims
        y = _to_layout(y, dims, self.out_dims)
        if self.torch_post is not None:  # on the device, without a sync per batch
            y = y.float()
            for kind, axis in self.torch_post:
                y = y.softmax(axis) if kind == "softmax" else y.sigmoid()
            return y
        if P.runs_on_device(self.post_ops, y.device.type):  # any other ops torch can run: still on the device
            return P.apply_ops(self.post_ops, y.float(), self.out_dims, {}).float()
        yn = y.detach().float().cpu().numpy()
        yn = P.apply_ops(self.post_ops, yn, self.out_dims, {}).astype(np.float32, copy=False)
        return torch.from_numpy(np.ascontiguousarray(yn)).to(x.device)


def _torch_steps(ops, dims: tuple[str, str]) -> list[tuple[str, int | None]] | None:
    """The postprocessing as torch steps when it is only softmax / sigmoid (and float casts), else None (numpy)."""
    steps: list[tuple[str, int | None]] = []
    for op in ops:
        if isinstance(op, P.EnsureDtype) and str(op.dtype).startswith("float"):
            continue
        if isinstance(op, P.Softmax) and op.axis in dims:
            steps.append(("softmax", dims.index(op.axis)))
        elif isinstance(op, P.Sigmoid):
            steps.append(("sigmoid", None))
        else:
            return None
    return steps


def load_zoo_classifier(ref, *, device: str = "cpu", weights: str | None = None, trust_code: bool = False) -> ZooClassifier:
    """Open and validate a classification package (zip, folder, rdf.yaml or library name) as a classifier on ``device``."""
    from .adapter import resolve
    from .spec import describe

    return ZooClassifier(describe(resolve(ref)), weights=weights, trust_code=trust_code).to(device)
