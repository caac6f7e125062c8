"""A package's description, validated by bioimageio.spec and normalised into our own small model.

Spec 0.4 and 0.5 describe the same things differently (axis letters ``bcyx`` and ``shape`` with
``min``/``step`` or ``reference_tensor``/``scale``/``offset``, versus axis objects with
``ParameterizedSize`` / ``SizeReference`` and per-axis ``halo``). :func:`describe` validates the
description with bioimageio.spec (``perform_io_checks=False``: nothing is fetched, nothing is
hashed by the validator; we check files and hashes ourselves) and reduces both versions to
:class:`ModelSpec`: tensors with named axes, sizes, halos, dtypes, test tensors and processing
steps, weights by format with where their file is (locally, or only a URL), and the card fields
(name, description, authors, citations, license, covers, documentation, tags).

Axis ids: 0.5 ids as written; 0.4 letters mapped ``b -> batch``, ``c -> channel``, ``t -> time``,
``i -> index``, ``x``/``y``/``z`` kept. Processing steps stay as dicts (``id``/``name`` +
``kwargs``); :mod:`.processing` reads both naming styles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .package import Package, read_yaml
from .processing import LETTERS_04, Op, parse_op

#: weight formats we can run, in our order of preference
RUNNABLE_FORMATS = ("torchscript", "pytorch_state_dict", "onnx")
ALL_FORMATS = ("torchscript", "pytorch_state_dict", "onnx", "keras_hdf5", "keras_v3", "tensorflow_saved_model_bundle", "tensorflow_js")


@dataclass(frozen=True)
class Size:
    """An axis size: ``fixed``; or ``min + k * step``; or ``ref`` (tensor, axis) times ``factor`` plus ``offset``."""

    fixed: int | None = None
    min: int | None = None
    step: int | None = None
    ref: tuple[str, str] | None = None
    factor: float = 1.0
    offset: int = 0

    def valid(self, n: int) -> bool:
        if self.fixed is not None:
            return n == self.fixed
        if self.min is not None:
            return n >= self.min and (not self.step or (n - self.min) % self.step == 0) and (self.step or n == self.min)
        return True

    def describe(self) -> str:
        if self.fixed is not None:
            return str(self.fixed)
        if self.min is not None:
            return f"{self.min}+k*{self.step}" if self.step else str(self.min)
        if self.ref is not None:
            f = "" if self.factor == 1 else f"*{self.factor:g}"
            o = "" if not self.offset else f"{self.offset:+d}"
            return f"{self.ref[0]}.{self.ref[1]}{f}{o}"
        return "any"


@dataclass(frozen=True)
class Axis:
    id: str
    kind: str  # batch | channel | space | time | index
    size: Size | None = None
    channel_names: tuple[str, ...] = ()
    halo: int = 0
    scale: float = 1.0


@dataclass
class TensorSpec:
    id: str
    axes: list[Axis]
    dtype: str
    test_tensor: str | None = None
    test_sha256: str | None = None
    steps: list[dict] = field(default_factory=list)
    description: str = ""
    data_range: tuple[float | None, float | None] | None = None
    optional: bool = False

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.axes)

    def axis(self, axis_id: str) -> Axis:
        for a in self.axes:
            if a.id == axis_id:
                return a
        raise KeyError(axis_id)

    @property
    def space(self) -> list[Axis]:
        return [a for a in self.axes if a.kind == "space"]

    @property
    def channel(self) -> Axis | None:
        return next((a for a in self.axes if a.kind == "channel"), None)

    def n_channels(self) -> int | None:
        c = self.channel
        if c is None:
            return 1
        if c.channel_names:
            return len(c.channel_names)
        if c.size is not None and c.size.fixed is not None:
            return c.size.fixed
        return None

    def axes_text(self) -> str:
        return ", ".join(f"{a.id}={a.size.describe() if a.size else ('any' if a.kind == 'batch' else len(a.channel_names) or '?')}" + (f" (halo {a.halo})" if a.halo else "") for a in self.axes)


@dataclass
class Weights:
    format: str
    source: str
    local: Path | None
    """The file inside the package, or None when it is only listed by URL."""
    sha256: str | None = None
    architecture: dict | None = None
    """pytorch_state_dict: ``{"kind": "library", "import_from", "callable", "kwargs"}`` or ``{"kind": "file", "source", "local", "sha256", "callable", "kwargs"}``."""
    strict: bool = True
    version: str = ""


@dataclass
class ModelSpec:
    name: str
    description: str
    format_version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    weights: dict[str, Weights]
    package: Package
    license: str = ""
    authors: list[str] = field(default_factory=list)
    cite: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    covers: list[Path] = field(default_factory=list)
    documentation: Path | None = None
    version: str = ""
    id: str = ""
    config: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @property
    def version_family(self) -> str:
        return "0.4" if self.format_version.startswith("0.4") else "0.5"

    @property
    def local_formats(self) -> list[str]:
        return [f for f in ALL_FORMATS if f in self.weights and self.weights[f].local is not None]

    @property
    def remote_formats(self) -> list[str]:
        return [f for f in ALL_FORMATS if f in self.weights and self.weights[f].local is None]

    def ops(self, tensor: TensorSpec) -> list[Op]:
        return [parse_op(s, tensor.id, tensor.dims, self.version_family) for s in tensor.steps]

    def tensor(self, tid: str) -> TensorSpec:
        for t in self.inputs + self.outputs:
            if t.id == tid:
                return t
        raise KeyError(tid)


# ----------------------------------------------------------------------------- validation


def validate(pkg: Package, content: dict):
    """Validate with bioimageio.spec (no IO checks); return the description object or raise a clear error."""
    try:
        from bioimageio.spec import InvalidDescr, ValidationContext, build_description
    except ImportError:
        raise InputError("Reading BioImage Model Zoo packages needs bioimageio.spec", "Install the zoo extra: pip install 'bioimageio.spec>=0.5.4' (in a clone: make setup, or pip install '.[zoo]')") from None
    if content.get("type") not in (None, "model"):
        raise InputError(f"Package {pkg.label} describes a '{content.get('type')}', not a model", "Give a model package")
    import logging
    import warnings

    logging.getLogger("bioimageio").setLevel(logging.ERROR)
    try:
        from loguru import logger

        logger.disable("bioimageio")
    except ImportError:  # pragma: no cover
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ValidationContext(root=pkg.root, file_name=pkg.rdf.name, perform_io_checks=False, log_warnings=False):
            descr = build_description(content)
    if isinstance(descr, InvalidDescr):
        errs = [f"{'.'.join(str(p) for p in e.loc)}: {e.msg}" for d in descr.validation_summary.details for e in d.errors]
        shown = "; ".join(errs[:4]) + (f"; and {len(errs) - 4} more" if len(errs) > 4 else "")
        raise InputError(f"Package {pkg.label} is not a valid BioImage Model Zoo model description ({shown or 'unknown reason'})", "Fix the rdf.yaml or re-export the package")
    if getattr(descr, "type", None) != "model":
        raise InputError(f"Package {pkg.label} describes a '{getattr(descr, 'type', '?')}', not a model", "Give a model package")
    return descr


def describe(pkg: Package, *, content: dict | None = None) -> ModelSpec:
    """Validate and normalise a package's description (0.4 or 0.5)."""
    content = read_yaml(pkg.rdf, f"Package {pkg.label}") if content is None else content
    descr = validate(pkg, content)
    d = descr.model_dump(mode="json")
    fv = str(d.get("format_version", ""))
    spec = _from_04(d, pkg) if fv.startswith("0.4") else _from_05(d, pkg)
    spec.raw = content
    return spec


