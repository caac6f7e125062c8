"""Model Zoo processing on torch tensors: the numpy path's numbers, on the tensor's device, no host round trip per batch."""

import numpy as np
import pytest
import torch

import zoo_packages as Z
from napari_impc_dl.zoo import processing as P
from napari_impc_dl.zoo.adapter import load_package, predict_image

D4 = ("batch", "channel", "y", "x")


def _x(seed=0, shape=(3, 2, 21, 17), loc=0.0):
    rng = np.random.default_rng(seed)
    x = (rng.gamma(2.0, 300.0, shape) - 500.0 + loc).astype(np.float32)
    x[0, :, :3] = 7.25  # a plateau of equal values (ties in quantiles)
    return x


def _f64(stats):
    """The same statistics as float64 arrays (what StreamedStats gives: the torch path subtracts them in two parts)."""
    return {m: np.asarray(v, np.float64) for m, v in stats.items()}


def _both(op, x, stats, dims=D4):
    want = P.apply_ops([op], x, dims, stats)
    got = P.apply_ops([op], torch.from_numpy(x.copy()), dims, stats)
    assert isinstance(got, torch.Tensor)
    return np.asarray(want), got.numpy()


STEPS_05 = [
    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
    {"id": "ensure_dtype", "kwargs": {"dtype": "float64"}},
    {"id": "ensure_dtype", "kwargs": {"dtype": "int16"}},
    {"id": "binarize", "kwargs": {"threshold": 0.1}},
    {"id": "binarize", "kwargs": {"threshold": [0.1, 250.3], "axis": "channel"}},
    {"id": "binarize", "kwargs": {"threshold": [0.1]}},  # a list without an axis: numpy compares in float64
    {"id": "clip", "kwargs": {"min": -100.5, "max": 900.1}},
    {"id": "clip", "kwargs": {"min": 0}},
    {"id": "clip", "kwargs": {"min_percentile": 3.0, "max_percentile": 97.0, "axes": ["y", "x"]}},
    {"id": "clip", "kwargs": {"min_percentile": 1.0, "max_percentile": 99.0, "axes": ["batch", "y", "x"]}},
    {"id": "scale_linear", "kwargs": {"gain": 0.013, "offset": -3.7}},
    {"id": "scale_linear", "kwargs": {"gain": [2.5, -0.3], "offset": [0.1, 7.0], "axis": "channel"}},
    {"id": "sigmoid"},
    {"id": "softmax", "kwargs": {"axis": "channel"}},
    {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": 103.7, "std": 41.3}},
    {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": [10.0, 200.3], "std": [3.1, 44.0], "axis": "channel"}},
    {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}},
    {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["batch", "channel", "y", "x"]}},
    {"id": "zero_mean_unit_variance", "kwargs": {}},
    {"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": 1.5, "max_percentile": 99.2}},
    {"id": "scale_range", "kwargs": {"axes": ["batch", "y", "x"], "min_percentile": 0.0, "max_percentile": 100.0}},
    {"id": "scale_mean_variance", "kwargs": {"reference_tensor": "r", "axes": ["y", "x"]}},
    {"id": "scale_mean_variance", "kwargs": {"reference_tensor": "r"}},
]

STEPS_04 = [
    {"name": "zero_mean_unit_variance", "kwargs": {"mode": "per_sample", "axes": "xy"}},
    {"name": "zero_mean_unit_variance", "kwargs": {"mode": "fixed", "axes": "xy", "mean": [1.0, 2.0], "std": [3.0, 4.0]}},
    {"name": "scale_range", "kwargs": {"mode": "per_sample", "axes": "xy", "min_percentile": 2, "max_percentile": 99.5}},
    {"name": "scale_linear", "kwargs": {"gain": [2.0, 3.0], "offset": [1.0, -1.0], "axes": "xy"}},
    {"name": "binarize", "kwargs": {"threshold": 600.0}},
]


def _case(step, version):
    op = P.parse_op(step, "t", D4, version)
    x = _x(1) / (1000.0 if op.name in ("sigmoid", "softmax") else 1.0)
    ref = _x(5, loc=2000.0) * 0.1
    tensors = {"t": (x, D4), "r": (ref, D4)}
    return op, x, P.compute_stats(op.measures, tensors)


