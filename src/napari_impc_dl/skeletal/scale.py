"""The scale the skeletal models work at, and the resampling to and from it.

The phantoms the starters learnt from show a whole mouse in 512 x 512 pixels. A centre's radiograph
(often 2000-3000 pixels a side) is resized so its longer side is :data:`BONES_SIDE` for the bones
model and :data:`REGIONS_SIDE` for the regions model (half: the regions need context more than
detail, and the whole picture fits one forward pass), and the results are resized back onto the
picture's own pixels (labels nearest-neighbour, probabilities linearly). Training data for the
regions model is made with the same functions (:func:`~.prepare.regions_data`).
"""

from __future__ import annotations

import numpy as np

BONES_SIDE = 512
REGIONS_SIDE = 256


def work_shape(shape, side: int) -> tuple[int, int]:
    """``shape`` ``(H, W)`` scaled so that its longer side is ``side``."""
    H, W = int(shape[0]), int(shape[1])
    s = side / max(H, W)
    return max(1, int(round(H * s))), max(1, int(round(W * s)))


def resize_image(x: np.ndarray, shape) -> np.ndarray:
    """A 2D picture resized to ``shape`` (linear, anti-aliased when shrinking), float32."""
    from skimage.transform import resize

    x = np.asarray(x, np.float32)
    if tuple(x.shape) == tuple(shape):
        return x
    shrink = shape[0] < x.shape[0] or shape[1] < x.shape[1]
    return resize(x, shape, order=1, anti_aliasing=shrink, preserve_range=True).astype(np.float32)


def resize_labels(lab: np.ndarray, shape) -> np.ndarray:
    """A label image resized to ``shape`` by nearest neighbour (values kept)."""
    lab = np.asarray(lab)
    if tuple(lab.shape) == tuple(shape):
        return lab
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * lab.shape[0] / shape[0]).astype(np.int64), lab.shape[0] - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * lab.shape[1] / shape[1]).astype(np.int64), lab.shape[1] - 1)
    return lab[ys[:, None], xs[None, :]]


def resize_probs(p: np.ndarray, shape) -> np.ndarray:
    """Class probabilities ``(K, h, w)`` resized to ``(K, *shape)`` linearly, in their own dtype."""
    from scipy import ndimage as ndi

    p = np.asarray(p)
    if tuple(p.shape[1:]) == tuple(shape):
        return p
    zoom = (shape[0] / p.shape[1], shape[1] / p.shape[2])
    out = np.empty((p.shape[0], *shape), p.dtype)
    for k in range(p.shape[0]):
        r = ndi.zoom(p[k].astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)
        out[k] = np.clip(np.rint(r), 0, 255) if p.dtype == np.uint8 else r
    return out