def _src(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, dict):
        return v.get("source")
    return str(v)


def _sha(v) -> str | None:
    return v.get("sha256") if isinstance(v, dict) else None


def _people(items) -> list[str]:
    out = []
    for a in items or []:
        if isinstance(a, dict):
            s = a.get("name") or a.get("github_user") or ""
            if a.get("affiliation"):
                s += f" ({a['affiliation']})"
            out.append(s)
        else:
            out.append(str(a))
    return out


def _cites(items) -> list[str]:
    out = []
    for c in items or []:
        if isinstance(c, dict):
            ref = c.get("doi") and f"doi:{c['doi']}" or c.get("url") or ""
            out.append(f"{c.get('text', '')}" + (f" ({ref})" if ref else ""))
    return out


def _common(d: dict, pkg: Package) -> dict:
    covers = []
    for c in d.get("covers") or []:
        p = pkg.local(_src(c), "cover image")
        if p is not None:
            covers.append(p)
    doc = d.get("documentation")
    doc_path = pkg.local(_src(doc), "documentation") if doc else None
    if doc_path is not None:
        pkg.check_sha256(doc_path, _sha(doc), "documentation")
    return dict(
        name=d.get("name", ""),
        description=d.get("description", ""),
        format_version=str(d.get("format_version", "")),
        license=str(d.get("license") or ""),
        authors=_people(d.get("authors")),
        cite=_cites(d.get("cite")),
        tags=list(d.get("tags") or []),
        covers=covers,
        documentation=doc_path,
        version=str(d.get("version") or ""),
        id=str(d.get("id") or ""),
        config=dict(d.get("config") or {}),
        package=pkg,
    )


