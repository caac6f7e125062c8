"""The BioImage Model Zoo's pre- and postprocessing operations, in numpy or torch, for spec 0.4 and 0.5.

Each step of a package's ``preprocessing`` / ``postprocessing`` list becomes an :class:`Op`
(:func:`parse_op` reads both naming styles: 0.4 ``name`` + ``mode``/axis letters, 0.5 ``id`` +
axis ids). An op works on a numpy array whose axes are named (``dims``: the tensor's axis ids, e.g.
``("batch", "channel", "y", "x")``) and may need *measures* (mean, std, quantiles) of a tensor.

Statistics follow bioimageio.core: every measure is computed on the tensor **as it enters the
pipeline** (the raw input; for outputs, the raw network output), not on the result of the steps
before it, and a measure reduces over the axes its op names (``axes`` ``None``: all axes). Axes
that are not reduced are kept (e.g. per channel, per sample). Quantile methods are core's:
``linear`` for ``scale_range`` and dataset quantiles, ``inverted_cdf`` for per-sample ``clip``
percentiles.

Two ways to get measures, with identical results:

* :func:`compute_stats` reduces whole in-memory tensors (the package's test tensors);
* :class:`StreamedStats` streams windows of an image of any size (the tiled engine): moments are
  merged exactly (Chan et al.), quantiles are *exact* order statistics found by histogram
  refinement over repeated passes (integer images of 8/16 bits: one exact histogram pass), so
  statistics never depend on the tiling and never need the whole image in memory.

**Torch tensors** run every op (and :func:`compute_stats`) on the tensor's own device, so a
package's postprocessing never leaves the GPU. The numbers are the numpy path's: float32 stays
float32 (float64 stays float64; half precision and integers are computed as float32 / float64, as
numpy promotes them); constants (per-axis values, statistics, which may be float64 numpy arrays)
are moved to the device once per device and statistics object, not per batch. Where numpy
computes in float64 because a statistic is float64 (``x - mean``), the torch path stays in float32
and subtracts the statistic as two float32 parts (``hi + lo``), which keeps the result within a
few float32 ulps of numpy's even when ``x`` is close to the statistic. :meth:`Op.device_ok` says
whether an op runs on a device type; callers decide once (``runs_on_device``) and keep the numpy
path for a package with any op that does not (``ensure_dtype`` to an unsigned type wider than
8 bits, float64 on MPS). torch is never imported here: numpy inputs never touch it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError

#: 0.4 axis letters -> the axis ids we use for 0.4 tensors
LETTERS_04 = {"b": "batch", "c": "channel", "t": "time", "i": "index", "x": "x", "y": "y", "z": "z"}


@dataclass(frozen=True)
class Measure:
    """A statistic of one tensor, reduced over ``axes`` (``None``: all axes)."""

    tensor: str
    kind: str  # "mean" | "std" | "quantile"
    axes: tuple[str, ...] | None
    q: float = 0.0
    method: str = "linear"


Stats = dict  # Measure -> np.ndarray with the tensor's dims (reduced ones of size 1)


def _axes_04(axes: str | None, mode: str | None) -> tuple[str, ...] | None:
    if axes is None:
        return ("batch",) if mode == "per_dataset" else None
    ids = [LETTERS_04.get(a, a) for a in axes]
    if mode == "per_dataset" and "batch" not in ids:
        ids.insert(0, "batch")
    return tuple(ids)


def _axes_05(axes) -> tuple[str, ...] | None:
    return None if axes is None else tuple(str(a) for a in axes)


def _dataset_mode(axes: tuple[str, ...] | None) -> bool:
    return axes is None or "batch" in axes


def _along(values, axis: str, x: np.ndarray, dims: Sequence[str]) -> np.ndarray:
    """``values`` (one per entry of ``axis``) shaped to broadcast against ``x``."""
    v = np.asarray(values, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(()) if v.ndim == 0 else v.reshape(())
    if axis not in dims:
        raise InputError(f"Processing refers to axis '{axis}', which the tensor ({', '.join(dims)}) does not have", "The package is inconsistent; ask its authors")
    shape = [1] * len(dims)
    shape[list(dims).index(axis)] = v.size
    if x.shape[list(dims).index(axis)] != v.size:
        raise InputError(f"Processing gives {v.size} values along axis '{axis}' but the tensor has {x.shape[list(dims).index(axis)]} there", "The package is inconsistent; ask its authors")
    return v.reshape(shape)


def _stat(stats: Stats, m: Measure, dims: Sequence[str]) -> np.ndarray:
    v = stats[m]
    v = np.asarray(v)
    if v.ndim and v.ndim != len(dims):
        raise AssertionError(f"measure {m} has shape {v.shape} for dims {dims}")
    return v


# ----------------------------------------------------------------------------- torch helpers


def _torch_of(x):
    """The torch module when ``x`` is a torch tensor, else None (never imports torch)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


def is_torch(x) -> bool:
    return _torch_of(x) is not None


