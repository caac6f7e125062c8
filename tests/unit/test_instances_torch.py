"""The torch instance step gives exactly the numpy labels and anchors (CPU torch here; the same code runs on CUDA/MPS)."""

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip("torch")

from napari_impc_dl.inference.flood import flood  # noqa: E402
from napari_impc_dl.inference.instances import InstanceParams, local_instances  # noqa: E402
from napari_impc_dl.inference.instances_torch import flood_torch, label_components, local_instances_torch, supports  # noqa: E402

_EIGHT = np.ones((3, 3), bool)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors gain nothing from threads, and on a busy CI runner torch's thread pool spins: use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _assert_same_components(mask: np.ndarray) -> None:
    ref, n = ndimage.label(mask, structure=_EIGHT)
    lab, k = label_components(torch.from_numpy(mask))
    assert k == n
    assert lab.dtype == torch.int32
    np.testing.assert_array_equal(lab.numpy(), ref)


def _spiral(side: int) -> np.ndarray:
    """A one-pixel path winding inwards with one-pixel gaps: a single component as long as it is wide squared / 2."""
    m = np.zeros((side, side), bool)
    y = x = 0
    m[0, 0] = True
    length = side - 1
    for k in range(4 * side):
        if length <= 0:
            break
        dy, dx = ((0, 1), (1, 0), (0, -1), (-1, 0))[k % 4]
        for _ in range(length):
            y, x = y + dy, x + dx
            m[y, x] = True
        if k % 2 == 1:
            length -= 2
    return m


def _maze(cells: int, seed: int) -> np.ndarray:
    """A perfect maze (random depth-first spanning tree): one component full of long dead ends."""
    rng = np.random.default_rng(seed)
    m = np.zeros((2 * cells + 1, 2 * cells + 1), bool)
    seen = np.zeros((cells, cells), bool)
    stack = [(0, 0)]
    seen[0, 0] = m[1, 1] = True
    while stack:
        y, x = stack[-1]
        nbs = [(y + dy, x + dx) for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)) if 0 <= y + dy < cells and 0 <= x + dx < cells and not seen[y + dy, x + dx]]
        if not nbs:
            stack.pop()
            continue
        ny, nx = nbs[rng.integers(len(nbs))]
        seen[ny, nx] = m[2 * ny + 1, 2 * nx + 1] = m[y + ny + 1, x + nx + 1] = True
        stack.append((ny, nx))
    return m


# ---------------------------------------------------------------------------- label_components