def _check(want, got, op):
    assert got.dtype == want.dtype or op.name != "ensure_dtype", (got.dtype, want.dtype)
    assert got.shape == want.shape
    if want.dtype == bool or want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want, err_msg=op.name)
    elif op.name == "scale_mean_variance":  # float32 adds the reference mean; numpy float64: the two agree to float32 rounding of it
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()), err_msg=op.name)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=op.name)


@pytest.mark.parametrize("step", STEPS_05, ids=lambda s: s["id"] + str(sorted((s.get("kwargs") or {}).items()))[:60])
@pytest.mark.parametrize("precision", ["numpy-stats", "float64-stats"])
def test_every_05_op_gives_numpy_numbers_on_torch(step, precision):
    op, x, stats = _case(step, "0.5")
    if precision == "float64-stats":
        stats = _f64(stats)
    want, got = _both(op, x, stats)
    _check(want, got, op)


@pytest.mark.parametrize("step", STEPS_04, ids=lambda s: s["name"])
def test_04_ops_give_numpy_numbers_on_torch(step):
    op, x, stats = _case(step, "0.4")
    want, got = _both(op, x, _f64(stats))
    _check(want, got, op)


def test_near_the_mean_the_float32_path_still_matches_float64():
    """Values a few ulps from a float64 mean: (x - mean) cancels; two-part subtraction keeps rtol 1e-6."""
    mean = np.float64(1234.56789012345)
    x = (mean + np.linspace(-0.01, 0.01, 4001)).astype(np.float32).reshape(1, 1, 1, -1)
    op = P.ZeroMeanUnitVariance("zero_mean_unit_variance", "t", axes=("x",))
    stats = {m: np.full((1, 1, 1, 1), v) for m, v in zip(op.measures, (mean, 0.01))}
    want, got = _both(op, x, stats)
    keep = want != 0
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-6)
    op = P.ScaleRange("scale_range", "t", axes=("x",))
    stats = {m: np.full((1, 1, 1, 1), v) for m, v in zip(op.measures, (mean, mean + 0.02))}
    want, got = _both(op, x, stats)
    keep = want != 0
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-6)


def test_thresholds_compare_as_numpy_compares():
    """A Python threshold compares in float32, a list one in float64: float32(0.1) > 0.1 only for the list."""
    f = np.float32(0.1)
    x = np.array([np.nextafter(f, np.float32(0)), f, np.nextafter(f, np.float32(1))], np.float32).reshape(1, 1, 1, 3)
    for threshold in (0.1, [0.1], [0.3]):
        want, got = _both(P.Binarize("binarize", "t", threshold=threshold), x, {})
        np.testing.assert_array_equal(got, want)
    assert _both(P.Binarize("binarize", "t", threshold=[0.1]), x, {})[1].tolist() == [[[[False, True, True]]]]


def test_a_pipeline_stays_torch_and_ends_float32():
    ops = [P.parse_op(s, "t", D4, "0.5") for s in (
        {"id": "scale_linear", "kwargs": {"gain": [0.01, -0.02], "offset": [0.5, 1.0], "axis": "channel"}},
        {"id": "clip", "kwargs": {"min": -4.0, "max": 4.0}},
        {"id": "sigmoid"},
        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
    )]
    x = _x(2)
    want = P.apply_ops(ops, x, D4, {})
    got = P.apply_ops(ops, torch.from_numpy(x), D4, {})
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16, np.int32])
@pytest.mark.parametrize("axes", [("y", "x"), ("channel", "y", "x"), ("batch", "y", "x"), None])
def test_measures_of_torch_tensors_are_numpys(dtype, axes):
    x = _x(3).astype(np.float64)
    if np.dtype(dtype).kind in "iu":
        x = np.clip(np.round(x / 10), np.iinfo(dtype).min, np.iinfo(dtype).max)
    x = x.astype(dtype)
    qs = [(0.0, "linear"), (0.013, "linear"), (0.5, "linear"), (0.998, "linear"), (1.0, "linear"), (0.02, "inverted_cdf"), (0.5, "inverted_cdf"), (0.97, "inverted_cdf")]
    ms = [P.Measure("t", "mean", axes), P.Measure("t", "std", axes)] + [P.Measure("t", "quantile", axes, q, m) for q, m in qs]
    want = P.compute_stats(ms, {"t": (x, D4)})
    got = P.compute_stats(ms, {"t": (torch.from_numpy(x), D4)})
    for m in ms:
        g = got[m]
        assert isinstance(g, torch.Tensor) and tuple(g.shape) == want[m].shape, m
        if m.kind == "quantile":
            np.testing.assert_array_equal(g.numpy(), want[m], err_msg=str(m))
            assert g.numpy().dtype == want[m].dtype, m
        else:
            np.testing.assert_allclose(g.numpy(), want[m], rtol=1e-12, err_msg=str(m))