def _tfloat(x):
    """``x`` in the dtype numpy computes it in: float32 / float64 as they are, half precision as float32,
    integers and bool as float64 (float32 on MPS, which has no float64)."""
    torch = _torch_of(x)
    if x.dtype in (torch.float32, torch.float64):
        return x
    if x.is_floating_point() or x.device.type == "mps":
        return x.float()
    return x.double()


def _weak(v) -> bool:
    """A plain Python number: numpy (NEP 50) and torch both compute it in the array's dtype."""
    return type(v) in (int, float)


def _host(v, torch):
    """A parameter or statistic as a float torch tensor, in its own precision (numpy on the CPU; torch tensors stay put)."""
    if isinstance(v, torch.Tensor):
        return v if v.is_floating_point() else v.to(torch.float32 if v.device.type == "mps" else torch.float64)
    a = np.asarray(v)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return torch.from_numpy(np.array(a, copy=True))


def _const(v, x):
    """``v`` for ``x``'s ops: a Python number as it is, anything else a tensor in ``x``'s dtype on ``x``'s device."""
    if _weak(v):
        return v
    torch = _torch_of(x)
    return _host(v, torch).to(dtype=x.dtype).to(x.device)


def _split(v, x):
    """``v`` (a float64 value) as ``(hi, lo)`` in ``x``'s dtype, ``hi + lo == v`` to twice that precision (``lo`` None when not needed)."""
    if _weak(v):
        return v, None
    torch = _torch_of(x)
    t = _host(v, torch)
    hi = t.to(x.dtype)
    if t.dtype == x.dtype or t.device.type == "mps":
        return hi.to(x.device), None
    lo = (t - hi.to(t.dtype)).to(x.dtype)
    return hi.to(x.device), lo.to(x.device)


def _sub(x, hi, lo):
    y = x - hi
    return y if lo is None else y.sub_(lo)


def _tstat(stats: Stats, m: Measure, dims: Sequence[str]):
    """A statistic for the torch path: a torch tensor as it is, anything else as :func:`_stat` reads it."""
    v = stats[m]
    if is_torch(v):
        if v.ndim and v.ndim != len(dims):
            raise AssertionError(f"measure {m} has shape {tuple(v.shape)} for dims {dims}")
        return v
    return _stat(stats, m, dims)


#: ``ensure_dtype`` targets the torch path casts to (torch's uint16/32/64 lack most kernels)
_TORCH_DTYPES = frozenset({"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"})


# ----------------------------------------------------------------------------- operations


@dataclass
class Op:
    """One processing step on tensor ``tensor`` (a numpy array, or a torch tensor on any device)."""

    name: str
    tensor: str

    @property
    def measures(self) -> list[Measure]:
        return []

    def __call__(self, x, dims: Sequence[str], stats: Stats):
        if is_torch(x):
            return self._torch(x, dims, stats)
        return self._numpy(x, dims, stats)

    def _numpy(self, x: np.ndarray, dims: Sequence[str], stats: Stats) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _torch(self, x, dims: Sequence[str], stats: Stats):
        raise NotImplementedError(f"processing step '{self.name}' has no torch implementation")

    def device_ok(self, device_type: str) -> bool:
        """Whether :meth:`_torch` runs on a device of this type with the numpy path's numbers (decided once per package)."""
        return type(self)._torch is not Op._torch

    def _consts(self, x, dims, values: tuple, make: Callable[[], tuple]) -> tuple:
        """``make()`` (device tensors) once per device, dtype, axes and statistics (compared by identity), not per batch.

        Keeps the latest entry only (the statistics of the image being processed); references to
        ``values`` are held so their identities cannot be reused by other objects.
        """
        axis = getattr(self, "axis", None)  # per-axis values are checked against the tensor's size along that axis
        key = (str(x.device), x.dtype, tuple(dims), x.shape[list(dims).index(axis)] if axis in dims else None)
        c = self.__dict__.get("_device_consts")
        if c is not None and c[0] == key and len(c[1]) == len(values) and all(a is b for a, b in zip(c[1], values)):
            return c[2]
        out = make()
        self.__dict__["_device_consts"] = (key, tuple(values), out)
        return out

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_device_consts", None)  # device tensors are a cache, never part of the op
        return state

    @property
    def bounds(self) -> tuple[float, float] | None:
        """Known range of the result, when the op itself guarantees one (sigmoid: (0, 1))."""
        return None

    changes_values = True


def runs_on_device(ops: Iterable[Op], device_type: str) -> bool:
    """True when every op of ``ops`` runs on torch tensors of ``device_type`` (``"cuda"``, ``"mps"``, ``"cpu"``)."""
    return all(op.device_ok(device_type) for op in ops)


@dataclass
class EnsureDtype(Op):
    dtype: str = "float32"
    changes_values = False

    def _numpy(self, x, dims, stats):
        return x.astype(self.dtype, copy=False)

    def _torch(self, x, dims, stats):
        name = str(np.dtype(self.dtype))
        if name not in _TORCH_DTYPES:
            raise NotImplementedError(f"ensure_dtype to {name} has no torch path; run this package's processing in numpy")
        return x.to(getattr(_torch_of(x), name))

    def device_ok(self, device_type):
        # torch's uint16/32/64 lack most kernels; MPS has no float64: those packages keep the numpy path
        try:
            name = str(np.dtype(self.dtype))
        except TypeError:
            return False
        return name in _TORCH_DTYPES and not (device_type == "mps" and name == "float64")


