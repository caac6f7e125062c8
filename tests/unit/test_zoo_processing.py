"""The spec's pre/postprocessing in numpy: both naming styles, exact streamed statistics."""

import numpy as np
import pytest

from napari_impc_dl.errors import InputError
from napari_impc_dl.zoo import processing as P

DIMS = ("channel", "y", "x")


def _image(dtype, seed=0, shape=(2, 61, 47)):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        x = rng.gamma(2.0, 300.0, shape).astype(dtype)
        x[0, :5] = 7.25  # a plateau of equal values
        return x
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -3000), min(info.max, 3000) + 1, shape).astype(dtype)


def _strips(x, rows):
    return lambda: (x[:, y : y + rows] for y in range(0, x.shape[1], rows))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("axes", [("y", "x"), ("channel", "y", "x"), None])
def test_streamed_statistics_are_exact(dtype, axes):
    x = _image(dtype)
    qs = [(0.0, "linear"), (0.013, "linear"), (0.5, "linear"), (0.998, "linear"), (1.0, "linear"), (0.02, "inverted_cdf"), (0.97, "inverted_cdf"), (0.5, "inverted_cdf")]
    ms = [P.Measure("t", "mean", axes), P.Measure("t", "std", axes)] + [P.Measure("t", "quantile", axes, q, m) for q, m in qs]
    # tiny histograms and collection limits force several refinement passes on the float path
    got = P.StreamedStats(ms, DIMS, 2, max_collect=50, bins=7).compute(_strips(x, 9))
    want = P.compute_stats(ms, {"t": (x, DIMS)})
    for m in ms:
        assert got[m].shape == want[m].shape, m
        if m.kind == "quantile":
            np.testing.assert_array_equal(got[m], want[m], err_msg=str(m))
        else:
            np.testing.assert_allclose(got[m], want[m], rtol=1e-12, err_msg=str(m))


def test_order_index_matches_numpy():
    for n in (1, 2, 3, 10, 97):
        a = np.arange(n, dtype=float)
        for q in np.linspace(0, 1, 41):
            for method in ("linear", "inverted_cdf"):
                k0, k1, t = P.order_index(n, float(q), method)
                assert P._lerp(a[k0], a[k1], t) == np.quantile(a, q, method=method)


def _run(step, version, x, dims=("batch", "channel", "y", "x"), tensor="t", extra=None):
    op = P.parse_op(step, tensor, dims, version)
    tensors = {tensor: (x, dims)}
    tensors.update(extra or {})
    stats = P.compute_stats(op.measures, tensors)
    return op(x, dims, stats)


@pytest.mark.parametrize(
    "v04, v05",
    [
        ({"name": "zero_mean_unit_variance", "kwargs": {"mode": "per_sample", "axes": "xy"}}, {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}),
        ({"name": "zero_mean_unit_variance", "kwargs": {"mode": "per_dataset", "axes": "cxy"}}, {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["batch", "channel", "x", "y"]}}),
        ({"name": "zero_mean_unit_variance", "kwargs": {"mode": "fixed", "axes": "xy", "mean": [1.0, 2.0], "std": [3.0, 4.0]}},
         {"id": "fixed_zero_mean_unit_variance", "kwargs": {"axis": "channel", "mean": [1.0, 2.0], "std": [3.0, 4.0]}}),
        ({"name": "zero_mean_unit_variance", "kwargs": {"mode": "fixed", "mean": 5.0, "std": 2.0}}, {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": 5.0, "std": 2.0}}),
        ({"name": "scale_range", "kwargs": {"mode": "per_sample", "axes": "xy", "min_percentile": 1, "max_percentile": 99.8}},
         {"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 1, "max_percentile": 99.8}}),
        ({"name": "scale_linear", "kwargs": {"gain": [2.0, 3.0], "offset": [1.0, -1.0], "axes": "xy"}}, {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": [2.0, 3.0], "offset": [1.0, -1.0]}}),
        ({"name": "scale_linear", "kwargs": {"gain": 2.0, "offset": 0.5}}, {"id": "scale_linear", "kwargs": {"gain": 2.0, "offset": 0.5}}),
        ({"name": "clip", "kwargs": {"min": 100.0, "max": 900.0}}, {"id": "clip", "kwargs": {"min": 100.0, "max": 900.0}}),
        ({"name": "sigmoid"}, {"id": "sigmoid"}),
        ({"name": "binarize", "kwargs": {"threshold": 600.0}}, {"id": "binarize", "kwargs": {"threshold": 600.0}}),
    ],
)
def test_04_and_05_naming_give_the_same_result(v04, v05):
    x = _image(np.float32, shape=(3, 2, 20, 24))
    a, b = _run(v04, "0.4", x), _run(v05, "0.5", x)
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6)


def test_formulas():
    x = _image(np.float32, shape=(1, 2, 30, 20))
    d = ("batch", "channel", "y", "x")
    y = _run({"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 5, "max_percentile": 95}}, "0.5", x)
    lo, hi = np.percentile(x, [5, 95], axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x - lo) / (hi - lo + 1e-6), rtol=1e-5)
    y = _run({"id": "clip", "kwargs": {"min_percentile": 10, "max_percentile": 90, "axes": ["y", "x"]}}, "0.5", x)
    lo = np.quantile(x, 0.1, axis=(2, 3), keepdims=True, method="inverted_cdf")
    hi = np.quantile(x, 0.9, axis=(2, 3), keepdims=True, method="inverted_cdf")
    np.testing.assert_allclose(y, np.clip(x, lo, hi))
    ref = _image(np.float32, seed=3, shape=(1, 2, 30, 20)) * 0.1
    y = _run({"id": "scale_mean_variance", "kwargs": {"reference_tensor": "r", "axes": ["y", "x"]}}, "0.5", x, extra={"r": (ref, d)})
    np.testing.assert_allclose(y.mean(axis=(2, 3)), ref.mean(axis=(2, 3)), rtol=1e-4)
    np.testing.assert_allclose(y.std(axis=(2, 3)), ref.std(axis=(2, 3)), rtol=1e-4)
    y = _run({"id": "softmax", "kwargs": {"axis": "channel"}}, "0.5", x / 1000)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)
    y = _run({"id": "binarize", "kwargs": {"threshold": [100.0, 2000.0], "axis": "channel"}}, "0.5", x)
    assert y.dtype == bool and (y[:, 0] == (x[:, 0] > 100)).all() and (y[:, 1] == (x[:, 1] > 2000)).all()
    assert _run({"id": "ensure_dtype", "kwargs": {"dtype": "uint8"}}, "0.5", x).dtype == np.uint8


def test_unknown_step_is_one_clear_error():
    with pytest.raises(InputError, match="stardist_postprocessing.*does not implement"):
        P.parse_op({"id": "stardist_postprocessing", "kwargs": {}}, "t", DIMS, "0.5")


def test_known_output_range():
    sig, smv = P.Sigmoid("sigmoid", "t"), P.ScaleLinear("scale_linear", "t", gain=2.0)
    ens = P.EnsureDtype("ensure_dtype", "t", dtype="float32")
    assert P.output_bounds([sig, ens]) == (0.0, 1.0)
    assert P.output_bounds([sig, smv, ens]) is None
    assert P.output_bounds([], (0.0, 1.0)) == (0.0, 1.0)
    assert P.output_bounds([ens], (None, None)) is None
