"""Instance matching: hand-built cases with known IoU, conventions, invariances, a brute-force check."""

from __future__ import annotations

import numpy as np
import pytest

from napari_impc_dl.measure.matching import match_instances, overlap_table


def _boxes(shape, boxes):
    """Label image with box ``i + 1`` at (y0, y1, x0, x1) = boxes[i]."""
    lab = np.zeros(shape, np.int32)
    for i, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        lab[y0:y1, x0:x1] = i
    return lab


def test_identical_images_match_perfectly():
    truth = _boxes((40, 40), [(0, 10, 0, 10), (20, 30, 20, 35)])
    r = match_instances(truth, truth)
    assert (r.n_true, r.n_pred, r.tp, r.fp, r.fn) == (2, 2, 2, 0, 0)
    assert r.precision == r.recall == r.f1 == 1.0 and r.iou_matched_mean == 1.0
    assert r.matched == [(1, 1, 1.0), (2, 2, 1.0)]


def test_known_iou_and_threshold():
    truth = _boxes((20, 30), [(0, 10, 0, 10)])
    pred = _boxes((20, 30), [(0, 10, 5, 15)])  # overlap 50, union 150
    assert match_instances(pred, truth, 0.5).tp == 0
    r = match_instances(pred, truth, 0.3)
    assert r.tp == 1 and r.matched[0][:2] == (1, 1)
    assert r.matched[0][2] == pytest.approx(1 / 3)
    assert r.iou_matched_mean == pytest.approx(1 / 3)


def test_iou_exactly_at_threshold_counts():
    truth = _boxes((8, 8), [(0, 4, 0, 4)])  # 16 px
    pred = _boxes((8, 8), [(0, 4, 0, 2)])  # 8 px inside -> IoU 0.5
    assert match_instances(pred, truth, 0.5).tp == 1
    assert match_instances(pred, truth, 0.51).tp == 0


def test_counts_precision_recall_f1():
    truth = _boxes((50, 50), [(0, 10, 0, 10), (20, 30, 0, 10), (40, 50, 40, 50)])
    pred = _boxes((50, 50), [(0, 10, 1, 10), (20, 30, 20, 30), (30, 40, 30, 40), (40, 50, 40, 49)])
    r = match_instances(pred, truth)
    assert (r.tp, r.fp, r.fn) == (2, 2, 1)
    assert r.precision == pytest.approx(2 / 4) and r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert r.iou_matched_mean == pytest.approx(0.9)


def test_empty_conventions():
    empty = np.zeros((10, 10), np.uint16)
    one = _boxes((10, 10), [(0, 5, 0, 5)])
    r = match_instances(empty, empty)
    assert (r.precision, r.recall, r.f1, r.tp) == (1.0, 1.0, 1.0, 0) and r.iou_matched_mean == 0.0
    r = match_instances(empty, one)  # nothing predicted
    assert (r.n_true, r.fn, r.precision, r.recall, r.f1) == (1, 1, 0.0, 0.0, 0.0)
    r = match_instances(one, empty)  # nothing to find
    assert (r.n_pred, r.fp, r.precision, r.recall, r.f1) == (1, 1, 0.0, 0.0, 0.0)


def test_label_ids_are_arbitrary_and_permutation_invariant():
    rng = np.random.default_rng(0)
    truth = _boxes((60, 60), [(0, 10, 0, 10), (15, 25, 15, 30), (40, 55, 5, 20), (30, 35, 40, 60)])
    pred = _boxes((60, 60), [(1, 10, 0, 11), (15, 24, 16, 30), (40, 52, 5, 10), (50, 60, 50, 60)])
    base = match_instances(pred, truth)
    t_map = np.r_[0, rng.permutation(np.arange(1, 5)) * 1000 + 7]
    p_map = np.r_[0, rng.permutation(np.arange(1, 5)) * 31 + 65000].astype(np.int64)
    r = match_instances(p_map[pred], t_map[truth])
    assert (r.tp, r.fp, r.fn, r.f1) == (base.tp, base.fp, base.fn, base.f1)
    expected = sorted((int(t_map[t]), int(p_map[p]), iou) for t, p, iou in base.matched)
    assert [(t, p) for t, p, _ in r.matched] == [(t, p) for t, p, _ in expected]
    np.testing.assert_allclose([m[2] for m in r.matched], [m[2] for m in expected])
    # swapping roles swaps precision and recall
    s = match_instances(truth, pred)
    assert (s.precision, s.recall) == pytest.approx((base.recall, base.precision))


def test_low_threshold_maximises_number_of_matches():
    # T1 = [0, 10), T2 = [10, 20); P2 = [0, 3) overlaps T1 only (IoU 0.3),
    # P1 = [3, 13) overlaps T1 (IoU 7/13) and T2 (IoU 3/17). Greedy best-IoU would give 1 match.
    truth = np.zeros((1, 20), np.int32)
    truth[0, :10], truth[0, 10:] = 1, 2
    pred = np.zeros((1, 20), np.int32)
    pred[0, 3:13], pred[0, :3] = 1, 2
    r = match_instances(pred, truth, 0.15)
    assert r.tp == 2
    assert [(t, p) for t, p, _ in r.matched] == [(1, 2), (2, 1)]
    assert match_instances(pred, truth, 0.5).matched == [(1, 1, pytest.approx(7 / 13))]


def test_shape_mismatch_and_bad_inputs():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        match_instances(np.zeros((4, 5), int), np.zeros((5, 4), int))
    with pytest.raises(ValueError, match="iou_threshold"):
        match_instances(np.zeros((4, 4), int), np.zeros((4, 4), int), 0)
    with pytest.raises(ValueError, match="integer"):
        match_instances(np.full((4, 4), 0.5), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="negative"):
        match_instances(np.full((4, 4), -1), np.zeros((4, 4), int))
    # float and bool images holding whole numbers are accepted
    r = match_instances(np.ones((4, 4), np.float32), np.ones((4, 4), bool))
    assert r.tp == 1


def _brute_force_iou(pred, truth):
    t_ids, p_ids = np.unique(truth)[1:], np.unique(pred)[1:]
    iou = np.zeros((t_ids.size, p_ids.size))
    for i, t in enumerate(t_ids):
        for j, p in enumerate(p_ids):
            a, b = truth == t, pred == p
            iou[i, j] = (a & b).sum() / (a | b).sum()
    return iou


def test_matches_brute_force_on_realistic_labels():
    from napari_impc_dl.synthetic import make_nuclei_image

    _, truth = make_nuclei_image((96, 96), 4, density=0.4)
    # a plausible "prediction": shifted, one object merged into its neighbour, random ids
    pred = np.roll(truth, (1, 2), axis=(0, 1))
    pred[pred == 3] = 4
    pred = np.r_[0, np.random.default_rng(1).permutation(pred.max()) + 100][pred]
    iou = _brute_force_iou(pred, truth)
    t_ids, t_area, p_ids, p_area, ti, pi, inter = overlap_table(pred, truth)
    np.testing.assert_allclose(inter / (t_area[ti] + p_area[pi] - inter), iou[ti, pi])
    assert np.count_nonzero(iou) == ti.size
    for thr in (0.5, 0.7, 0.9):
        r = match_instances(pred, truth, thr)
        assert r.tp == int((iou >= thr).sum())  # above 0.5 each object has at most one candidate
        assert r.n_true == truth.max() and r.n_pred == len(np.unique(pred)) - 1