@dataclass
class Binarize(Op):
    threshold: float | list[float] = 0.5
    axis: str | None = None

    def _numpy(self, x, dims, stats):
        t = self.threshold if self.axis is None else _along(self.threshold, self.axis, x, dims)
        return x > t

    def _torch(self, x, dims, stats):
        if not x.is_floating_point():
            x = _tfloat(x)
        if self.axis is None and _weak(self.threshold):
            return x > self.threshold
        (t,) = self._consts(x, dims, (), lambda: (self._threshold(x, dims),))
        return x > t

    def _threshold(self, x, dims):
        if self.axis is not None:  # float32 values per entry of the axis, as numpy compares them
            return _const(_along(self.threshold, self.axis, _np_like(x), dims), x)
        t = np.asarray(self.threshold, np.float64)  # numpy compares float32 with these float64 values:
        if x.dtype == _torch_of(x).float32:  # x > t  <=>  x > (the largest float32 <= t)
            t32 = t.astype(np.float32)
            t = np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32)
        return _const(t, x)

    @property
    def bounds(self):
        return (0.0, 1.0)


def _np_like(x):
    """An empty numpy stand-in with ``x``'s shape and float dtype, for :func:`_along`'s checks (no data is copied)."""
    dt = np.float64 if str(x.dtype) == "torch.float64" else np.float32
    return np.broadcast_to(np.zeros((), dt), tuple(x.shape))


@dataclass
class Clip(Op):
    min: float | Measure | None = None
    max: float | Measure | None = None

    @property
    def measures(self):
        return [m for m in (self.min, self.max) if isinstance(m, Measure)]

    def _numpy(self, x, dims, stats):
        lo, hi = self.min, self.max
        if isinstance(lo, Measure):
            lo = _stat(stats, lo, dims).astype(x.dtype if x.dtype.kind == "f" else np.float64)
        if isinstance(hi, Measure):
            hi = _stat(stats, hi, dims).astype(x.dtype if x.dtype.kind == "f" else np.float64)
        if lo is not None:
            x = np.maximum(x, lo) if isinstance(lo, np.ndarray) else np.clip(x, lo, None)
        if hi is not None:
            x = np.minimum(x, hi) if isinstance(hi, np.ndarray) else np.clip(x, None, hi)
        return x

    def _torch(self, x, dims, stats):
        torch = _torch_of(x)
        if any(isinstance(b, Measure) for b in (self.min, self.max)) or not x.is_floating_point():
            x = _tfloat(x)
        bounds = [self.min, self.max]
        values = tuple(stats[b] for b in bounds if isinstance(b, Measure))

        def make():
            return tuple(_const(_tstat(stats, b, dims), x) if isinstance(b, Measure) else b for b in bounds)

        lo, hi = self._consts(x, dims, values, make) if values else bounds
        if lo is not None:
            x = torch.maximum(x, lo) if isinstance(lo, torch.Tensor) else torch.clamp(x, min=lo)
        if hi is not None:
            x = torch.minimum(x, hi) if isinstance(hi, torch.Tensor) else torch.clamp(x, max=hi)
        return x

    @property
    def bounds(self):
        if isinstance(self.min, (int, float)) and isinstance(self.max, (int, float)):
            return (float(self.min), float(self.max))
        return None


@dataclass
class ScaleLinear(Op):
    gain: float | list[float] = 1.0
    offset: float | list[float] = 0.0
    axis: str | None = None

    def _scalars(self):
        g = self.gain[0] if isinstance(self.gain, list) else self.gain
        o = self.offset[0] if isinstance(self.offset, list) else self.offset
        return g, o

    def _numpy(self, x, dims, stats):
        if self.axis is None:
            g, o = self._scalars()
        else:
            g, o = _along(self.gain, self.axis, x, dims), _along(self.offset, self.axis, x, dims)
        return x * g + o

    def _torch(self, x, dims, stats):
        x = _tfloat(x)
        if self.axis is None:
            g, o = self._scalars()
            if _weak(g) and _weak(o):
                return x * g + o
            g, o = self._consts(x, dims, (), lambda: (_const(g, x), _const(o, x)))
        else:
            nx = _np_like(x)
            g, o = self._consts(x, dims, (), lambda: (_const(_along(self.gain, self.axis, nx, dims), x), _const(_along(self.offset, self.axis, nx, dims), x)))
        return (x * g).add_(o)


@dataclass
class Sigmoid(Op):
    def _numpy(self, x, dims, stats):
        return 1.0 / (1.0 + np.exp(-x))

    def _torch(self, x, dims, stats):
        # numpy's formula, not torch.sigmoid: exp(-x) overflowing to inf gives exactly 0 in both
        return _torch_of(x).neg(_tfloat(x)).exp_().add_(1.0).reciprocal_()

    @property
    def bounds(self):
        return (0.0, 1.0)