def _weights(d: dict, pkg: Package, v04: bool) -> dict[str, Weights]:
    out = {}
    for fmt, w in (d.get("weights") or {}).items():
        if not w:
            continue
        source = _src(w.get("source"))
        local = pkg.local(source, f"{fmt} weights")
        arch = None
        if fmt == "pytorch_state_dict":
            arch = _architecture(w, pkg, v04)
        out[fmt] = Weights(
            format=fmt, source=source or "", local=local, sha256=w.get("sha256"), architecture=arch,
            strict=bool(w.get("strict", True)), version=str(w.get("pytorch_version") or w.get("opset_version") or w.get("tensorflow_version") or ""),
        )
    return out


def _architecture(w: dict, pkg: Package, v04: bool) -> dict:
    if v04:
        arch = str(w.get("architecture", ""))
        kwargs = dict(w.get("kwargs") or {})
        if ":" not in arch:
            raise InputError(f"Package {pkg.label}: architecture '{arch}' is not 'file.py:Name' or 'module:Name'", "The package is malformed")
        where, callable_ = arch.rsplit(":", 1)
        if where.endswith(".py") or "/" in where:
            return {"kind": "file", "source": where, "local": pkg.local(where, "architecture source"), "sha256": w.get("architecture_sha256"), "callable": callable_, "kwargs": kwargs}
        return {"kind": "library", "import_from": where, "callable": callable_, "kwargs": kwargs}
    a = w.get("architecture") or {}
    if "import_from" in a:
        return {"kind": "library", "import_from": a["import_from"], "callable": a["callable"], "kwargs": dict(a.get("kwargs") or {})}
    src = _src(a.get("source"))
    return {"kind": "file", "source": src, "local": pkg.local(src, "architecture source"), "sha256": a.get("sha256"), "callable": a["callable"], "kwargs": dict(a.get("kwargs") or {})}


def _range(v) -> tuple[float | None, float | None] | None:
    if not v or not isinstance(v, (list, tuple)) or len(v) != 2:
        return None
    lo, hi = v

    def f(x):
        if x is None:
            return None
        x = float(x)
        return x if math.isfinite(x) else None

    return (f(lo), f(hi))


