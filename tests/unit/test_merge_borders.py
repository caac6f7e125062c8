"""Joining objects the seeds cut in two (``merge_threshold``): a border inside an object by the distance map."""

import numpy as np
import pytest

from napari_impc_dl.inference.instances import InstanceParams, labels_from_probabilities, local_instances, merge_inner_borders
from napari_impc_dl.measure.matching import match_instances


def _rod_with_waist_and_touching_disc() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true labels, foreground, distance) 64 x 128: a rod with a centromere-like waist whose distance map dips to
    0.45 there (seeds above 0.5 cut it in two; the border's mean stays about 0.3), and a disc touching the rod's end (their maps meet near 0)."""
    yy, xx = np.mgrid[0:64, 0:128]
    lab = np.zeros((64, 128), np.int32)
    dist = np.zeros((64, 128), np.float32)
    rod = (np.abs(yy - 32) < 8) & (xx >= 10) & (xx < 80)
    lab[rod] = 1
    edge = np.minimum(8 - np.abs(yy - 32), np.minimum(xx - 10, 79 - xx)).astype(np.float32)
    waist = np.exp(-((xx - 45) ** 2) / (2 * 4.0**2))
    dist[rod] = np.sqrt(np.clip(edge[rod] / 8, 0, 1)) * (1 - 0.55 * waist[rod])  # 0.45 at the waist's middle
    disc = ((yy - 32) ** 2 + (xx - 92) ** 2 < 12**2) & (lab == 0)
    lab[disc] = 2
    dist[disc] = np.clip(1 - np.sqrt((yy[disc] - 32) ** 2 + (xx[disc] - 92) ** 2) / 12, 0, 1)
    fg = np.where(lab > 0, 250, 5).astype(np.uint8)
    return lab, fg, (dist * 255 + 0.5).astype(np.uint8)


def test_without_merging_the_waist_cuts_the_rod():
    lab, fg, dist = _rod_with_waist_and_touching_disc()
    out, anchors = local_instances(fg, dist, InstanceParams())
    assert out.max() == 3 and len(anchors) == 3


def test_merging_joins_the_cut_rod_and_keeps_the_touching_disc_apart():
    lab, fg, dist = _rod_with_waist_and_touching_disc()
    out, anchors = local_instances(fg, dist, InstanceParams(merge_threshold=0.25))
    assert out.max() == 2 and len(anchors) == 2
    m = match_instances(out, lab)
    assert m.tp == 2 and m.iou_matched_mean > 0.95
    # the joined object's anchor is the first seed pixel (raster order) of its parts, inside it
    assert all(out.ravel()[a] == k + 1 for k, a in enumerate(anchors))


def test_merge_lut_joins_chains_under_the_smallest_id():
    labels = np.array([[1, 1, 2, 2, 3, 3]], np.int32)
    dist = np.array([[50, 200, 200, 200, 200, 50]], np.uint8)
    assert merge_inner_borders(labels, dist, 100).tolist() == [0, 1, 1, 1]
    assert merge_inner_borders(labels, dist, 220).tolist() == [0, 1, 2, 3]
    assert merge_inner_borders(np.zeros((3, 3), np.int32), np.zeros((3, 3), np.uint8), 10).tolist() == [0]


@pytest.mark.parametrize("block", [48, 72])
def test_blocks_give_the_whole_image_result_with_merging(block):
    lab, fg, dist = _rod_with_waist_and_touching_disc()
    probs = np.stack([np.tile(fg, (2, 2)), np.tile(dist, (2, 2))])
    params = dict(merge_threshold=0.25, halo=96)
    whole = np.zeros(probs.shape[1:], np.int32)
    n_whole, _ = labels_from_probabilities(probs, whole, InstanceParams(block=4096, **params))
    tiled = np.zeros(probs.shape[1:], np.int32)
    n_tiled, _ = labels_from_probabilities(probs, tiled, InstanceParams(block=block, **params))
    assert n_whole == n_tiled == 9  # 4 rods + 4 discs, ids from 1 (the count is the next id)
    m = match_instances(tiled, whole)
    assert m.tp == 8 and min(iou for _, _, iou in m.matched) == 1.0


def _blob_cut_in_the_middle(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, distance) of one blob whose distance map dips along its middle column (seeds cut it in two)."""
    from scipy import ndimage

    edt = ndimage.distance_transform_edt(mask)
    xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]][1]
    dip = 1 - 0.55 * np.exp(-((xx - mask.shape[1] // 2) ** 2) / (2 * 3.0**2))
    dist = np.sqrt(edt / edt.max()) * dip
    return np.where(mask, 250, 5).astype(np.uint8), (dist * 255 + 0.5).astype(np.uint8)


def test_hull_rule_joins_a_cut_disc_but_not_two_nuclei_pressed_together():
    yy, xx = np.mgrid[0:64, 0:64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 20**2
    pair = ((yy - 32) ** 2 + (xx - 22) ** 2 < 12**2) | ((yy - 32) ** 2 + (xx - 42) ** 2 < 12**2)  # solidity 0.94, the disc's 1
    for mask, n_gated in ((disc, 1), (pair, 2)):
        fg, dist = _blob_cut_in_the_middle(mask)
        assert local_instances(fg, dist, InstanceParams())[0].max() == 2  # the seeds cut both in two
        assert local_instances(fg, dist, InstanceParams(merge_threshold=0.2))[0].max() == 1  # any shape: both joined
        gated, anchors = local_instances(fg, dist, InstanceParams(merge_threshold=0.2, merge_min_solidity=0.98))
        assert gated.max() == n_gated and len(anchors) == n_gated


def test_solidity():
    from napari_impc_dl.inference.instances import solidity

    square = np.zeros((10, 10), bool)
    square[2:8, 2:8] = True
    ell = square.copy()
    ell[2:5, 2:5] = False  # an L of 27 pixels; its hull covers 30 pixel centres (3 of the cut corner lie on or beyond its diagonal)
    assert solidity(square) == 1.0 and solidity(ell) == pytest.approx(27 / 30) and solidity(np.zeros((3, 3), bool)) == 0.0