@dataclass
class Softmax(Op):
    axis: str = "channel"

    def _numpy(self, x, dims, stats):
        from scipy.special import softmax

        return softmax(x, axis=list(dims).index(self.axis))

    def _torch(self, x, dims, stats):
        return _torch_of(x).softmax(_tfloat(x), dim=list(dims).index(self.axis))

    @property
    def bounds(self):
        return (0.0, 1.0)


@dataclass
class FixedZeroMeanUnitVariance(Op):
    mean: float | list[float] = 0.0
    std: float | list[float] = 1.0
    axis: str | None = None
    eps: float = 1e-6

    def _numpy(self, x, dims, stats):
        if self.axis is None:
            m, s = self.mean, self.std
        else:
            m, s = _along(self.mean, self.axis, x, dims), _along(self.std, self.axis, x, dims)
        return (x - m) / (s + self.eps)

    def _torch(self, x, dims, stats):
        x = _tfloat(x)
        if self.axis is None and _weak(self.mean) and _weak(self.std):
            return (x - self.mean) / (self.std + self.eps)

        def make():
            if self.axis is None:  # numpy: (x - m) / (s + eps) in float64 for list values
                m, s = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
                return (*_split(m, x), _const(s + self.eps, x))
            nx = _np_like(x)  # per-axis values in x's dtype, as numpy has them
            return (_const(_along(self.mean, self.axis, nx, dims), x), None, _const(_along(self.std, self.axis, nx, dims) + self.eps, x))

        hi, lo, den = self._consts(x, dims, (), make)
        return _sub(x, hi, lo).div_(den)


@dataclass
class ZeroMeanUnitVariance(Op):
    axes: tuple[str, ...] | None = None
    eps: float = 1e-6

    @property
    def measures(self):
        return [Measure(self.tensor, "mean", self.axes), Measure(self.tensor, "std", self.axes)]

    def _numpy(self, x, dims, stats):
        mean, std = (_stat(stats, m, dims) for m in self.measures)
        return (x - mean) / (std + self.eps)

    def _torch(self, x, dims, stats):
        x = _tfloat(x)
        ms = self.measures

        def make():
            mean, std = (_tstat(stats, m, dims) for m in ms)
            return (*_split(mean, x), _const(_host(std, _torch_of(x)) + self.eps, x))

        hi, lo, den = self._consts(x, dims, tuple(stats[m] for m in ms), make)
        return _sub(x, hi, lo).div_(den)


@dataclass
class ScaleRange(Op):
    axes: tuple[str, ...] | None = None
    min_percentile: float = 0.0
    max_percentile: float = 100.0
    eps: float = 1e-6
    reference_tensor: str | None = None

    @property
    def measures(self):
        ref = self.reference_tensor or self.tensor
        method = "linear"
        return [
            Measure(ref, "quantile", self.axes, self.min_percentile / 100.0, method),
            Measure(ref, "quantile", self.axes, self.max_percentile / 100.0, method),
        ]

    def _numpy(self, x, dims, stats):
        lo, hi = (_stat(stats, m, dims) for m in self.measures)
        return (x - lo) / (hi - lo + self.eps)

    def _torch(self, x, dims, stats):
        x = _tfloat(x)
        ms = self.measures

        def make():
            torch = _torch_of(x)
            lo, hi = (_tstat(stats, m, dims) for m in ms)
            tlo, thi = _host(lo, torch), _host(hi, torch)
            wide = torch.promote_types(tlo.dtype, thi.dtype)  # numpy's (hi - lo + eps), in the statistics' precision
            return (*_split(tlo.to(wide), x), _const(thi.to(wide) - tlo.to(wide) + self.eps, x))

        a, b, den = self._consts(x, dims, tuple(stats[m] for m in ms), make)
        return _sub(x, a, b).div_(den)


@dataclass
class ScaleMeanVariance(Op):
    reference_tensor: str = ""
    axes: tuple[str, ...] | None = None
    eps: float = 1e-6

    @property
    def measures(self):
        ref = self.reference_tensor or self.tensor
        return [
            Measure(self.tensor, "mean", self.axes),
            Measure(self.tensor, "std", self.axes),
            Measure(ref, "mean", self.axes),
            Measure(ref, "std", self.axes),
        ]

    def _numpy(self, x, dims, stats):
        mean, std, rmean, rstd = (_stat(stats, m, dims) for m in self.measures)
        return (x - mean) / (std + self.eps) * (rstd + self.eps) + rmean

    def _torch(self, x, dims, stats):
        x = _tfloat(x)
        ms = self.measures

        def make():
            torch = _torch_of(x)
            mean, std, rmean, rstd = (_tstat(stats, m, dims) for m in ms)
            return (*_split(mean, x), _const(_host(std, torch) + self.eps, x), _const(_host(rstd, torch) + self.eps, x), *_split(rmean, x))

        mh, ml, den, gain, rh, rl = self._consts(x, dims, tuple(stats[m] for m in ms), make)
        y = _sub(x, mh, ml).div_(den).mul_(gain).add_(rh)
        return y if rl is None else y.add_(rl)