def _from_05(d: dict, pkg: Package) -> ModelSpec:
    def tensor(t: dict, is_input: bool) -> TensorSpec:
        axes = []
        for a in t["axes"]:
            kind = a["type"]
            aid = str(a.get("id") or kind)
            size = None
            s = a.get("size")
            if kind == "batch":
                size = Size(fixed=int(s)) if isinstance(s, int) else None
            elif kind == "channel":
                size = Size(fixed=len(a.get("channel_names") or []))
            elif isinstance(s, int):
                size = Size(fixed=s)
            elif isinstance(s, dict) and "min" in s:
                size = Size(fixed=s["min"]) if not s.get("step") else Size(min=s["min"], step=s["step"])
            elif isinstance(s, dict) and "tensor_id" in s:
                size = Size(ref=(s["tensor_id"], s["axis_id"]), offset=int(s.get("offset") or 0), factor=float("nan"))  # factor resolved below
            axes.append(Axis(id=aid, kind=kind, size=size, channel_names=tuple(a.get("channel_names") or ()), halo=int(a.get("halo") or 0), scale=float(a.get("scale") or 1.0)))
        data = t.get("data") or {}
        if isinstance(data, list):
            data = data[0] if data else {}
        dtype = data.get("type", "float32")
        test = t.get("test_tensor")
        return TensorSpec(
            id=str(t["id"]), axes=axes, dtype=dtype, test_tensor=_src(test), test_sha256=_sha(test),
            steps=list(t.get("preprocessing" if is_input else "postprocessing") or []),
            description=t.get("description", ""), data_range=_range(data.get("range")), optional=bool(t.get("optional", False)),
        )

    inputs = [tensor(t, True) for t in d["inputs"]]
    outputs = [tensor(t, False) for t in d["outputs"]]
    # 0.5 SizeReference: size = ref_size * ref_axis.scale / axis.scale + offset
    every = {t.id: t for t in inputs + outputs}
    for t in inputs + outputs:
        for i, a in enumerate(t.axes):
            if a.size is not None and a.size.ref is not None:
                ref_t = every.get(a.size.ref[0])
                ref_scale = 1.0
                if ref_t is not None:
                    try:
                        ref_scale = ref_t.axis(a.size.ref[1]).scale
                    except KeyError:
                        pass
                t.axes[i] = Axis(a.id, a.kind, Size(ref=a.size.ref, factor=ref_scale / a.scale, offset=a.size.offset), a.channel_names, a.halo, a.scale)
    return ModelSpec(inputs=inputs, outputs=outputs, weights=_weights(d, pkg, False), **_common(d, pkg))


def _from_04(d: dict, pkg: Package) -> ModelSpec:
    def tensor(t: dict, is_input: bool, test: str | None) -> TensorSpec:
        letters = t["axes"]
        shape = t["shape"]
        halo = t.get("halo") or [0] * len(letters)
        axes = []
        for i, letter in enumerate(letters):
            aid = LETTERS_04.get(letter, letter)
            kind = {"b": "batch", "c": "channel", "t": "time", "i": "index"}.get(letter, "space")
            if isinstance(shape, list):
                size = Size(fixed=int(shape[i]))
            elif "min" in shape:
                step = int(shape["step"][i])
                size = Size(fixed=int(shape["min"][i])) if step == 0 else Size(min=int(shape["min"][i]), step=step)
            else:  # output: reference_tensor, scale, offset  ->  size = ref * scale + 2 * offset
                sc = float(shape["scale"][i])
                off = float(shape["offset"][i])
                if sc == 0:
                    size = Size(fixed=int(round(2 * off)))
                else:
                    size = Size(ref=(shape["reference_tensor"], aid), factor=sc, offset=int(round(2 * off)))
            if kind == "batch":
                size = None  # as bioimageio.spec's 0.4 -> 0.5 converter: any batch size
            names = ()
            axes.append(Axis(id=aid, kind=kind, size=size, channel_names=names, halo=int(halo[i]) if i < len(halo) else 0))
        steps = list(t.get("preprocessing" if is_input else "postprocessing") or [])
        if steps:  # as bioimageio.core runs 0.4 tensors: cast to the data type, process, hand on float32
            steps = [{"id": "ensure_dtype", "kwargs": {"dtype": t.get("data_type", "float32")}}, *steps]
        steps.append({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}})
        return TensorSpec(
            id=str(t["name"]), axes=axes, dtype=t.get("data_type", "float32"), test_tensor=test,
            steps=steps,
            description=t.get("description", ""), data_range=_range(t.get("data_range")),
        )

    tin, tout = d.get("test_inputs") or [], d.get("test_outputs") or []
    inputs = [tensor(t, True, _src(tin[i]) if i < len(tin) else None) for i, t in enumerate(d["inputs"])]
    outputs = [tensor(t, False, _src(tout[i]) if i < len(tout) else None) for i, t in enumerate(d["outputs"])]
    # 0.4 reference axes are letters of the referenced tensor: map them
    for t in outputs:
        for i, a in enumerate(t.axes):
            if a.size is not None and a.size.ref is not None and a.kind == "batch":
                t.axes[i] = Axis(a.id, a.kind, None, a.channel_names, a.halo)
    return ModelSpec(inputs=inputs, outputs=outputs, weights=_weights(d, pkg, True), **_common(d, pkg))


