"""Run a package's test tensors and compare with its expected outputs, the way bioimageio.core does.

Tolerance: the package's own (spec 0.5 ``config.bioimageio.reproducibility_tolerance``, the first
entry that applies to the weight format and output; or the legacy ``config.bioimageio.test_kwargs``),
else bioimageio.core's default: an element mismatches when ``|actual - expected| > atol + rtol *
|expected|`` with ``rtol = atol = 1e-3``, and an output passes when at most
``mismatched_elements_per_million`` (default 100; 0 for spec 0.4) elements mismatch.

The inputs go through :meth:`ZooModel.predict_tensors`: the same weight loading, axis handling and
pre/postprocessing code that ``segment`` uses, on the whole test tensor at once (as core's test does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError


@dataclass
class OutputCheck:
    id: str
    shape: tuple
    expected_shape: tuple
    max_abs_diff: float
    mismatched: int
    size: int
    rtol: float
    atol: float
    allowed_ppm: float

    @property
    def ppm(self) -> float:
        return self.mismatched / max(1, self.size) * 1e6

    @property
    def passed(self) -> bool:
        return self.shape == self.expected_shape and self.ppm <= self.allowed_ppm


@dataclass
class TestReport:
    name: str
    source: str
    weights: str
    outputs: list[OutputCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def lines(self) -> list[str]:
        out = [f"package: {self.name} ({self.source})", f"weights: {self.weights}"]
        for o in self.outputs:
            if o.shape != o.expected_shape:
                out.append(f"output '{o.id}': shape {o.shape}, expected {o.expected_shape}: FAIL")
                continue
            verdict = "pass" if o.passed else "FAIL"
            out.append(
                f"output '{o.id}': max abs difference {o.max_abs_diff:.3g}; {o.mismatched} of {o.size} elements outside "
                f"atol {o.atol:g} + rtol {o.rtol:g}*|expected| ({o.ppm:.1f} ppm, {o.allowed_ppm:g} allowed): {verdict}"
            )
        out.append(f"{'PASSED' if self.passed else 'FAILED'} in {self.seconds:.1f} s")
        return out


def tolerance(spec, fmt: str, output_id: str) -> tuple[float, float, float]:
    """``(rtol, atol, mismatched elements per million)`` for one output, as bioimageio.core picks them."""
    if spec.version_family == "0.4":
        return 1e-3, 1e-3, 0.0
    bio = (spec.config or {}).get("bioimageio") or {}
    rtol, atol, ppm = 1e-3, 1e-3, 100.0
    legacy = (bio.get("test_kwargs") or {}).get(fmt)
    if isinstance(legacy, dict):
        rtol, atol = float(legacy.get("relative_tolerance", 1e-3)), float(legacy.get("absolute_tolerance", 1e-3))
    for t in bio.get("reproducibility_tolerance") or []:
        fmts, outs = t.get("weights_formats") or [], t.get("output_ids") or []
        if (not fmts or fmt in fmts) and (not outs or output_id in outs):
            return float(t.get("relative_tolerance", 1e-3)), float(t.get("absolute_tolerance", 1e-3)), float(t.get("mismatched_elements_per_million", 100))
    return rtol, atol, ppm


def _load_npy(path: Path, what: str) -> np.ndarray:
    if path.suffix.lower() != ".npy":
        raise InputError(f"The {what} '{path.name}' is not a .npy file", "napari-impc-dl reads test tensors stored as .npy")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"Cannot read the {what} '{path.name}' ({type(exc).__name__}: {str(exc)[:160]})", "Re-download the package") from None


def run_test(ref, *, weights: str | None = None, trust_code: bool = False, device: str = "cpu", cache_dir: Path | None = None) -> TestReport:
    """Test a package (path or library name) on its own test tensors."""
    from ..adapter import ZooModel, resolve
    from ..spec import check_files, describe

    t0 = time.perf_counter()
    spec = describe(resolve(ref, cache_dir=cache_dir))
    check_files(spec, tests=True, formats=[])
    model = ZooModel(spec, weights=weights, trust_code=trust_code, images=False).to(device)
    pkg = spec.package
    inputs = {t.id: _load_npy(pkg.local(t.test_tensor, f"test tensor of '{t.id}'"), f"test input '{t.id}'") for t in spec.inputs}
    expected = {t.id: _load_npy(pkg.local(t.test_tensor, f"test tensor of '{t.id}'"), f"test output '{t.id}'") for t in spec.outputs}
    actual = model.predict_tensors(inputs)
    report = TestReport(name=spec.name, source=str(pkg.source), weights=model.format)
    for t in spec.outputs:
        a = np.asarray(actual[t.id]).astype(np.float32)
        e = np.asarray(expected[t.id]).astype(np.float32)
        rtol, atol, ppm = tolerance(spec, model.format, t.id)
        if a.shape != e.shape:
            report.outputs.append(OutputCheck(t.id, a.shape, e.shape, float("nan"), e.size, e.size, rtol, atol, ppm))
            continue
        diff = np.abs(a - e)
        bad = int(np.count_nonzero(~(diff <= atol + rtol * np.abs(e))))  # NaN counts as a mismatch
        report.outputs.append(OutputCheck(t.id, a.shape, e.shape, float(np.nanmax(diff)) if diff.size else 0.0, bad, e.size, rtol, atol, ppm))
    report.seconds = time.perf_counter() - t0
    return report