#: ops we implement; anything else is refused with one message
SUPPORTED = (
    "binarize", "clip", "ensure_dtype", "fixed_zero_mean_unit_variance", "scale_linear", "scale_mean_variance",
    "scale_range", "sigmoid", "softmax", "zero_mean_unit_variance",
)


def parse_op(step: dict, tensor: str, tensor_dims: Sequence[str], version: str) -> Op:
    """One spec processing step (a dict from the validated description) as an :class:`Op`.

    ``version`` is ``"0.4"`` (``name``, ``mode``, axis letters) or ``"0.5"`` (``id``, axis ids).
    ``tensor_dims`` are the tensor's axis ids (0.4 letters already mapped with :data:`LETTERS_04`).
    """
    name = step.get("id") or step.get("name")
    kw = dict(step.get("kwargs") or {})
    if name not in SUPPORTED:
        raise InputError(
            f"Tensor '{tensor}' uses the processing step '{name}', which napari-impc-dl does not implement",
            f"Supported steps: {', '.join(SUPPORTED)}",
        )
    if version.startswith("0.4"):
        return _parse_04(name, kw, tensor, tensor_dims)
    return _parse_05(name, kw, tensor)


def _complement_axis(dims: Sequence[str], axes: tuple[str, ...] | None) -> str | None:
    if axes is None:
        return None
    rest = [d for d in dims if d not in set(axes) | {"batch"}]
    if len(rest) > 1:
        raise InputError(f"Processing axes {axes} leave more than one axis ({rest}) for per-axis values", "The package is inconsistent; ask its authors")
    return rest[0] if rest else None


def _parse_04(name: str, kw: dict, t: str, dims: Sequence[str]) -> Op:
    if name == "ensure_dtype":  # not a 0.4 step: inserted around 0.4 processing as bioimageio.core does
        return EnsureDtype(name, t, dtype=kw["dtype"])
    if name == "binarize":
        return Binarize(name, t, threshold=kw["threshold"])
    if name == "clip":
        return Clip(name, t, min=kw.get("min"), max=kw.get("max"))
    if name == "sigmoid":
        return Sigmoid(name, t)
    if name == "scale_linear":
        axes = _axes_04(kw.get("axes"), None)
        gain, offset = kw.get("gain", 1.0), kw.get("offset", 0.0)
        listy = isinstance(gain, list) and len(gain) > 1 or isinstance(offset, list) and len(offset) > 1
        axis = _complement_axis(dims, axes) if listy else None
        return ScaleLinear(name, t, gain=gain, offset=offset, axis=axis)
    if name == "zero_mean_unit_variance":
        mode = kw.get("mode", "per_sample")
        if mode == "fixed":
            axes = _axes_04(kw.get("axes"), None)
            mean, std = kw.get("mean"), kw.get("std")
            listy = isinstance(mean, list) and len(mean) > 1 or isinstance(std, list) and len(std) > 1
            axis = _complement_axis(dims, axes) if listy else None
            if not listy:
                mean = mean[0] if isinstance(mean, list) else mean
                std = std[0] if isinstance(std, list) else std
            return FixedZeroMeanUnitVariance(name, t, mean=mean, std=std, axis=axis, eps=kw.get("eps", 1e-6))
        return ZeroMeanUnitVariance(name, t, axes=_axes_04(kw.get("axes"), mode), eps=kw.get("eps", 1e-6))
    if name == "scale_range":
        return ScaleRange(
            name, t, axes=_axes_04(kw.get("axes"), kw.get("mode", "per_sample")),
            min_percentile=float(kw.get("min_percentile", 0.0)), max_percentile=float(kw.get("max_percentile", 100.0)),
            eps=kw.get("eps", 1e-6), reference_tensor=kw.get("reference_tensor"),
        )
    if name == "scale_mean_variance":
        return ScaleMeanVariance(name, t, reference_tensor=kw["reference_tensor"], axes=_axes_04(kw.get("axes"), kw.get("mode", "per_sample")), eps=kw.get("eps", 1e-6))
    raise InputError(f"Tensor '{t}' uses the processing step '{name}', which spec 0.4 does not define", "The package is inconsistent; ask its authors")


