"""Classes of a segmenter's own objects from the truth: merged pairs, cut pieces, other classes, false objects."""

import numpy as np
import pytest

from napari_impc_dl.presets import CHROMOSOME_WEIGHTS
from napari_impc_dl.training.error_classes import classes_from_truth


def _rod(lab, k, y, x0, x1):
    lab[y : y + 4, x0:x1] = k


def test_merges_cuts_other_classes_and_false_objects():
    true = np.zeros((40, 60), np.int32)
    _rod(true, 1, 2, 2, 30)   # chromosome 1 and 2 touch: the segmenter merges them
    _rod(true, 2, 6, 2, 30)
    _rod(true, 3, 14, 2, 40)  # chromosome 3: cut in two, 26 + 12 px long
    true[24:34, 2:12] = 4     # a nucleus
    true[24:27, 40:43] = 5    # debris
    classes = {1: "chromosome", 2: "chromosome", 3: "chromosome", 4: "nucleus", 5: "debris"}
    pred = np.zeros_like(true)
    pred[2:10, 2:30] = 7                 # the merged pair
    pred[14:18, 2:28] = 2                # larger part of 3
    pred[14:18, 28:40] = 9               # smaller part of 3
    pred[24:34, 2:12] = 3                # the nucleus
    pred[24:27, 40:43] = 4               # the debris
    pred[30:34, 50:58] = 5               # a false object on the background
    got = classes_from_truth(pred, true, classes)
    assert got == {7: "chromosome_pair", 2: "chromosome", 9: "chromosome_piece", 3: "nucleus", 4: "debris", 5: "debris"}
    # the classes give back the true count: 2 + 1 + 0 = 3 chromosomes
    assert sum(CHROMOSOME_WEIGHTS.get(c, 0) for c in got.values()) == 3


def test_a_barely_covered_object_is_not_held_and_shapes_must_agree():
    true = np.zeros((20, 40), np.int32)
    _rod(true, 1, 2, 0, 40)
    pred = np.zeros_like(true)
    pred[2:6, 0:8] = 1  # covers 20 % of the chromosome: below min_cover, so it is a piece
    assert classes_from_truth(pred, true, {1: "chromosome"}) == {1: "chromosome_piece"}
    assert classes_from_truth(pred, true, {1: "chromosome"}, min_cover=0.1) == {1: "chromosome"}
    with pytest.raises(ValueError, match="differ in shape"):
        classes_from_truth(pred[:10], true, {1: "chromosome"})


def test_merge_touching_makes_pairs_of_touching_counted_objects_only():
    from napari_impc_dl.training.error_classes import merge_touching, touching_pairs

    lab = np.zeros((30, 40), np.int32)
    _rod(lab, 1, 2, 2, 20)
    _rod(lab, 2, 6, 2, 20)    # touches 1
    _rod(lab, 3, 20, 2, 20)   # alone
    lab[10:14, 20:24] = 4     # debris touching chromosome 2 diagonally
    classes = {1: "chromosome", 2: "chromosome", 3: "chromosome", 4: "debris"}
    assert touching_pairs(lab) == {(1, 2), (2, 4)}
    merged, got = merge_touching(lab, classes, np.random.default_rng(0), share=1.0)
    assert got == {1: "chromosome_pair", 3: "chromosome", 4: "debris"}
    assert (merged[6:10, 2:20] == 1).all() and set(np.unique(merged)) == {0, 1, 3, 4}
    same, kept = merge_touching(lab, classes, np.random.default_rng(0), share=0.0)
    assert kept == classes and (same == lab).all()


def test_majority_classes_keep_the_phase_of_a_cut_cell_and_skip_background_objects():
    from napari_impc_dl.training.error_classes import majority_classes

    true = np.zeros((20, 40), np.int32)
    true[2:18, 2:20] = 1   # an anaphase cell, cut in two by the segmenter
    true[2:18, 22:38] = 2  # an interphase cell
    pred = np.zeros_like(true)
    pred[2:18, 2:11], pred[2:18, 11:21] = 1, 2  # the two parts (the second reaches one column past the cell)
    pred[2:18, 22:38] = 3
    pred[0:2, 0:4] = 4  # on the background
    assert majority_classes(pred, true, {1: "anaphase", 2: "interphase"}) == {1: "anaphase", 2: "anaphase", 3: "interphase"}
