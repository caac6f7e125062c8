import numpy as np
import pytest
from scipy import ndimage

from napari_impc_dl.inference.instances import InstanceParams, labels_from_probabilities, local_instances
from napari_impc_dl.measure.matching import match_instances


def _probs_from_labels(lab: np.ndarray) -> np.ndarray:
    """Ideal model output for an instance mask: foreground and per-object normalised distance."""
    from napari_impc_dl.training.targets import instance_targets

    t = instance_targets(lab)
    return (t * 255 + 0.5).astype(np.uint8)


def test_touching_objects_are_split():
    yy, xx = np.mgrid[:64, :96]
    lab = np.zeros((64, 96), np.int32)
    lab[(yy - 32) ** 2 + (xx - 30) ** 2 < 15**2] = 1
    lab[((yy - 32) ** 2 + (xx - 58) ** 2 < 15**2) & (lab == 0)] = 2
    p = _probs_from_labels(lab)
    out, anchors = local_instances(p[0], p[1], InstanceParams())
    assert out.max() == 2 and len(anchors) == 2
    m = match_instances(out, lab)
    assert m.tp == 2 and m.iou_matched_mean > 0.9


def test_foreground_only_models_use_the_distance_transform():
    lab = np.zeros((64, 64), np.int32)
    lab[10:30, 10:30] = 1
    lab[40:60, 35:60] = 2
    fg = ((lab > 0) * 255).astype(np.uint8)
    out, _ = local_instances(fg, None, InstanceParams())
    assert match_instances(out, lab).f1 == 1.0


def test_small_objects_are_dropped():
    lab = np.zeros((64, 64), np.int32)
    lab[10:30, 10:30] = 1
    lab[50:52, 50:52] = 2  # 4 px
    p = _probs_from_labels(lab)
    out, _ = local_instances(p[0], p[1], InstanceParams(min_size=12))
    assert out.max() == 1


@pytest.mark.parametrize("block,halo", [(256, 64), (300, 96), (200, 80)])
def test_blocks_give_the_whole_image_result(block, halo):
    from napari_impc_dl.synthetic import make_nuclei_image

    _, lab = make_nuclei_image((640, 640), seed=5, density=0.45)
    p = _probs_from_labels(lab)
    whole = np.zeros(lab.shape, np.int32)
    n_whole, _ = labels_from_probabilities(p, whole, InstanceParams(block=4096, halo=halo))
    tiled = np.zeros(lab.shape, np.int32)
    seen = []
    n_tiled, _ = labels_from_probabilities(p, tiled, InstanceParams(block=block, halo=halo), on_block=lambda w, g, a, b: seen.append((a, b)))
    assert n_tiled == n_whole
    m = match_instances(tiled, whole)
    assert m.tp == n_whole - 1 and m.fp == 0 and m.fn == 0
    assert min(iou for _, _, iou in m.matched) == 1.0  # identical objects
    # ids are consecutive and each block reports exactly the ids it owns
    assert np.array_equal(np.unique(tiled)[1:], np.arange(1, n_tiled))
    assert seen[0][0] == 1 and all(b2[0] == b1[1] + 1 for b1, b2 in zip(seen, seen[1:]))
    # every object is one connected component
    for i, sl in enumerate(ndimage.find_objects(tiled), start=1):
        assert ndimage.label(tiled[sl] == i)[1] == 1


def test_parallel_blocks_equal_one_worker_and_report_in_order():
    """Blocks computed two at a time give the same labels and the same on_block sequence as one after the other."""
    from napari_impc_dl.synthetic import make_nuclei_image

    _, lab = make_nuclei_image((700, 700), seed=9, density=0.5)
    p = _probs_from_labels(lab)
    params = InstanceParams(block=200, halo=64)
    runs = {}
    for workers in (1, 2):
        out = np.zeros(lab.shape, np.int32)
        calls, started = [], []

        def on_block(w, g, a, b):
            assert w in started  # a block's start is announced before its callback
            calls.append((w, a, b, int(g.max())))

        n, busy = labels_from_probabilities(p, out, params, workers=workers, on_block=on_block, on_start=started.append)
        assert busy > 0
        assert started == [c[0] for c in calls]  # every block announced once, in raster order
        runs[workers] = (n, out, calls)
    (n1, out1, calls1), (n2, out2, calls2) = runs[1], runs[2]
    assert len(calls1) == 16 and n1 == n2 and n1 > 100
    assert np.array_equal(out1, out2)
    assert calls1 == calls2  # same windows, same id ranges, in raster order of blocks


def test_worker_errors_and_cancel_leave_no_thread():
    import threading

    from napari_impc_dl.errors import CancelToken, Cancelled

    p = np.zeros((2, 600, 600), np.uint8)
    p[:, 100:140, 100:140] = 255
    cancel = CancelToken()

    def on_block(w, g, a, b):
        cancel.cancel()

    with pytest.raises(Cancelled):
        labels_from_probabilities(p, np.zeros((600, 600), np.int32), InstanceParams(block=150, halo=32), workers=2, on_block=on_block, cancel=cancel)
    class Failing:  # a probability store whose reads fail after a few blocks (e.g. a broken zarr chunk)
        shape, dtype = p.shape, p.dtype
        reads = 0

        def __getitem__(self, key):
            Failing.reads += 1
            if Failing.reads > 3:
                raise OSError("chunk unreadable")
            return p[key]

    with pytest.raises(OSError, match="chunk unreadable"):  # an error inside a worker reaches the caller
        labels_from_probabilities(Failing(), np.zeros((600, 600), np.int32), InstanceParams(block=150, halo=32), workers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("impc-instances")]