def _parse_05(name: str, kw: dict, t: str) -> Op:
    if name == "ensure_dtype":
        return EnsureDtype(name, t, dtype=kw["dtype"])
    if name == "binarize":
        return Binarize(name, t, threshold=kw["threshold"], axis=kw.get("axis"))
    if name == "clip":
        axes = _axes_05(kw.get("axes"))
        dataset = _dataset_mode(axes)
        method = "linear" if dataset else "inverted_cdf"
        lo = kw.get("min")
        hi = kw.get("max")
        if lo is None and kw.get("min_percentile") is not None:
            lo = Measure(t, "quantile", axes, kw["min_percentile"] / 100.0, method)
        if hi is None and kw.get("max_percentile") is not None:
            hi = Measure(t, "quantile", axes, kw["max_percentile"] / 100.0, method)
        return Clip(name, t, min=lo, max=hi)
    if name == "scale_linear":
        return ScaleLinear(name, t, gain=kw.get("gain", 1.0), offset=kw.get("offset", 0.0), axis=kw.get("axis"))
    if name == "sigmoid":
        return Sigmoid(name, t)
    if name == "softmax":
        return Softmax(name, t, axis=kw.get("axis", "channel"))
    if name == "fixed_zero_mean_unit_variance":
        return FixedZeroMeanUnitVariance(name, t, mean=kw["mean"], std=kw["std"], axis=kw.get("axis"), eps=kw.get("eps", 1e-6))
    if name == "zero_mean_unit_variance":
        return ZeroMeanUnitVariance(name, t, axes=_axes_05(kw.get("axes")), eps=kw.get("eps", 1e-6))
    if name == "scale_range":
        return ScaleRange(
            name, t, axes=_axes_05(kw.get("axes")), min_percentile=float(kw.get("min_percentile", 0.0)),
            max_percentile=float(kw.get("max_percentile", 100.0)), eps=kw.get("eps", 1e-6), reference_tensor=kw.get("reference_tensor"),
        )
    if name == "scale_mean_variance":
        return ScaleMeanVariance(name, t, reference_tensor=kw["reference_tensor"], axes=_axes_05(kw.get("axes")), eps=kw.get("eps", 1e-6))
    raise AssertionError(name)


def apply_ops(ops: Iterable[Op], x, dims: Sequence[str], stats: Stats):
    """Apply ``ops`` in order (a numpy array stays numpy; a torch tensor stays a tensor on its device)."""
    for op in ops:
        x = op(x, dims, stats)
    return x if is_torch(x) else np.asarray(x)


def output_bounds(ops: Sequence[Op], declared: tuple[float | None, float | None] | None = None) -> tuple[float, float] | None:
    """The range a tensor's values are known to lie in after ``ops`` (from the last op that fixes it)."""
    for op in reversed(ops):
        if op.bounds is not None:
            return op.bounds
        if op.changes_values:
            break
    if declared is not None and declared[0] is not None and declared[1] is not None and math.isfinite(declared[0]) and math.isfinite(declared[1]):
        return (float(declared[0]), float(declared[1]))
    return None


# ----------------------------------------------------------------------------- whole-tensor statistics


def _reduce_axes(m: Measure, dims: Sequence[str]) -> tuple[int, ...]:
    if m.axes is None:
        return tuple(range(len(dims)))
    return tuple(i for i, d in enumerate(dims) if d in m.axes)


def _lerp(a, b, t, dtype=np.float64):
    """numpy's own interpolation (``numpy.lib._function_base_impl._lerp``) in numpy's result dtype, for bit-identical quantiles."""
    a, b, t = np.asarray(a, dtype), np.asarray(b, dtype), np.asarray(t, np.float64)
    d = b - a
    out = np.asarray(a + d * t).astype(dtype)
    return np.where(t >= 0.5, np.asarray(b - d * (1 - t)).astype(dtype), out)


def compute_stats(measures: Iterable[Measure], tensors: dict[str, tuple[np.ndarray, Sequence[str]]]) -> Stats:
    """Measures of whole in-memory tensors (``{id: (array, dims)}``), keepdims-shaped.

    A torch tensor's measures are torch tensors on its device (see :func:`_torch_measure`).
    """
    out: Stats = {}
    for m in set(measures):
        if m.tensor not in tensors:
            raise InputError(f"Processing needs statistics of tensor '{m.tensor}', which the package does not have", "The package is inconsistent; ask its authors")
        x, dims = tensors[m.tensor]
        ax = _reduce_axes(m, dims)
        if is_torch(x):
            out[m] = _torch_measure(m, x, ax)
        elif m.kind == "mean":
            out[m] = np.mean(x, axis=ax, dtype=np.float64, keepdims=True)
        elif m.kind == "std":
            out[m] = np.std(x, axis=ax, dtype=np.float64, keepdims=True)
        else:
            out[m] = np.quantile(np.asarray(x), m.q, axis=ax, method=m.method, keepdims=True)
    return out


