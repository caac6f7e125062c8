"""The level-by-level seeded flood (the watershed of instance separation)."""

import numpy as np
import pytest
from scipy import ndimage

from napari_impc_dl.inference.flood import flood

_EIGHT = np.ones((3, 3), bool)


def _two_touching_disks(r1=14, r2=9):
    """Two overlapping disks, their union's normalised distance-to-edge map, and one seed per disk."""
    yy, xx = np.mgrid[:60, :80]
    a = (yy - 30) ** 2 + (xx - 25) ** 2 < r1**2
    b = (yy - 30) ** 2 + (xx - 25 - r1 - r2 + 4) ** 2 < r2**2
    mask = a | b
    d = ndimage.distance_transform_edt(mask)
    height = (d / d.max() * 255).astype(np.uint8)
    markers = np.zeros(mask.shape, np.int32)
    markers[30, 25] = 1
    markers[30, 25 + r1 + r2 - 4] = 2
    return height, markers, mask, a, b


def test_touching_objects_split_at_the_neck():
    height, markers, mask, a, b = _two_touching_disks()
    out = flood(height, markers, mask)
    assert set(np.unique(out[mask])) == {1, 2}
    assert not (out[~mask]).any()
    # each label is one 8-connected piece, and the cut lies in the narrow neck between the disks
    for k in (1, 2):
        assert ndimage.label(out == k, structure=_EIGHT)[1] == 1
    assert (out[a & ~b] == 1).mean() > 0.97 and (out[b & ~a] == 2).mean() > 0.95


def test_agrees_with_a_priority_queue_watershed():
    from skimage.segmentation import watershed

    from napari_impc_dl.synthetic import make_nuclei_image
    from napari_impc_dl.training.targets import instance_targets

    _, lab = make_nuclei_image((384, 384), seed=3, density=0.5)
    t = (instance_targets(lab) * 255 + 0.5).astype(np.uint8)
    mask, height = t[0] > 127, t[1]
    markers, _ = ndimage.label(mask & (height > 127), structure=_EIGHT)
    ours = flood(height, markers, mask)
    ref = watershed(255 - height.astype(np.int32), markers, mask=mask)
    assert (ours[mask] == ref[mask]).mean() > 0.99  # only plateau pixels may be split differently


def test_components_without_a_marker_stay_unlabelled_and_markers_off_the_mask_are_ignored():
    mask = np.zeros((20, 30), bool)
    mask[2:8, 2:8] = True
    mask[10:18, 15:28] = True
    height = np.full(mask.shape, 100, np.uint8)
    markers = np.zeros(mask.shape, np.int32)
    markers[4, 4] = 7
    markers[0, 29] = 3  # off the mask
    out = flood(height, markers, mask)
    assert (out[2:8, 2:8] == 7).all()
    assert not out[10:18, 15:28].any() and not out[~mask].any()


def test_a_plateau_is_split_halfway_between_markers():
    mask = np.ones((5, 41), bool)
    height = np.full(mask.shape, 50, np.uint8)
    markers = np.zeros(mask.shape, np.int32)
    markers[:, 0], markers[:, 40] = 1, 2
    out = flood(height, markers, mask)
    assert (out[:, :20] == 1).all() and (out[:, 21:] == 2).all()
    assert (out[:, 20] == 1).all()  # the middle column is equidistant: the lower id wins


@pytest.mark.parametrize("dy,dx", [(0, 0), (3, 7), (11, 2), (5, 13)])
def test_result_does_not_depend_on_where_the_window_starts(dy, dx):
    """What lets blocks of a large image reproduce the whole-image labels exactly."""
    from napari_impc_dl.synthetic import make_nuclei_image
    from napari_impc_dl.training.targets import instance_targets

    _, lab = make_nuclei_image((256, 256), seed=9, density=0.5)
    t = (instance_targets(lab) * 255 + 0.5).astype(np.uint8)
    t[1] = (t[1] // 16) * 16  # coarse levels: many plateaus, where order matters most
    mask, height = t[0] > 127, t[1]
    markers, _ = ndimage.label(mask & (height > 127), structure=_EIGHT)
    whole = flood(height, markers, mask)
    win = (slice(dy, dy + 200), slice(dx, dx + 200))
    part = flood(height[win], markers[win], mask[win])
    comp, _ = ndimage.label(mask, structure=_EIGHT)
    inside = np.setdiff1d(np.unique(comp[win]), np.unique(np.concatenate([comp[win][0], comp[win][-1], comp[win][:, 0], comp[win][:, -1]])))
    keep = np.isin(comp[win], inside)  # components wholly inside the window
    assert keep.sum() > 10_000
    assert np.array_equal(part[keep], whole[win][keep])


def test_height_must_be_uint8():
    with pytest.raises(TypeError, match="uint8"):
        flood(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int32), np.ones((4, 4), bool))
