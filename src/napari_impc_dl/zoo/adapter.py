"""A BioImage Model Zoo package as a :class:`~napari_impc_dl.inference.runnable.Runnable`.

The tiled engine runs packages exactly as it runs our checkpoints; this module only adapts:

* **weights**: a format present in the package is chosen (``torchscript``, then
  ``pytorch_state_dict``, then ``onnx``; or the one asked for). A format listed only by URL is
  never fetched. ``pytorch_state_dict`` is loaded with ``torch.load(weights_only=True)``; its
  architecture is built from segmentation_models_pytorch or timm without trust (pretrained-weight
  downloads are switched off; timm hub / local-dir model names and checkpoint files need trust), and from a Python file inside the package (or any other module)
  only with ``trust_code=True``. TensorFlow / Keras formats are refused with one message.
* **axes**: the engine's ``(B, C, h, w)`` batch is permuted into the input's own axis order
  (``bcyx``, ``byxc``, no batch axis, singleton ``z`` ...); the output back to ``(B, K, h, w)``.
* **tile rules** from the input's sizes (fixed, or ``min + k * step`` per axis) and the halo
  from the outputs' ``halo`` (at least 16 pixels); outputs cropped by a size offset are padded
  back, inside the halo the engine discards anyway.
* **pre/postprocessing** (:mod:`.processing`) with whole-image statistics: the api calls
  :meth:`ZooModel.normalizer_for_image`, which streams the image once (or a few times for float
  percentiles) before tiling, so tiles never change the result. Postprocessing of a batch runs on
  the batch's device (torch ops), so a GPU never waits on a host round trip per batch; a package
  with a step torch cannot run there exactly keeps the numpy path (decided in ``ZooModel.to``).

What ``segment`` does with the outputs (``mode="segment"``). The output used is the first one
with the input's height and width. Its channels are read by name: one named like ``distance`` is
the distance map; the foreground is the first channel not named like background / boundary /
distance (or ``1 - background`` when only a background channel is left). When the
postprocessing (sigmoid, softmax, binarize, clip to [0, 1]) or the declared data range shows the
values are probabilities, they go straight to the instance postprocessing (seeded watershed; with
no distance channel, seeds from a channel named like ``boundary`` / ``contour`` / ``edge``, or from the
distance transform of the foreground: :mod:`napari_impc_dl.inference.seeds`). Otherwise (raw scores,
logits, intensities) the outputs are stored as float32, and after the whole image is predicted the
foreground channel is mapped to [0, 1] piecewise-linearly so that its Otsu threshold lands on 0.5
(values already inside [0, 1] are taken as probabilities as they are); ``--foreground-threshold``
then moves around Otsu's choice.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import re
import sys
import warnings
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..inference.runnable import ModelInfo, TileRules
from . import processing as P
from .spec import ALL_FORMATS, RUNNABLE_FORMATS, ModelSpec, card_of, check_files

#: Modules whose callables may build a state-dict architecture without --trust-code
TRUSTED_LIBRARIES = ("segmentation_models_pytorch", "timm")
#: per trusted library: the keyword arguments that switch pretrained-weight downloads off
_NO_DOWNLOAD = {"segmentation_models_pytorch": {"encoder_weights": None}, "timm": {"pretrained": False}}
#: ``timm.create_model`` arguments that read files or the hub: a package using them needs --trust-code
_TIMM_UNSAFE = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay")
_TF = ("keras_hdf5", "keras_v3", "tensorflow_saved_model_bundle", "tensorflow_js")

DEFAULT_TILE = 512
MIN_HALO = 16

_FG = re.compile(r"(^|[^a-z])(fg|foreground|prob|probabilit|mask|semantic|nucle|cell|object|instance|seg)", re.I)
_BG = re.compile(r"(^|[^a-z])(bg|background)", re.I)
_BD = re.compile(r"(bound|border|contour|edge)", re.I)
_DIST = re.compile(r"(^|[^a-z])(dist|distance|edt)", re.I)


# ----------------------------------------------------------------------------- weights


def _onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _trusted_library(arch: dict | None) -> str | None:
    """The trusted library an architecture is built from, or None (a file, another module, unsafe arguments)."""
    if not arch or arch.get("kind") != "library":
        return None
    mod = str(arch.get("import_from", ""))
    lib = next((lib for lib in TRUSTED_LIBRARIES if mod == lib or mod.startswith(lib + ".")), None)
    if lib == "timm" and arch.get("callable") == "create_model":
        # architectures only: a hub / local-dir model name ('hf-hub:...', 'local-dir:...') or a checkpoint file is not
        kw = arch.get("kwargs") or {}
        if ":" in str(kw.get("model_name", "")) or any(k in kw for k in _TIMM_UNSAFE):
            return None
    return lib


def _arch_trusted(arch: dict | None) -> bool:
    return _trusted_library(arch) is not None


def choose_format(spec: ModelSpec, wanted: str | None = None, trust_code: bool = False) -> str:
    """The weight format to run: ``wanted``, or the first of :data:`RUNNABLE_FORMATS` present locally and usable."""
    label = f"Package '{spec.name}'"
    local, remote = spec.local_formats, spec.remote_formats
    have = ", ".join(local) or "none"
    if wanted:
        wanted = wanted.strip().lower()
        if wanted not in ALL_FORMATS:
            raise InputError(f"Unknown weight format '{wanted}'", f"Use one of: {', '.join(RUNNABLE_FORMATS)}")
        if wanted not in spec.weights:
            raise InputError(f"{label} has no {wanted} weights (formats present locally: {have})", "Leave out --weights to pick one automatically")
        if wanted in remote:
            raise InputError(f"{label} lists its {wanted} weights only by URL ({spec.weights[wanted].source}); napari-impc-dl never downloads", f"Formats present locally: {have}")
        _check_usable(spec, wanted, trust_code)
        return wanted
    problems = []
    for fmt in RUNNABLE_FORMATS:
        if fmt in local:
            try:
                _check_usable(spec, fmt, trust_code)
                return fmt
            except InputError as exc:
                problems.append(exc)
    if problems:
        raise problems[0]
    tf = [f for f in local if f in _TF]
    if tf:
        raise InputError(
            f"{label} has weights only in TensorFlow/Keras formats ({', '.join(local)}); napari-impc-dl runs {', '.join(RUNNABLE_FORMATS)}",
            "Convert the model (e.g. with bioimageio.core's weight converters on a machine with TensorFlow) or choose another package",
        )
    if remote:
        raise InputError(
            f"{label} has no weights inside the package: {', '.join(remote)} only listed by URL; napari-impc-dl never downloads",
            "Download the complete package (zip with its weights) and import that",
        )
    raise InputError(f"{label} has no weights", "The package is incomplete")


def _check_usable(spec: ModelSpec, fmt: str, trust_code: bool) -> None:
    label = f"Package '{spec.name}'"
    if fmt in _TF:
        raise InputError(
            f"{label}: {fmt} weights are TensorFlow/Keras, which napari-impc-dl does not run (formats present locally: {', '.join(spec.local_formats)})",
            f"We run {', '.join(RUNNABLE_FORMATS)}",
        )
    if fmt == "onnx" and not _onnxruntime_available():
        raise InputError(f"{label}: running onnx weights needs onnxruntime, which is not installed", "pip install onnxruntime (in a clone: make setup, or pip install '.[onnx]'), or pick another format with --weights")
    if fmt == "pytorch_state_dict":
        arch = spec.weights[fmt].architecture or {}
        if not _arch_trusted(arch) and not trust_code:
            where = f"the Python file '{arch.get('source')}' inside the package" if arch.get("kind") == "file" else f"the module '{arch.get('import_from')}'"
            others = [f for f in spec.local_formats if f != fmt]
            raise InputError(
                f"{label}: its pytorch_state_dict weights need code from {where} to build the network, and package code runs only with explicit trust",
                "Re-run with --trust-code if you trust the package's source" + (f", or use another format present locally: {', '.join(others)}" if others else ""),
            )


def _module_from_file(path: Path, root: Path):
    name = "_impc_zoo_arch_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"Cannot load the architecture file '{path}'", "The package is malformed")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root))
    try:
        spec.loader.exec_module(mod)
    finally:
        try:
            sys.path.remove(str(root))
        except ValueError:
            pass
    return mod


def _build_architecture(spec: ModelSpec, arch: dict, trust_code: bool):
    import torch

    label = f"Package '{spec.name}'"
    kwargs = dict(arch.get("kwargs") or {})
    if arch["kind"] == "library":
        lib = _trusted_library(arch)
        trusted = lib is not None
        if not trusted and not trust_code:  # choose_format checked this; never build untrusted code
            raise InputError(f"{label}: building its architecture needs --trust-code", "")
        if not trusted:
            sys.path.insert(0, str(spec.package.root))
        try:
            mod = importlib.import_module(arch["import_from"])
        except ImportError as exc:
            raise InputError(f"{label}: its architecture comes from the module '{arch['import_from']}', which is not installed ({exc})", "Install it, or use another weight format") from None
        finally:
            if not trusted:
                try:
                    sys.path.remove(str(spec.package.root))
                except ValueError:
                    pass
        fn = getattr(mod, arch["callable"], None)
        if fn is None:
            raise InputError(f"{label}: '{arch['import_from']}' has no '{arch['callable']}'", "The package needs another library version")
        if trusted:
            ok = isinstance(fn, type) and issubclass(fn, torch.nn.Module) or fn.__name__ == "create_model"
            if not ok:
                raise InputError(f"{label}: '{arch['import_from']}.{arch['callable']}' is not a network class", "Refusing to call it; use --trust-code only if you trust the package")
            if lib == "segmentation_models_pytorch" or fn.__name__ == "create_model":  # timm classes take no 'pretrained'
                kwargs.update(_NO_DOWNLOAD[lib])
    else:
        if not trust_code:
            raise InputError(f"{label}: building its architecture runs the package's code", "Re-run with --trust-code if you trust its source")
        local = arch.get("local")
        if local is None:
            raise InputError(f"{label}: its architecture file is only given by URL ({arch.get('source')})", "napari-impc-dl never downloads; use another weight format")
        spec.package.check_sha256(local, arch.get("sha256"), "architecture source")
        fn = getattr(_module_from_file(local, spec.package.root), arch["callable"], None)
        if fn is None:
            raise InputError(f"{label}: '{arch.get('source')}' defines no '{arch['callable']}'", "The package is malformed")
    try:
        return fn(**kwargs)
    except Exception as exc:
        raise InputError(f"{label}: building its architecture failed ({type(exc).__name__}: {str(exc)[:200]})", "The package may need another library version; try another weight format") from None


class _TorchNet:
    def __init__(self, module) -> None:
        self.module = module.eval()
        self.kind = "torch"

    def to(self, device) -> None:
        import torch

        self.module = self.module.to(device)
        if device.type == "cpu":
            try:
                self.module = self.module.to(memory_format=torch.channels_last)
            except Exception:  # noqa: BLE001 - a script module may refuse; it runs anyway
                pass

    def __call__(self, xs: list):
        out = self.module(*xs)
        if isinstance(out, dict):
            out = list(out.values())
        if not isinstance(out, (list, tuple)):
            out = [out]
        return list(out)


class _OnnxNet:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.kind = "onnx"

    def to(self, device) -> None:
        pass

    def __call__(self, xs: list):
        import torch

        feed = {n: (x.detach().cpu().contiguous().numpy() if hasattr(x, "detach") else np.ascontiguousarray(x)) for n, x in zip(self.names, xs)}
        return [torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed)]


def load_network(spec: ModelSpec, fmt: str, trust_code: bool = False):
    """Load the weights of ``fmt`` (checked with :func:`choose_format` first) as a callable network."""
    import torch

    w = spec.weights[fmt]
    path = w.local
    label = f"Package '{spec.name}'"
    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _TorchNet(torch.jit.load(str(path), map_location="cpu"))
        if fmt == "pytorch_state_dict":
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as exc:
                raise InputError(f"{label}: its pytorch_state_dict file cannot be read as plain weights ({type(exc).__name__}: {str(exc)[:160]})", "Only tensors are loaded (weights_only=True); use another weight format") from None
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            net = _build_architecture(spec, w.architecture or {}, trust_code)
            try:
                net.load_state_dict(state, strict=w.strict)
            except Exception as exc:
                raise InputError(f"{label}: its weights do not fit its architecture ({str(exc)[:200]})", "The package needs another library version; try another weight format") from None
            return _TorchNet(net)
        if fmt == "onnx":
            return _OnnxNet(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{label}: cannot load its {fmt} weights ({type(exc).__name__}: {str(exc)[:200]})", "Try another weight format with --weights") from None
    raise InputError(f"{label}: {fmt} weights are not supported", f"We run {', '.join(RUNNABLE_FORMATS)}")


# ----------------------------------------------------------------------------- layouts


def _to_layout(x, src: tuple[str, ...], dst: tuple[str, ...]):
    """Permute ``x`` (torch or numpy) from dims ``src`` to ``dst``; dims only in one side must have size 1."""
    is_np = isinstance(x, np.ndarray)
    for i in reversed(range(len(src))):
        if src[i] not in dst:
            if x.shape[i] != 1:
                raise InputError(f"Cannot map axis '{src[i]}' of size {x.shape[i]} onto the model's axes {dst}", "")
            x = x.squeeze(i) if not is_np else x.squeeze(axis=i)
    cur = [d for d in src if d in dst]
    for d in dst:
        if d not in cur:
            cur.append(d)
            x = x[..., None] if is_np else x.unsqueeze(-1)
    perm = [cur.index(d) for d in dst]
    if perm == list(range(len(perm))):
        return x
    return x.transpose(perm) if is_np else x.permute(*perm)


def _snap(v: int, step: int, lo: int) -> int:
    if v <= lo or step <= 0:
        return lo
    return lo + math.ceil((v - lo) / step) * step


# ----------------------------------------------------------------------------- the adapter


class ZooModel:
    """A package as a Runnable (``mode="segment"``: foreground/distance probabilities; ``"raw"``: the package's output)."""

    def __init__(self, spec: ModelSpec, *, weights: str | None = None, trust_code: bool = False, mode: str = "segment", images: bool = True) -> None:
        self.spec = spec
        self.format = choose_format(spec, weights, trust_code)
        check_files(spec, formats=[self.format])
        self.net = load_network(spec, self.format, trust_code)
        self.mode = mode
        self.card = card_of(spec)
        self._device = None
        self._plane_stats: dict = {}
        self._dataset_cache = weakref.WeakKeyDictionary()  # image source -> {channels: dataset-wide statistics}
        self.pre_ops = {t.id: spec.ops(t) for t in spec.inputs}
        self.post_ops = {t.id: spec.ops(t) for t in spec.outputs}
        h = hashlib.sha256(spec.package.rdf.read_bytes())
        h.update((spec.weights[self.format].sha256 or _file_sha(spec.weights[self.format].local)).encode())
        self.content_hash = h.hexdigest()
        self.finalize_plane = None
        self.info = ModelInfo(name=spec.name, content_hash=self.content_hash[:12], in_channels=spec.inputs[0].n_channels() or 1, output_names=[t.id for t in spec.outputs], tiling=TileRules(), source=str(spec.package.source), extra={"weights": self.format, "format_version": spec.format_version})
        if images:
            self._setup_images()
        self.to("cpu")

    # ------------------------------------------------------------------ Runnable

    @property
    def device(self):
        return self._device

    def to(self, device) -> "ZooModel":
        import torch

        self._device = torch.device(device)
        if self.net.kind == "onnx" and self._device.type != "cpu":
            self._device = torch.device("cpu")
        self.net.to(self._device)
        # direct outputs are postprocessed on the device when every step runs there (decided here, never per batch)
        out = getattr(self, "out", None)
        self.post_on_device = out is not None and P.runs_on_device(self.post_ops[out.id], self._device.type)
        return self

    # ------------------------------------------------------------------ whole tensors (the package's own tests)

    def predict_tensors(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the package on whole tensors in its own axis order (one forward), with its pre/postprocessing."""
        import torch

        spec = self.spec
        missing = [t.id for t in spec.inputs if t.id not in inputs and not t.optional]
        if missing:
            raise InputError(f"Missing input tensor(s) {missing} for package '{spec.name}'", "")
        tensors = {t.id: (np.asarray(inputs[t.id]), t.dims) for t in spec.inputs if t.id in inputs}
        for tid, (arr, dims) in tensors.items():
            if arr.ndim != len(dims):
                raise InputError(f"Input '{tid}' has {arr.ndim} dimensions but the package describes axes {dims}", "")
        in_ids = set(tensors)
        every = [op for ops in list(self.pre_ops.values()) + list(self.post_ops.values()) for op in ops]
        stats = P.compute_stats([m for m in P.measures_of(every) if m.tensor in in_ids], tensors)
        xs = []
        for t in spec.inputs:
            if t.id in tensors:
                arr, dims = tensors[t.id]
                xs.append(torch.from_numpy(np.ascontiguousarray(P.apply_ops(self.pre_ops[t.id], arr, dims, stats))).to(self._device))
        with torch.inference_mode():
            ys = self.net(xs)
        if len(ys) < len(spec.outputs):
            raise InputError(f"Package '{spec.name}' describes {len(spec.outputs)} outputs but its network returned {len(ys)}", "The package is inconsistent")
        outs = {}
        for t, y in zip(spec.outputs, ys):
            y = y.detach().float().cpu().numpy() if y.dtype.is_floating_point else y.detach().cpu().numpy()
            if y.ndim != len(t.dims):
                raise InputError(f"Output '{t.id}' has {y.ndim} dimensions but the package describes axes {t.dims}", "The package is inconsistent")
            outs[t.id] = (y, t.dims)
        stats.update(P.compute_stats([m for m in P.measures_of(every) if m.tensor in outs], outs))
        return {t.id: P.apply_ops(self.post_ops[t.id], outs[t.id][0], t.dims, stats) for t in spec.outputs}

    # ------------------------------------------------------------------ images (the tiled engine)

    def _setup_images(self) -> None:
        spec = self.spec
        label = f"Package '{spec.name}'"
        from .classifier import class_output

        per_class = class_output(spec)
        if (self.card is not None and self.card.task == "classification") or (per_class is not None and not any(len(o.space) >= 2 for o in spec.outputs)):
            what = f"its output '{per_class.id}' has one value per class" if per_class is not None else "its card says so"
            raise InputError(f"{label} is a classifier ({what}), not a segmentation model", "Use it with `classify --model` (or an object classifier with `segment --classifier`)")
        required = [t for t in spec.inputs if not t.optional]
        if len(required) != 1:
            raise InputError(f"{label} needs {len(required)} input tensors; segment feeds one image", "Run it with bioimageio.core, or use a single-input package")
        t = self.inp = required[0]
        space = t.space
        if len(space) < 2:
            raise InputError(f"{label}: its input has {len(space)} spatial axis/axes; segment runs 2D models", "")
        for a in t.axes:
            if a.kind not in ("batch", "channel", "space") or (a.kind == "space" and a not in space[-2:]):
                if a.size is None or a.size.fixed != 1:
                    raise InputError(f"{label}: its input has a '{a.id}' axis of size {a.size.describe() if a.size else 'any'}; segment runs 2D (YX) models", "3D and time models are not supported by segment; `zoo test` still runs them")
        ya, xa = space[-2], space[-1]
        self.y_id, self.x_id = ya.id, xa.id
        n_ch = t.n_channels()
        if n_ch is None:
            raise InputError(f"{label}: its input's channel count is not fixed", "segment needs a fixed number of channels")
        self.c_in = t.channel.id if t.channel is not None else "__c"
        self.win_dims = (self.c_in, self.y_id, self.x_id)
        batch = next((a for a in t.axes if a.kind == "batch"), None)
        self.b_in = batch.id if batch is not None else None
        self.batch_one = batch is None or (batch.size is not None and batch.size.fixed == 1)

        fixed, mins, steps = [], [], []
        for a in (ya, xa):
            s = a.size
            if s is None:
                fixed.append(None), mins.append(1), steps.append(1)
            elif s.fixed is not None:
                fixed.append(s.fixed), mins.append(s.fixed), steps.append(1)
            elif s.min is not None:
                fixed.append(None), mins.append(s.min), steps.append(s.step or 1)
            else:
                raise InputError(f"{label}: its input size along '{a.id}' refers to another tensor", "segment needs a fixed or min + step size")
        # output: the first one as large as the input along y and x
        self.out = None
        for o in spec.outputs:
            osp = o.space
            if len(osp) < 2:
                continue
            oy, ox = osp[-2], osp[-1]
            ok = True
            offsets = []
            for oa, ia in ((oy, ya), (ox, xa)):
                s = oa.size
                if s is not None and s.ref is not None and s.ref[0] == t.id and s.ref[1] == ia.id and abs(s.factor - 1) < 1e-9:
                    offsets.append(s.offset)
                elif s is not None and s.fixed is not None and ia.size is not None and ia.size.fixed == s.fixed:
                    offsets.append(0)
                else:
                    ok = False
            extra = [a for a in o.axes if a.kind not in ("batch", "channel") and a not in (oy, ox) and not (a.size is not None and a.size.fixed == 1)]
            if ok and not extra:
                self.out, self.oy_id, self.ox_id, self.offsets = o, oy.id, ox.id, offsets
                self.out_halo = max(oy.halo, ox.halo)
                break
        if self.out is None:
            raise InputError(f"{label}: none of its outputs has the input's height and width", "segment needs an output the size of its input (a map per pixel)")
        o = self.out
        self.c_out = o.channel.id if o.channel is not None else "__c"
        bo = next((a for a in o.axes if a.kind == "batch"), None)
        self.b_out = bo.id if bo is not None else "__b"
        self.out_dims = (self.b_out, self.c_out, self.oy_id, self.ox_id)
        self.k_raw = o.n_channels() or 1
        halo = max(MIN_HALO, self.out_halo, *(max(0, -off) // 2 + 1 for off in self.offsets if off))

        ops_out = self.post_ops[o.id]
        self.post_measures = P.measures_of(ops_out)
        self.needs_output_stats = any(m.tensor != t.id for m in self.post_measures)
        in_measures = [m for m in P.measures_of(self.pre_ops[t.id]) + self.post_measures if m.tensor == t.id]
        self.in_measures = in_measures
        names = list(o.channel.channel_names) if o.channel is not None and o.channel.channel_names else [f"{o.id}{i}" for i in range(self.k_raw)]
        self.channel_names = names
        self.roles = _roles(names)
        self.boundary_index = _boundary_index(names, self.roles)
        self.bounds = P.output_bounds(ops_out, o.data_range)
        probs = self.bounds is not None and self.bounds[0] >= 0 and self.bounds[1] <= 1

        if self.mode == "raw":
            out_names = names
        else:
            if self.roles[1] is not None and probs:
                out_names = ["foreground", "distance"]
            elif self.roles[1] is None and self.boundary_index is not None:
                out_names = ["foreground", "boundary"]  # seeds from the interiors (inference.seeds)
            else:
                out_names = ["foreground"]
        self.direct = not self.needs_output_stats and (self.mode == "raw" or probs)
        if not self.direct:
            self.finalize_plane = self._finalize

        card = self.card
        tile = card.tiling.tile if card is not None else DEFAULT_TILE
        if all(f is not None for f in fixed):
            tile = max(fixed)
            halo = min(halo, max(0, (min(fixed) - 1) // 2 - 1))
        rules = TileRules(
            tile=max(tile, max(_snap(2 * halo + 4 * s, s, m) for s, m in zip(steps, mins))),
            halo=halo,
            step=steps[0] if steps[0] == steps[1] else tuple(steps),
            min_tile=mins[0] if mins[0] == mins[1] else tuple(mins),
            fixed=(fixed[0] if fixed[0] == fixed[1] else tuple(fixed)) if all(f is not None for f in fixed) else None,
        )
        self.info = ModelInfo(
            name=spec.name, content_hash=self.content_hash[:12], in_channels=n_ch, output_names=out_names, tiling=rules,
            source=str(spec.package.source), extra={"weights": self.format, "format_version": spec.format_version, "output": o.id, "channels": names},
        )

    def _windows(self, read, H: int, W: int, channels=None):
        rows = max(1, (1 << 22) // max(1, W))
        for y0 in range(0, H, rows):
            x = read(slice(y0, min(H, y0 + rows)), slice(0, W))
            yield x if channels is None else x[channels]

    def normalizer_for_image(self, source, plane, channels=None):
        """Per-image normaliser with statistics of the whole plane (or of all planes, for dataset-wide measures), streamed."""
        H, W = source.spatial_shape
        C = self.info.in_channels
        sample_ms = [m for m in self.in_measures if not P._dataset_mode(m.axes) and self._spatial(m)]
        dataset_ms = [m for m in self.in_measures if P._dataset_mode(m.axes) and self._spatial(m)]
        stats = {}
        if sample_ms:
            reader = lambda ys, xs: source.read(plane, ys, xs)  # noqa: E731
            stats.update(P.StreamedStats(sample_ms, self.win_dims, C).compute(lambda: self._windows(reader, H, W, channels)))
        if dataset_ms:  # over every plane of the image, computed once per image
            key = tuple(channels) if channels is not None else None
            per_source = self._dataset_cache.setdefault(source, {})
            if key not in per_source:
                planes = list(source.planes())

                def all_windows():
                    for p in planes:
                        yield from self._windows(lambda ys, xs, p=p: source.read(p, ys, xs), H, W, channels)

                per_source[key] = P.StreamedStats(dataset_ms, self.win_dims, C).compute(all_windows)
            stats.update(per_source[key])
        return self._normalizer(stats)

    def _spatial(self, m: P.Measure) -> bool:
        return m.axes is None or (self.y_id in m.axes and self.x_id in m.axes)

    def _normalizer(self, stats: dict):
        self._plane_stats = stats
        ops = self.pre_ops[self.inp.id]
        local = [m for m in self.in_measures if not self._spatial(m)]
        dims = self.win_dims

        def normalize(x: np.ndarray) -> np.ndarray:
            st = stats
            if local:
                st = dict(stats)
                st.update(P.compute_stats(local, {self.inp.id: (x, dims)}))
            return np.ascontiguousarray(P.apply_ops(ops, x, dims, st))

        return normalize

    def fit_normalizer(self, sample: np.ndarray):
        """Fallback for callers without an image source: statistics of a ``(C, N)`` pixel sample."""
        s = np.asarray(sample)[:, None, :]
        ms = [m for m in self.in_measures if self._spatial(m)]
        return self._normalizer(P.StreamedStats(ms, self.win_dims, s.shape[0]).compute(lambda: [s]) if ms else {})

    def _network(self, x):
        """``(B, C, h, w)`` preprocessed batch -> the chosen output, ``(B, K, h, w)`` torch, before postprocessing."""
        import torch

        in_dims = tuple(a.id for a in self.inp.axes)
        canon = ("__b", self.c_in, self.y_id, self.x_id)
        if self.b_in is not None:
            canon = (self.b_in,) + canon[1:]
        if self.batch_one and x.shape[0] > 1:
            return torch.cat([self._network(x[i : i + 1]) for i in range(x.shape[0])])
        xi = x if self.b_in is not None else x[0]
        src = canon if self.b_in is not None else canon[1:]
        xm = _to_layout(xi, src, in_dims)
        ys = self.net([xm])
        idx = self.spec.outputs.index(self.out)
        y = ys[idx]
        o_dims = tuple(a.id for a in self.out.axes)
        if self.b_out == "__b":
            y = y.unsqueeze(0)
            o_dims = ("__b",) + o_dims
        y = _to_layout(y, o_dims, self.out_dims)
        h, w = x.shape[-2:]
        dh, dw = h - y.shape[-2], w - y.shape[-1]
        if dh or dw:
            if dh < 0 or dw < 0:
                y = y[..., (-dh) // 2 : (-dh) // 2 + h, (-dw) // 2 : (-dw) // 2 + w]
            else:
                y = torch.nn.functional.pad(y, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return y

    def forward(self, x):
        """``(B, C, h, w)`` batch -> ``(B, K, h, w)`` float32 on ``x``'s device.

        Direct outputs are postprocessed here. When every step runs on torch tensors
        (:attr:`post_on_device`, decided in :meth:`to`), that happens on the device: no copy to
        the host, no synchronisation per batch (statistics reach the device once per image).
        Otherwise (a step without a torch path on this device) the batch takes the numpy path.
        """
        y = self._network(x)
        if not self.direct:
            return y.float()
        if not self.post_on_device:
            return self._forward_host(x, y)
        y = y.detach()
        y = y.float() if y.dtype.is_floating_point else y
        y = P.apply_ops(self.post_ops[self.out.id], y, self.out_dims, self._plane_stats).float()
        if self.mode != "raw":
            y = self._probabilities(y)
        return y.to(x.device).contiguous()

    def _forward_host(self, x, y):
        """The numpy path of :meth:`forward`: the batch goes to the host and back (packages with a step torch cannot run)."""
        import torch

        yn = y.detach().float().cpu().numpy() if y.dtype.is_floating_point else y.detach().cpu().numpy()
        yn = P.apply_ops(self.post_ops[self.out.id], yn, self.out_dims, self._plane_stats).astype(np.float32, copy=False)
        if self.mode != "raw":
            yn = self._probabilities(yn)
        return torch.from_numpy(np.ascontiguousarray(yn)).to(x.device)

    def _probabilities(self, y):
        """The maps ``segment`` uses (foreground, then distance or boundary) from postprocessed outputs, numpy or torch."""
        fg_i, dist_i = self.roles
        fg = 1.0 - y[:, fg_i[1]] if isinstance(fg_i, tuple) else y[:, fg_i]
        maps = [fg]
        if "distance" in self.info.output_names:
            maps.append(y[:, dist_i])
        elif "boundary" in self.info.output_names:
            maps.append(y[:, self.boundary_index])
        if isinstance(y, np.ndarray):
            return np.stack(maps, axis=1)
        import torch

        return torch.stack(maps, dim=1)

    def raw_buffer(self, shape: tuple[int, int]):
        """Float32 scratch ``(K, H, W)`` for outputs that need whole-image postprocessing (disk-backed when large)."""
        H, W = shape
        n = self.k_raw * H * W
        if n * 4 <= 2**30:
            return np.zeros((self.k_raw, H, W), np.float32)
        import tempfile

        from .library import home

        home().mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=".raw-", suffix=".npy", dir=home())
        os.close(fd)
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(self.k_raw, H, W))
        os.unlink(path)  # the mapping keeps the data until it is released
        return arr

    def _finalize(self, raw, out) -> None:
        """Whole-image postprocessing of ``raw`` (network outputs), then ``out``: probabilities (uint8) or the package's outputs (float)."""
        H, W = raw.shape[1:]
        rows = max(1, (1 << 22) // max(1, W * self.k_raw))
        dims = self.out_dims[1:]
        ops = self.post_ops[self.out.id]
        stats = dict(self._plane_stats)
        out_ms = [m for m in self.post_measures if m.tensor == self.out.id]
        if out_ms:
            stats.update(P.StreamedStats(out_ms, dims, self.k_raw).compute(lambda: (raw[:, y : y + rows] for y in range(0, H, rows))))
        k = len(self.info.output_names) if self.mode != "raw" else 0
        lo, hi = np.full(k, math.inf), np.full(k, -math.inf)
        for y in range(0, H, rows):
            v = P.apply_ops(ops, np.asarray(raw[:, y : y + rows]), dims, stats).astype(np.float32, copy=False)
            raw[:, y : y + rows] = v
            if self.mode != "raw":
                f = self._probabilities(v[None])[0]
                lo, hi = np.minimum(lo, f.min(axis=(1, 2))), np.maximum(hi, f.max(axis=(1, 2)))
        if self.mode == "raw":
            for y in range(0, H, rows):
                out[:, y : y + rows] = raw[:, y : y + rows]
            return
        # each map (foreground, boundary) outside [0, 1] is mapped so that its Otsu threshold lands on 0.5
        mappings = [None if (lo[c] >= 0 and hi[c] <= 1) else self._otsu_mapping(raw, rows, float(lo[c]), float(hi[c]), c) for c in range(k)]
        for y in range(0, H, rows):
            p = self._probabilities(np.asarray(raw[:, y : y + rows])[None])[0]
            for c, mapping in enumerate(mappings):
                if mapping is not None:
                    p[c] = mapping(p[c])
            p = np.clip(p, 0, 1)
            out[:, y : y + rows] = (p * 255.0 + 0.5).astype(np.uint8)

    def _otsu_mapping(self, raw, rows: int, lo: float, hi: float, channel: int = 0):
        from skimage.filters import threshold_otsu

        H = raw.shape[1]
        bins = 1024
        counts = np.zeros(bins, np.int64)
        if hi <= lo:
            return lambda v: np.zeros_like(v)
        for y in range(0, H, rows):
            f = self._probabilities(np.asarray(raw[:, y : y + rows])[None])[0, channel]
            counts += np.histogram(f, bins=bins, range=(lo, hi))[0]
        centers = lo + (np.arange(bins) + 0.5) * (hi - lo) / bins
        t = float(threshold_otsu(hist=(counts, centers)))
        t = min(max(t, lo + 1e-12), hi - 1e-12)

        def mapping(v):
            return np.where(v < t, 0.5 * (v - lo) / (t - lo), 0.5 + 0.5 * (v - t) / (hi - t)).astype(np.float32)

        if channel == 0:
            self.info.extra["otsu_threshold"] = t
        return mapping


def _roles(names: list[str]):
    """``(foreground index or ("1-", background index), distance index or None)`` from channel names."""
    dist = next((i for i, n in enumerate(names) if _DIST.search(n)), None)
    rest = [i for i in range(len(names)) if i != dist]
    fg = [i for i in rest if _FG.search(names[i]) and not _BG.search(names[i]) and not _BD.search(names[i])]
    if fg:
        return fg[0], dist
    plain = [i for i in rest if not _BG.search(names[i]) and not _BD.search(names[i])]
    if plain:
        return plain[0], dist
    bg = [i for i in rest if _BG.search(names[i])]
    if bg:
        return ("1-", bg[0]), dist
    return (rest[0] if rest else 0), dist


def _boundary_index(names: list[str], roles) -> int | None:
    """The first channel named like a boundary (``boundary``, ``contour``, ``edge``, ``border``) that is not the foreground."""
    fg = roles[0][1] if isinstance(roles[0], tuple) else roles[0]
    return next((i for i, n in enumerate(names) if _BD.search(n) and i != fg and i != roles[1]), None)


def _file_sha(path: Path | None) -> str:
    if path is None:
        return ""
    from .package import sha256_file

    return sha256_file(path)


# ----------------------------------------------------------------------------- entry points


def resolve(ref, *, cache_dir: Path | None = None):
    """A package path (zip, folder, yaml) or a model-library name -> an opened :class:`~.package.Package`."""
    from . import library
    from .package import open_package

    p = Path(str(ref)).expanduser()
    if p.exists():
        return open_package(p, cache_dir=cache_dir)
    entry = library.find(str(ref))
    if entry is not None:
        return open_package(entry.folder)
    names = ", ".join(e.name for e in library.entries()) or "none imported yet"
    raise InputError(f"'{ref}' is neither a file nor a model in the library (library models: {names})", "Import a package with `napari-impc-dl zoo import PKG.zip`, or give its path")


def load_package(ref, *, device: str = "cpu", weights: str | None = None, trust_code: bool = False, mode: str = "segment", images: bool = True) -> ZooModel:
    """Open, validate and load a package (path or library name) as a :class:`ZooModel` on ``device``."""
    from .spec import describe

    spec = describe(resolve(ref))
    return ZooModel(spec, weights=weights, trust_code=trust_code, mode=mode, images=images).to(device)


def predict_image(model: ZooModel, image, *, tile: int | None = None, halo: int | None = None, batch: int = 4, progress=None, cancel=None) -> np.ndarray:
    """The package's own output for a 2D image (``(C, H, W)`` or ``(H, W)`` array or ImageSource), float32 ``(K, H, W)``.

    Uses the tiled engine with whole-image statistics, like ``segment`` (``model`` must be in ``mode="raw"``).
    """
    from ..inference.engine import predict_plane
    from ..io.image import ImageSource

    if model.mode != "raw":
        raise ValueError("predict_image needs a ZooModel in mode='raw'")
    src = image if isinstance(image, ImageSource) else ImageSource.from_array(np.asarray(image), name="image", channel_axis=0 if np.ndim(image) == 3 else None)
    H, W = src.spatial_shape
    plane = next(iter(src.planes()))
    normalize = model.normalizer_for_image(src, plane)
    out = np.zeros((len(model.info.output_names), H, W), np.float32)
    target = out if model.finalize_plane is None else model.raw_buffer((H, W))
    predict_plane(model, lambda t: src.read(plane, slice(t.y0, t.y1), slice(t.x0, t.x1)), (H, W), target, normalize, tile=tile, halo=halo, batch=batch, progress=progress, cancel=cancel)
    if model.finalize_plane is not None:
        model.finalize_plane(target, out)
    return out


def with_tiling(model: ZooModel, **changes) -> ZooModel:
    """The same model with other tile rules (e.g. ``fixed=512`` for a benchmark with a given block shape)."""
    model.info.tiling = replace(model.info.tiling, **changes)
    return model