def _torch_measure(m: Measure, x, ax: tuple[int, ...]):
    """numpy's measure of a torch tensor, on its device: moments in float64 (float32 on MPS), quantiles as
    ``np.quantile`` computes them (sorted values, numpy's interpolation in the tensor's dtype, NaN where a group has one)."""
    torch = _torch_of(x)
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    if m.kind in ("mean", "std"):
        v = x.to(acc)
        if not ax:  # numpy reduces over no axis: the values themselves
            return v.clone() if m.kind == "mean" else torch.zeros_like(v)
        return v.mean(dim=ax, keepdim=True) if m.kind == "mean" else v.std(dim=ax, correction=0, keepdim=True)
    keep = [i for i in range(x.ndim) if i not in ax]
    shape = [1 if i in ax else x.shape[i] for i in range(x.ndim)]
    v = x.permute(*keep, *ax).reshape(*(x.shape[i] for i in keep), -1)
    if v.dtype == torch.bool:
        v = v.to(torch.uint8)
    n = v.shape[-1]
    if n == 0:
        return torch.full(shape, math.nan, dtype=acc if not x.is_floating_point() else x.dtype, device=x.device)
    v = torch.sort(v, dim=-1).values
    k0, k1, t = order_index(n, m.q, m.method)
    a, b = v[..., k0], v[..., k1]
    if m.method == "inverted_cdf":  # an order statistic, in the tensor's own dtype
        r = a
    else:  # numpy's _lerp with a Python-float weight: in the tensor's float dtype (integers: float64)
        if not a.is_floating_point():
            a, b = a.to(acc), b.to(acc)
        d = b - a
        r = b - d * (1 - t) if t >= 0.5 else a + d * t
    if r.is_floating_point():
        r = torch.where(torch.isnan(v[..., -1]), torch.full_like(r, math.nan), r)  # NaN sorts last: numpy gives NaN
    return r.reshape(shape)


def measures_of(ops: Iterable[Op]) -> list[Measure]:
    return [m for op in ops for m in op.measures]


# ----------------------------------------------------------------------------- streamed statistics


def order_index(n: int, q: float, method: str) -> tuple[int, int, float]:
    """``(k0, k1, t)``: the quantile is ``lerp(x[k0], x[k1], t)`` of the sorted values (numpy's methods)."""
    if method == "linear":
        h = (n - 1) * q
        k0 = int(math.floor(h))
        return k0, min(k0 + 1, n - 1), h - k0
    if method == "inverted_cdf":
        k = max(int(math.ceil(n * q - 1)), 0)
        return min(k, n - 1), min(k, n - 1), 0.0
    raise InputError(f"Quantile method '{method}' is not supported", "Use linear or inverted_cdf")


_INT_EXACT = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.bool_))