def test_ops_use_statistics_computed_on_torch():
    """Per-tile measures (e.g. zero_mean_unit_variance per sample on an output) entirely in torch."""
    for step in STEPS_05[-7:]:
        op, x, _ = _case(step, "0.5")
        ref = _x(5, loc=2000.0) * 0.1
        np_stats = P.compute_stats(op.measures, {"t": (x, D4), "r": (ref, D4)})
        t_stats = P.compute_stats(op.measures, {"t": (torch.from_numpy(x), D4), "r": (torch.from_numpy(ref), D4)})
        want = P.apply_ops([op], x, D4, np_stats)
        got = P.apply_ops([op], torch.from_numpy(x), D4, t_stats)
        _check(np.asarray(want), got.numpy(), op)


def test_constants_reach_the_device_once_per_statistics(monkeypatch):
    op, x, stats = _case({"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}, "0.5")
    calls = []
    real = P._host
    monkeypatch.setattr(P, "_host", lambda v, torch: calls.append(1) or real(v, torch))
    t = torch.from_numpy(x)
    first = op(t, D4, stats)
    n = len(calls)
    assert n > 0
    for _ in range(3):
        assert torch.equal(op(t, D4, stats), first)
    assert len(calls) == n  # cached: no conversion (no host-to-device copy) per batch
    op(t, D4, dict(stats))  # same arrays in another dict: still cached
    assert len(calls) == n
    op(t, D4, {m: v.copy() for m, v in stats.items()})  # new statistics (the next image): converted again
    assert len(calls) > n
    # per-axis parameters: cached too
    lin = P.parse_op({"id": "scale_linear", "kwargs": {"gain": [2.0, 3.0], "offset": [1.0, -1.0], "axis": "channel"}}, "t", D4, "0.5")
    lin(t, D4, {})
    n = len(calls)
    lin(t, D4, {})
    assert len(calls) == n
    import pickle

    assert pickle.loads(pickle.dumps(op)) == op  # the cache is not part of the op


def test_which_ops_run_on_which_device():
    ens = lambda d: P.EnsureDtype("ensure_dtype", "t", dtype=d)  # noqa: E731
    sig = P.Sigmoid("sigmoid", "t")
    assert P.runs_on_device([sig, ens("float32")], "cuda") and P.runs_on_device([sig, ens("float32")], "mps")
    assert P.runs_on_device([ens("float64")], "cuda") and not P.runs_on_device([ens("float64")], "mps")
    assert not P.runs_on_device([sig, ens("uint16")], "cuda")  # torch's uint16 lacks kernels: numpy path
    for step in STEPS_05 + STEPS_04:
        op = P.parse_op(step, "t", D4, "0.5" if "id" in step else "0.4")
        if not (op.name == "ensure_dtype" and op.dtype == "float64"):
            assert op.device_ok("mps") and op.device_ok("cuda"), op

    class Custom(P.Op):  # a step without a torch path: never claimed to run on a device
        def _numpy(self, x, dims, stats):
            return x

    assert not P.runs_on_device([Custom("custom", "t")], "cpu")


# ----------------------------------------------------------------------------- the adapter

POSTS = {
    "sigmoid": None,  # the package's own: sigmoid
    "linear-sigmoid-clip": [
        {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": [1.7, -0.6], "offset": [0.2, -0.1]}},
        {"id": "sigmoid"}, {"id": "clip", "kwargs": {"min": 0.02, "max": 0.97}},
    ],
    "fixed-softmax": [
        {"id": "fixed_zero_mean_unit_variance", "kwargs": {"axis": "channel", "mean": [0.1, -0.2], "std": [1.5, 0.7]}},
        {"id": "softmax", "kwargs": {"axis": "channel"}},
    ],
    "binarize": [{"id": "binarize", "kwargs": {"threshold": [0.1, -0.05], "axis": "channel"}}],
    "uint16-fallback": [{"id": "sigmoid"}, {"id": "ensure_dtype", "kwargs": {"dtype": "uint16"}}, {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}],
}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    pytest.importorskip("bioimageio.spec")  # the zoo extra (the op tests above need only torch)
    d = tmp_path_factory.mktemp("zoo-device-pkgs")
    out = {}
    for key, post in POSTS.items():
        folder, _ = Z.build_v05(d, name=f"dev-{key}", zip_it=False)
        if post is not None:
            Z.edit_rdf(folder, lambda c, post=post: c["outputs"][0].__setitem__("postprocessing", post))
        out[key] = folder
    return out


def _batch(seed=0):
    x = Z.zmuv(Z.test_image((3, 1, 48, 40), seed=seed))
    return torch.from_numpy(x)


@pytest.mark.parametrize("mode", ["segment", "raw"])
@pytest.mark.parametrize("key", list(POSTS))
def test_direct_forward_gives_the_host_paths_values(pkgs, key, mode):
    m = load_package(pkgs[key], mode=mode)
    assert m.direct
    assert m.post_on_device is (key != "uint16-fallback")
    x = _batch()
    with torch.inference_mode():
        got = m.forward(x)
        want = m._forward_host(x, m._network(x))  # the numpy path (what forward did before)
    assert got.dtype == torch.float32 and got.device == x.device and got.is_contiguous()
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)


def test_direct_forward_never_goes_to_the_host(pkgs, monkeypatch):
    """Every way back to numpy / the host raises while the forward runs (the numpy path used .cpu() and .numpy() per batch)."""
    for key in ("sigmoid", "linear-sigmoid-clip", "fixed-softmax"):
        m = load_package(pkgs[key], mode="segment")
        x = _batch(1)
        with torch.inference_mode():
            m.forward(x)  # first batch: per-axis constants reach the device (once)
            want = m._forward_host(x, m._network(x))

            def refuse(*a, **k):
                raise AssertionError("host round trip during forward")

            with monkeypatch.context() as mp:
                for name in ("cpu", "numpy", "item", "tolist", "__array__"):
                    mp.setattr(torch.Tensor, name, refuse)
                mp.setattr(torch, "from_numpy", refuse)
                mp.setattr(torch, "as_tensor", refuse)
                mp.setattr(np, "asarray", refuse)
                got = m.forward(x)
                got2 = m.forward(x[:2])
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got2.numpy(), want.numpy()[:2], rtol=1e-6, atol=1e-7)


def test_fallback_package_keeps_the_host_path(pkgs, monkeypatch):
    m = load_package(pkgs["uint16-fallback"], mode="segment")
    assert not m.post_on_device
    seen = []
    real = m._forward_host
    monkeypatch.setattr(m, "_forward_host", lambda x, y: seen.append(1) or real(x, y))
    with torch.inference_mode():
        m.forward(_batch())
    assert seen


def test_tiled_prediction_unchanged(pkgs):
    img = Z.test_image((1, 1, 96, 120), seed=7)[0, 0]
    for key in ("linear-sigmoid-clip", "fixed-softmax"):
        m = load_package(pkgs[key], mode="raw")
        assert m.post_on_device
        t = m.spec.inputs[0]
        ref = m.predict_tensors({t.id: img[None, None].astype(np.float32)})[m.spec.outputs[0].id][0]
        got = predict_image(m, img, tile=48, halo=8, batch=3)
        np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_never_synchronises(pkgs):
    m = load_package(pkgs["linear-sigmoid-clip"], mode="segment", device="cuda")
    x = _batch().cuda()
    with torch.inference_mode():
        want = m._forward_host(x, m._network(x)).cpu()
        m.forward(x)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = m.forward(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert got.device.type == "cuda"
    np.testing.assert_allclose(got.cpu().numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