@pytest.mark.parametrize("density", [0.05, 0.3, 0.45, 0.6, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_equal_ndimage_label_on_random_masks(density, seed):
    rng = np.random.default_rng(seed)
    _assert_same_components(rng.random((67, 123)) < density)


def test_components_of_smoothed_random_blobs():
    rng = np.random.default_rng(7)
    field = ndimage.gaussian_filter(rng.random((200, 180)), 3)
    for q in (0.3, 0.5, 0.7):
        _assert_same_components(field > np.quantile(field, q))


@pytest.mark.parametrize("flip", ["none", "ud", "lr", "transpose"])
def test_components_of_spirals_mazes_and_serpentines(flip):
    serpentine = np.zeros((101, 101), bool)
    serpentine[::2] = True
    for i in range(1, 101, 2):
        serpentine[i, 100 if (i // 2) % 2 == 0 else 0] = True
    for m in (_spiral(151), _maze(60, 3), serpentine):
        m = {"none": m, "ud": m[::-1], "lr": m[:, ::-1], "transpose": m.T}[flip]
        _assert_same_components(np.ascontiguousarray(m))


def test_components_u_shapes_and_diagonal_only_connections():
    m = np.zeros((40, 50), bool)
    m[5:30, 5:8] = m[5:30, 20:23] = m[27:30, 5:23] = True  # U opening upwards: its arms start first
    m[5:30, 30:33] = m[5:30, 43:46] = m[5:8, 30:46] = True  # upside-down U
    for i in range(10):  # a staircase joined only at corners
        m[32 + i % 8, 2 + i] = True
    m[0, 49] = m[1, 48] = True  # diagonal pair at the border
    m[39, 0] = True  # a lone corner pixel
    _assert_same_components(m)
    checker = (np.add.outer(np.arange(31), np.arange(29)) % 2 == 0)
    _assert_same_components(checker)  # one component through corners alone
    _assert_same_components(~checker)


@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (1, 17), (17, 1), (30, 40)])
def test_components_of_empty_and_full_masks(shape):
    _assert_same_components(np.zeros(shape, bool))
    _assert_same_components(np.ones(shape, bool))


# ---------------------------------------------------------------------------- flood_torch


def _assert_same_flood(height, markers, mask):
    ref = flood(height, markers, mask)
    out = flood_torch(torch.from_numpy(height), torch.from_numpy(markers), torch.from_numpy(mask))
    assert out.dtype == torch.int32
    np.testing.assert_array_equal(out.numpy(), ref)


@pytest.mark.parametrize("n_levels", [1, 2, 3, 8, 256])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flood_equals_numpy_on_random_inputs_with_plateaus(n_levels, seed):
    rng = np.random.default_rng(seed)
    shape = (61, 83)
    raw = ndimage.gaussian_filter(rng.random(shape), 2)
    raw = (raw - raw.min()) / (raw.max() - raw.min() + 1e-12)
    height = (np.floor(raw * (n_levels - 1e-9)) * (255 // max(1, n_levels - 1))).astype(np.uint8)  # few levels: big plateaus
    mask = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.48
    markers = np.where(rng.random(shape) < 0.01, rng.integers(1, 9, shape), 0).astype(np.int32)  # ids repeat: ties
    markers[rng.random(shape) < 0.003] = 4  # some off the mask, which are ignored
    _assert_same_flood(height, markers, mask)


def test_flood_ties_between_markers_on_a_plateau():
    height = np.full((21, 40), 90, np.uint8)
    mask = np.ones(height.shape, bool)
    markers = np.zeros(height.shape, np.int32)
    markers[10, 5], markers[10, 25], markers[3, 15], markers[17, 15] = 3, 1, 7, 2  # equidistant pixels: lowest id wins
    _assert_same_flood(height, markers, mask)
    _assert_same_flood(np.where(np.arange(40) % 2 == 0, 90, 91).astype(np.uint8)[None].repeat(21, 0), markers, mask)


def test_flood_from_realistic_distance_maps():
    from napari_impc_dl.synthetic import make_nuclei_image
    from napari_impc_dl.training.targets import instance_targets

    _, lab = make_nuclei_image((192, 192), seed=3, density=0.5)
    t = instance_targets(lab)
    rng = np.random.default_rng(0)
    d = (np.clip(ndimage.gaussian_filter(t[1], 1.0) + rng.normal(0, 0.03, t[1].shape), 0, 1) * 255).astype(np.uint8)
    mask = t[0] > 0.5
    markers, _ = ndimage.label(mask & (d > 127), structure=_EIGHT)
    _assert_same_flood(d, markers, mask)


def test_flood_edge_cases():
    rng = np.random.default_rng(4)
    height = rng.integers(0, 256, (25, 30)).astype(np.uint8)
    mask = rng.random(height.shape) < 0.6
    none = np.zeros(height.shape, np.int32)
    _assert_same_flood(height, none, mask)  # no markers
    outside = np.where(~mask & (rng.random(height.shape) < 0.2), 5, 0).astype(np.int32)
    _assert_same_flood(height, outside, mask)  # markers only off the mask
    full = np.where(mask, 1 + np.arange(mask.size).reshape(mask.shape) % 5, 0).astype(np.int64)
    _assert_same_flood(height, full, mask)  # everything already labelled
    _assert_same_flood(height, none, np.zeros(height.shape, bool))  # empty mask
    big = np.where(rng.random(height.shape) < 0.05, rng.integers(1, 4, height.shape) << 25, 0).astype(np.int64)
    _assert_same_flood(height, big, mask)  # ids too large for int32 keys
    with pytest.raises(TypeError):
        flood_torch(torch.from_numpy(height.astype(np.int16)), torch.from_numpy(none), torch.from_numpy(mask))


# ---------------------------------------------------------------------------- local_instances_torch


def _synthetic_probs(seed: int, shape=(256, 256), density=0.45) -> np.ndarray:
    """Model-like uint8 (2, H, W) maps: blurred, noisy targets of synthetic nuclei, plus seedless islands and specks."""
    from napari_impc_dl.synthetic import make_nuclei_image
    from napari_impc_dl.training.targets import instance_targets

    _, lab = make_nuclei_image(shape, seed=seed, density=density)
    t = instance_targets(lab).astype(np.float64)
    rng = np.random.default_rng(seed)
    t = np.stack([ndimage.gaussian_filter(c, 1.2) for c in t]) + rng.normal(0, 0.04, t.shape)
    for _ in range(6):  # faint islands: foreground whose distance never reaches a seed threshold
        y, x = rng.integers(0, shape[0] - 12), rng.integers(0, shape[1] - 12)
        s = rng.integers(2, 9)
        t[0, y : y + s, x : x + s] = 0.9
        t[1, y : y + s, x : x + s] = 0.2
    return (np.clip(t, 0, 1) * 255 + 0.5).astype(np.uint8)


def _assert_same_instances(fg, dist, params):
    ref_labels, ref_anchors = local_instances(fg, dist, params)
    labels, anchors = local_instances_torch(fg, dist, params)
    assert labels.dtype == np.int32 and anchors.dtype == np.int64
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(anchors, ref_anchors)
    return ref_labels


@pytest.mark.parametrize("seed", [1, 2, 5])
@pytest.mark.parametrize("fg_t,seed_t,min_size", [(0.5, 0.5, 12), (0.3, 0.6, 1), (0.6, 0.35, 40), (0.5, 0.8, 0)])
def test_distance_head_instances_equal_numpy(seed, fg_t, seed_t, min_size):
    p = _synthetic_probs(seed)
    params = InstanceParams(foreground_threshold=fg_t, seed_threshold=seed_t, min_size=min_size)
    labels = _assert_same_instances(p[0], p[1], params)
    assert labels.max() > 5


def test_threshold_instances_equal_numpy_and_tensor_input_works():
    p = _synthetic_probs(4, density=0.2)
    for min_size in (1, 12, 60):
        params = InstanceParams(method="threshold", min_size=min_size)
        _assert_same_instances(p[0], None, params)
        _assert_same_instances(p[0], p[1], params)
    params = InstanceParams()
    ref = local_instances(p[0], p[1], params)
    got = local_instances_torch(torch.from_numpy(p[0]), torch.from_numpy(p[1]), params, device="cpu")
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_islands_without_seeds_and_empty_blocks():
    fg = np.zeros((60, 70), np.uint8)
    dist = np.zeros_like(fg)
    _assert_same_instances(fg, dist, InstanceParams())  # nothing at all
    fg[5:20, 5:20] = 255  # an object with a seed
    dist[5:20, 5:20] = 100
    dist[10:15, 10:15] = 240
    fg[30:50, 30:35] = fg[45:50, 30:60] = 255  # an L-shaped island no seed reaches
    fg[2:4, 60:62] = 255  # a speck under min_size
    labels = _assert_same_instances(fg, dist, InstanceParams(min_size=5))
    assert labels.max() == 2
    _assert_same_instances(fg, np.zeros_like(fg), InstanceParams(min_size=1))  # no seeds: islands only


def test_supports_names_the_torch_methods():
    assert supports(InstanceParams(), has_dist=True)
    assert not supports(InstanceParams(), has_dist=False)  # local_instances switches to the distance transform
    assert supports(InstanceParams(method="threshold"), has_dist=False)
    assert not supports(InstanceParams(method="distance-transform"), has_dist=True)
    assert not supports(InstanceParams(method="boundary"), has_dist=True)
    with pytest.raises(NotImplementedError):
        local_instances_torch(np.zeros((8, 8), np.uint8), None, InstanceParams())


def test_blocks_on_a_torch_device_give_the_numpy_labels_seam_free(starter, nuclei_768, monkeypatch):
    """The whole postprocessing (blocks, ownership, ids) with the block step on torch: the numpy labels."""
    from dataclasses import replace

    import napari_impc_dl.inference.instances_torch as it

    from napari_impc_dl.config import SegmentConfig
    from napari_impc_dl.inference.instances import labels_from_probabilities
    from napari_impc_dl.inference.pipeline import _instance_params, segment_image

    res = segment_image(nuclei_768[0][:384, :384], starter, SegmentConfig(device="cpu"))
    params = replace(_instance_params(starter, SegmentConfig(device="cpu")), block=256, halo=48)
    assert params.device is None  # auto on a CPU model: numpy
    ref = np.zeros(res.labels.shape, np.int32)
    n_ref, _ = labels_from_probabilities(res.probabilities, ref, params)
    out = np.zeros(res.labels.shape, np.int32)
    calls = []
    real = it.local_instances_torch
    monkeypatch.setattr(it, "local_instances_torch", lambda *a, **k: calls.append(1) or real(*a, **k))
    n, _ = labels_from_probabilities(res.probabilities, out, replace(params, device="cpu"))
    assert len(calls) == 4  # every block went the torch way
    assert n == n_ref > 20
    np.testing.assert_array_equal(out, ref)


def test_postprocess_device_follows_the_config_and_the_host():
    import torch

    from napari_impc_dl.config import GPU_POSTPROCESS_BELOW_CORES, SegmentConfig, usable_cores
    from napari_impc_dl.inference.pipeline import postprocess_device

    cuda = type("M", (), {"device": torch.device("cuda:1")})()
    cpu = type("M", (), {"device": torch.device("cpu")})()
    mps = type("M", (), {"device": torch.device("mps")})()
    assert postprocess_device(SegmentConfig(postprocess_device="model"), cuda) == "cuda:1"
    assert postprocess_device(SegmentConfig(postprocess_device="model"), cpu) is None
    assert postprocess_device(SegmentConfig(postprocess_device="cpu"), cuda) is None
    few = usable_cores() < GPU_POSTPROCESS_BELOW_CORES
    assert postprocess_device(SegmentConfig(), cuda) == ("cuda:1" if few else None)
    assert postprocess_device(SegmentConfig(), mps) is None  # MPS: not verified, numpy


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_labels_are_the_numpy_labels_and_faster():
    """Run where a GPU is lent: equality on the device, and the time per 1024² block printed for the note."""
    import time

    import torch

    p = _synthetic_probs(3, shape=(1024, 1024))
    params = InstanceParams(device="cuda")
    ref = local_instances(p[0], p[1], InstanceParams())
    for _ in range(2):  # warm-up (kernels, allocator)
        got = local_instances(p[0], p[1], params)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    got = local_instances(p[0], p[1], params)
    gpu_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    local_instances(p[0], p[1], InstanceParams())
    cpu_s = time.perf_counter() - t0
    print(f"1024² block: numpy {cpu_s:.3f} s, cuda {gpu_s:.3f} s")
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