@dataclass
class _Group:
    """Running values of one reduction group (e.g. one channel) of one tensor layout."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    hist: np.ndarray | None = None  # exact histogram of a small-integer image (offset by the dtype's minimum)
    targets: dict = field(default_factory=dict)  # rank -> value, or rank -> [lo_edge, hi_edge, below] during refinement


class StreamedStats:
    """Exact measures of a tensor streamed as windows ``(C, h, w)``.

    ``windows()`` must yield the same windows (arrays with dims ``dims``) each time it is called;
    it is called once per pass (one pass for moments and small-integer quantiles, a few more for
    float quantiles). ``keep_channel`` decides, per measure, whether the channel axis is reduced
    too (``channel`` in the measure's axes, or axes ``None``). The result for each measure has the
    window's dims with every reduced axis of size 1.
    """

    def __init__(self, measures: Iterable[Measure], dims: Sequence[str], n_channels: int, *, max_collect: int = 1 << 22, bins: int = 4096) -> None:
        self.measures = sorted(set(measures), key=repr)
        self.dims = tuple(dims)
        self.C = n_channels
        self.max_collect, self.bins = max_collect, bins
        self.channel_dim = dims[0]

    def _grouped(self, m: Measure) -> bool:
        """True when the measure keeps the channel axis (one group per channel)."""
        return not (m.axes is None or self.channel_dim in m.axes)

    def compute(self, windows: Callable[[], Iterable[np.ndarray]]) -> Stats:
        layouts = {self._grouped(m) for m in self.measures}
        groups = {g: [_Group() for _ in range(self.C if g else 1)] for g in layouts}
        dtype = None
        # pass 1: moments, range, small-integer histograms
        for w in windows():
            w = np.asarray(w)
            dtype = w.dtype
            exact_int = w.dtype in _INT_EXACT
            for grouped, gs in groups.items():
                flat = w.reshape(self.C, -1) if grouped else w.reshape(1, -1)
                for g, v in zip(gs, flat):
                    _update_moments(g, v)
                    if exact_int:
                        info = np.iinfo(np.uint8 if w.dtype == np.bool_ else w.dtype)
                        counts = np.bincount((v.astype(np.int64) - info.min).ravel(), minlength=info.max - info.min + 1)
                        g.hist = counts if g.hist is None else g.hist + counts
        out: Stats = {}
        quantiles: dict[bool, set[tuple[int, float, str]]] = {}
        for m in self.measures:
            grouped = self._grouped(m)
            gs = groups[grouped]
            if m.kind == "mean":
                out[m] = self._shape(np.array([g.mean for g in gs]), grouped)
            elif m.kind == "std":
                out[m] = self._shape(np.array([math.sqrt(g.m2 / g.n) if g.n else math.nan for g in gs]), grouped)
            else:
                quantiles.setdefault(grouped, set()).add((0, m.q, m.method))
        if quantiles:
            values = self._quantiles(groups, quantiles, windows, dtype)
            for m in self.measures:
                if m.kind == "quantile":
                    grouped = self._grouped(m)
                    out[m] = self._shape(np.array([values[(grouped, i, m.q, m.method)] for i in range(len(groups[grouped]))]), grouped)
        return out

    def _shape(self, v: np.ndarray, grouped: bool) -> np.ndarray:
        shape = [1] * len(self.dims)
        if grouped:
            shape[0] = self.C
        return v.reshape(shape)

    def _quantiles(self, groups, wanted, windows, dtype) -> dict:
        res = {}
        pending = []  # (grouped, gi, rank) whose value is still unknown
        plan = {}  # (grouped, gi, q, method) -> (k0, k1, t)
        for grouped, qs in wanted.items():
            for gi, g in enumerate(groups[grouped]):
                if g.n == 0:
                    for _, q, meth in qs:
                        res[(grouped, gi, q, meth)] = math.nan
                    continue
                for _, q, meth in qs:
                    k0, k1, t = order_index(g.n, q, meth)
                    plan[(grouped, gi, q, meth)] = (k0, k1, t)
                    for k in {k0, k1}:
                        if k in g.targets:
                            continue
                        if g.hist is not None:
                            g.targets[k] = _from_hist(g.hist, k, dtype)
                        elif g.lo == g.hi:
                            g.targets[k] = g.lo
                        else:
                            g.targets[k] = [g.lo, g.hi, 0]  # search interval [lo, hi] (inclusive) and count below lo
                            pending.append((grouped, gi, k))
        # refinement passes: histogram each pending interval until its target bin is small, then collect it
        while pending:
            hists = {key: np.zeros(self.bins, np.int64) for key in pending}
            edges = {}
            for key in pending:
                lo, hi, _ = groups[key[0]][key[1]].targets[key[2]]
                e = np.linspace(lo, hi, self.bins + 1)
                e[-1] = np.nextafter(hi, np.inf)
                edges[key] = e
            for w in windows():
                w = np.asarray(w)
                for key in pending:
                    grouped, gi, _ = key
                    v = (w.reshape(self.C, -1)[gi] if grouped else w.reshape(-1)).astype(np.float64, copy=False)
                    e = edges[key]
                    sel = v[(v >= e[0]) & (v < e[-1])]
                    if sel.size:
                        hists[key] += np.bincount(np.searchsorted(e, sel, side="right") - 1, minlength=self.bins)[: self.bins]
            collect, still = [], []
            for key in pending:
                g = groups[key[0]][key[1]]
                lo, hi, below = g.targets[key[2]]
                cum = np.cumsum(hists[key]) + below
                b = int(np.searchsorted(cum, key[2], side="right"))
                new_below = below if b == 0 else int(cum[b - 1])
                e = edges[key]
                count = int(hists[key][b])
                blo, bhi = float(e[b]), float(np.nextafter(e[b + 1], -np.inf))
                if count <= self.max_collect or blo >= bhi:
                    g.targets[key[2]] = [blo, bhi, new_below]
                    if blo >= bhi:
                        g.targets[key[2]] = blo
                    else:
                        collect.append(key)
                else:
                    g.targets[key[2]] = [blo, bhi, new_below]
                    still.append(key)
            if collect:
                bags = {key: [] for key in collect}
                for w in windows():
                    w = np.asarray(w)
                    for key in collect:
                        grouped, gi, _ = key
                        lo, hi, _ = groups[grouped][gi].targets[key[2]]
                        v = (w.reshape(self.C, -1)[gi] if grouped else w.reshape(-1)).astype(np.float64, copy=False)
                        bags[key].append(v[(v >= lo) & (v <= hi)])
                for key in collect:
                    g = groups[key[0]][key[1]]
                    _, _, below = g.targets[key[2]]
                    vals = np.sort(np.concatenate(bags[key]))
                    g.targets[key[2]] = float(vals[key[2] - below])
            pending = still
        rdtype = np.float32 if dtype == np.float32 else np.float64  # numpy's quantile keeps float32
        for (grouped, gi, q, meth), (k0, k1, t) in plan.items():
            g = groups[grouped][gi]
            res[(grouped, gi, q, meth)] = float(_lerp(g.targets[k0], g.targets[k1], t, rdtype))
        return res


def _update_moments(g: _Group, v: np.ndarray) -> None:
    v = v.astype(np.float64, copy=False)
    n_b = v.size
    if n_b == 0:
        return
    mean_b = float(v.mean())
    m2_b = float(np.square(v - mean_b).sum())
    g.lo, g.hi = min(g.lo, float(v.min())), max(g.hi, float(v.max()))
    if g.n == 0:
        g.n, g.mean, g.m2 = n_b, mean_b, m2_b
        return
    n = g.n + n_b
    d = mean_b - g.mean
    g.mean = (g.n * g.mean + n_b * mean_b) / n
    g.m2 = g.m2 + m2_b + d * d * g.n * n_b / n
    g.n = n


def _from_hist(hist: np.ndarray, k: int, dtype) -> float:
    info = np.iinfo(np.uint8 if dtype == np.bool_ else dtype)
    cum = np.cumsum(hist)
    return float(int(np.searchsorted(cum, k, side="right")) + info.min)
