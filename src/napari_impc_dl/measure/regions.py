"""Per-object measurements, vectorised over all objects of a window (no Python loop per pixel).

Columns follow scikit-image's ``regionprops`` definitions (area, centroid, bbox, inertia-tensor
axes, eccentricity, orientation), computed with ``bincount`` over the window in one pass, so
thousands of objects cost milliseconds. ``solidity`` is ``area / convex hull area`` with the
hull taken around the pixel squares (as ImageJ does; scikit-image counts the pixels of a
rasterised hull instead, which reads a few percent higher on small objects).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: columns every objects table has, in order (intensity columns follow, one set per channel)
SHAPE_COLUMNS = [
    "label",
    "area",
    "centroid_y",
    "centroid_x",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
    "equivalent_diameter",
    "major_axis_length",
    "minor_axis_length",
    "orientation",
    "eccentricity",
    "solidity",
]


def intensity_columns(channel_names: list[str]) -> list[str]:
    """Names of the per-channel intensity columns."""
    cols = []
    for c in channel_names:
        cols += [f"mean_intensity_{c}", f"max_intensity_{c}", f"integrated_intensity_{c}"]
    return cols


_K = 64  # directions of the circumscribed polygon that measures convex hulls
_THETA = np.arange(_K) * (2 * np.pi / _K)
_COS, _SIN = np.cos(_THETA), np.sin(_THETA)


def hull_areas(lab: np.ndarray, n: int) -> np.ndarray:
    """Convex hull area of the pixel squares of objects ``1..n`` of ``lab``, all at once.

    The hull is measured through its support function in ``_K`` evenly spaced directions, from the
    end points of every horizontal run of each object, and the circumscribed polygon's area is
    returned: it never undercuts the exact hull and exceeds it by under 2 % even for objects of a
    few pixels, less for larger ones (``tests/unit/test_regions.py`` checks this against Qhull).
    """
    h, w = lab.shape
    pad = np.zeros((h, w + 2), lab.dtype)
    pad[:, 1:-1] = lab
    change = pad[:, 1:] != pad[:, :-1]  # (h, w + 1): a run starts at j or the previous one ended at j - 1
    starts_y, starts_x = np.nonzero(change[:, :-1] & (lab > 0))
    ends_y, ends_x = np.nonzero(change[:, 1:] & (lab > 0))  # same order: run by run in raster order
    ids = lab[starts_y, starts_x]
    order = np.argsort(ids, kind="stable")
    ids, y = ids[order], starts_y[order].astype(np.float64)
    xs, xe = starts_x[order].astype(np.float64), ends_x[order].astype(np.float64) + 1
    first = np.searchsorted(ids, np.arange(1, n + 1))
    present = np.bincount(ids, minlength=n + 1)[1:] > 0
    first = np.minimum(first, max(len(ids) - 1, 0))
    support = np.empty((n, _K))
    for k in range(_K):
        c, s = _COS[k], _SIN[k]
        proj = y * c + max(0.0, c) + np.maximum(xs * s, xe * s)
        support[:, k] = np.maximum.reduceat(proj, first) if len(proj) else 0.0
    # vertex between support lines k and k+1: p . u_k = h_k, p . u_{k+1} = h_{k+1}
    c0, s0, c1, s1 = _COS, _SIN, np.roll(_COS, -1), np.roll(_SIN, -1)
    det = c0 * s1 - s0 * c1
    h0, h1 = support, np.roll(support, -1, axis=1)
    vy = (h0 * s1 - h1 * s0) / det
    vx = (c0 * h1 - c1 * h0) / det
    area = 0.5 * np.abs((vy * np.roll(vx, -1, axis=1) - np.roll(vy, -1, axis=1) * vx).sum(1))
    return np.where(present, area, 0.0)


def measure_objects(
    labels: np.ndarray,
    first_id: int,
    last_id: int,
    intensity: np.ndarray | None = None,
    channel_names: list[str] | None = None,
    offset: tuple[int, int] = (0, 0),
) -> dict[str, np.ndarray]:
    """Measure objects ``first_id..last_id`` of a label window.

    ``labels`` (h, w) holds those ids (other pixels 0); ``intensity`` is ``(C, h, w)`` raw image
    data of the same window; ``offset`` is the window's origin in the image, added to centroids
    and bounding boxes. Returns a dict of equal-length column arrays.
    """
    n = last_id - first_id + 1
    names = channel_names or ([f"c{i}" for i in range(intensity.shape[0])] if intensity is not None else [])
    if n <= 0:
        cols = {c: np.zeros(0) for c in SHAPE_COLUMNS}
        cols.update({c: np.zeros(0) for c in intensity_columns(names)})
        return cols
    h, w = labels.shape
    idx = np.flatnonzero(labels)
    lab_fg = labels.ravel()[idx].astype(np.int64) - (first_id - 1)
    ok = (lab_fg >= 1) & (lab_fg <= n)
    idx, lab_fg = idx[ok], lab_fg[ok]
    lab = np.zeros((h, w), np.int32)  # ids 1..n in this window
    lab.ravel()[idx] = lab_fg
    y, x = (idx // w).astype(np.float64), (idx % w).astype(np.float64)
    m = n + 1
    area = np.bincount(lab_fg, minlength=m)[1:].astype(np.float64)
    safe = np.where(area > 0, area, 1)
    cy, cx = np.bincount(lab_fg, y, m)[1:] / safe, np.bincount(lab_fg, x, m)[1:] / safe
    mu20 = np.bincount(lab_fg, y * y, m)[1:] / safe - cy * cy  # row variance
    mu02 = np.bincount(lab_fg, x * x, m)[1:] / safe - cx * cx  # column variance
    mu11 = np.bincount(lab_fg, y * x, m)[1:] / safe - cy * cx
    # skimage's inertia tensor [[mu02, -mu11], [-mu11, mu20]] (in (row, col) order: [[var_col, -cov], [-cov, var_row]])
    a, b, c = mu02, -mu11, mu20
    tr, det = a + c, a * c - b * b
    disc = np.sqrt(np.maximum((tr / 2) ** 2 - det, 0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 0)
    major, minor = 4 * np.sqrt(l1), 4 * np.sqrt(l2)
    ecc = np.where(l1 > 0, np.sqrt(np.clip(1 - l2 / np.where(l1 > 0, l1, 1), 0, 1)), 0.0)
    orient = np.where(a - c == 0, np.where(b < 0, np.pi / 4, -np.pi / 4), 0.5 * np.arctan2(-2 * b, c - a))
    bbox = np.array([(s[0].start, s[1].start, s[0].stop, s[1].stop) if s is not None else (0, 0, 0, 0) for s in ndimage.find_objects(lab, max_label=n)], np.int64).reshape(n, 4)
    hull = hull_areas(lab, n)
    solidity = np.where(hull > 0, np.minimum(1.0, area / np.where(hull > 0, hull, 1)), 1.0)
    oy, ox = offset
    cols: dict[str, np.ndarray] = {
        "label": np.arange(first_id, last_id + 1, dtype=np.int64),
        "area": area.astype(np.int64),
        "centroid_y": cy + oy,
        "centroid_x": cx + ox,
        "bbox_min_y": bbox[:, 0] + oy,
        "bbox_min_x": bbox[:, 1] + ox,
        "bbox_max_y": bbox[:, 2] + oy,
        "bbox_max_x": bbox[:, 3] + ox,
        "equivalent_diameter": np.sqrt(4 * area / np.pi),
        "major_axis_length": major,
        "minor_axis_length": minor,
        "orientation": orient,
        "eccentricity": ecc,
        "solidity": solidity,
    }
    if intensity is not None:
        for ci, name in enumerate(names):
            v = intensity[ci].ravel()[idx].astype(np.float64)
            s = np.bincount(lab_fg, v, m)[1:]
            cols[f"mean_intensity_{name}"] = s / safe
            mx = np.full(m, np.nan)
            mx[1:][area > 0] = -np.inf
            np.maximum.at(mx, lab_fg, v)
            cols[f"max_intensity_{name}"] = mx[1:]
            cols[f"integrated_intensity_{name}"] = s
    return cols
