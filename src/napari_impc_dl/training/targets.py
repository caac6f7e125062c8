"""Training targets for instance segmentation from instance masks.

* ``foreground``: 1 inside any object.
* ``distance``: each object's Euclidean distance to its own edge, divided by that object's
  maximum, so every object peaks at 1 in its centre whatever its size. Touching objects are
  separated by their inner boundaries first, so each one gets its own peak: this is what lets the
  seeded watershed in :mod:`napari_impc_dl.inference.instances` split touching nuclei.
* ``contact_weights``: a loss weight, ``1 + weight`` on pixels within ``reach`` px of two different
  objects (where touching objects meet, and the thin gaps between close ones), 1 elsewhere: the
  weight map of the original U-Net paper in its simplest form. Thin touching objects (chromosomes,
  packed cells) meet over a valley of one or two pixels; weighting it teaches the network to keep
  that valley, which is what the seeds need to stay apart.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def instance_targets(labels: np.ndarray) -> np.ndarray:
    """``(2, H, W)`` float32 targets (foreground, normalised distance) for an instance mask."""
    from skimage.segmentation import find_boundaries

    fg = labels > 0
    inner = fg & ~find_boundaries(labels, mode="inner")
    d = ndimage.distance_transform_edt(inner) + inner  # 1 on the first inner pixel, so small objects are not lost
    n = int(labels.max())
    peak = np.asarray(ndimage.maximum(d, labels, np.arange(1, n + 1)), np.float64) if n else np.zeros(0)
    peak_img = np.concatenate([[1.0], np.where(peak > 0, peak, 1.0)])[labels]
    dist = np.where(fg, d / peak_img, 0.0)
    return np.stack([fg.astype(np.float32), dist.astype(np.float32)])


def contact_weights(labels: np.ndarray, weight: float, reach: int = 2) -> np.ndarray:
    """``(H, W)`` float32: ``1 + weight`` within ``reach`` px of two different objects, 1 elsewhere."""
    size = 2 * reach + 1
    big = np.iinfo(np.int32).max
    lab = labels.astype(np.int32, copy=False)
    hi = ndimage.grey_dilation(lab, size=(size, size))
    lo = ndimage.grey_erosion(np.where(lab > 0, lab, big), size=(size, size))
    contact = (lo != big) & (hi != lo)
    return (1.0 + weight * contact).astype(np.float32)