def check_files(spec: ModelSpec, *, tests: bool = False, formats: list[str] | None = None) -> None:
    """Check that the files we will read exist and match their sha256: weights of ``formats`` (default: all local ones), test tensors."""
    pkg = spec.package
    for fmt in formats if formats is not None else spec.local_formats:
        w = spec.weights[fmt]
        if w.local is not None:
            pkg.check_sha256(w.local, w.sha256, f"{fmt} weights")
        a = w.architecture
        if a and a.get("kind") == "file" and a.get("local") is not None:
            pkg.check_sha256(a["local"], a.get("sha256"), "architecture source")
    if tests:
        for t in spec.inputs + spec.outputs:
            if t.test_tensor is None:
                raise InputError(f"Package {pkg.label} has no test tensor for '{t.id}'", "Cannot run its test; ask the package's authors")
            p = pkg.local(t.test_tensor, f"test tensor of '{t.id}'")
            if p is None:
                raise InputError(f"Package {pkg.label}: the test tensor of '{t.id}' is only given by URL ({t.test_tensor})", "napari-impc-dl never downloads; use a package that contains its test tensors")
            pkg.check_sha256(p, t.test_sha256, f"test tensor of '{t.id}'")


def summary(spec: ModelSpec) -> list[str]:
    """Lines a person reads after ``zoo import``: name, description, tensors with axes, formats, license, citations."""
    lines = [f"name:        {spec.name}" + (f" (version {spec.version})" if spec.version else ""), f"description: {spec.description}"]
    lines.append(f"format:      bioimage.io model spec {spec.format_version}")
    for kind, ts in (("input", spec.inputs), ("output", spec.outputs)):
        for t in ts:
            ch = t.channel
            names = f" channels [{', '.join(ch.channel_names)}]" if ch is not None and ch.channel_names else ""
            lines.append(f"{kind + ':':<12} {t.id} ({t.dtype}) axes {t.axes_text()}{names}")
            steps = [s.get("id") or s.get("name") for s in t.steps if (s.get("id") or s.get("name")) != "ensure_dtype"]
            if steps:
                lines.append(f"{'':12} {'preprocessing' if kind == 'input' else 'postprocessing'}: {', '.join(steps)}")
    local = spec.local_formats
    lines.append(f"weights:     {', '.join(local) if local else 'none present locally'}" + (f" (listed by URL only: {', '.join(spec.remote_formats)})" if spec.remote_formats else ""))
    lines.append(f"license:     {spec.license or '?'}")
    if spec.authors:
        lines.append(f"authors:     {'; '.join(spec.authors)}")
    for c in spec.cite:
        lines.append(f"cite:        {c}")
    return lines


def card_of(spec: ModelSpec) -> Any | None:
    """Our own model card when the package was exported by napari-impc-dl (``config.napari_impc_dl.card``)."""
    raw = (spec.config.get("napari_impc_dl") or {}).get("card") if isinstance(spec.config.get("napari_impc_dl"), dict) else None
    if not raw:
        return None
    try:
        from ..models.card import ModelCard

        return ModelCard.model_validate(raw)
    except Exception:  # a card from another version: ignore, the package itself is what we run
        return None
