"""Object crops: for each labelled object, a square window around it, resized to the classifier's input.

    object_boxes       bounding boxes of every object of a label plane, read band by band (lazy labels stay lazy)
    crop_windows       the window of each object under a :class:`~napari_impc_dl.models.card.CropRule`
    iter_crop_batches  batches of ``(labels, (B, C, S, S) float32)`` crops, streamed from a lazy image

A window is ``fixed`` (``side`` pixels centred on the object's bounding-box centre) or ``bbox``
(the bounding box's longer side times ``1 + 2 * margin``). The network's input channels are the
image's (normalised with the *whole image's* statistics, so brightness stays comparable between
objects), the object's mask (1 on this object, 0 elsewhere: neighbours are not shown as this
object), or both, the mask last. Windows crossing the border are zero-filled, mirrored, or
(``padding="none"``) shifted inside the image.

Objects are visited in reading order, grouped so that each group's windows lie close together:
each group reads only the region their windows cover (one read of image and labels), and the
resampling to the input size is one vectorised call per group; the crops are then handed out in
batches of exactly ``batch`` (the last excepted), so every forward has the same shape (``torchvision.ops.roi_align``,
which averages ``ceil(side / size)`` samples per output pixel, so large objects are not aliased;
for the mask, the nearest label of the same sample grid). Nothing loops over pixels in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from scipy import ndimage

from ..models.card import CropRule


@dataclass
class ObjectBoxes:
    """Bounding boxes (``[y0, y1) x [x0, x1)``) of the objects of one label plane, ordered by label."""

    labels: np.ndarray
    y0: np.ndarray
    y1: np.ndarray
    x0: np.ndarray
    x1: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.size)


def object_boxes(labels, band: int = 2048) -> ObjectBoxes:
    """Bounding boxes of every object of a ``(H, W)`` label array (numpy, zarr, dask), read ``band`` rows at a time."""
    H, W = labels.shape[-2:]
    n = 0
    lo_y = lo_x = hi_y = hi_x = np.zeros(0, np.int64)
    for r0 in range(0, H, band):
        lab = np.asarray(labels[r0 : r0 + band, :])
        if lab.dtype.kind not in "iu":
            raise TypeError("labels must be integers")
        m = int(lab.max()) if lab.size else 0
        if m <= 0:
            continue
        if m > n:  # grow the tables
            grow = m - n
            lo_y, lo_x = np.concatenate([lo_y, np.full(grow, H)]), np.concatenate([lo_x, np.full(grow, W)])
            hi_y, hi_x = np.concatenate([hi_y, np.full(grow, -1)]), np.concatenate([hi_x, np.full(grow, -1)])
            n = m
        for i, sl in enumerate(ndimage.find_objects(lab)):
            if sl is None:
                continue
            ys, xs = sl
            lo_y[i] = min(lo_y[i], ys.start + r0)
            hi_y[i] = max(hi_y[i], ys.stop + r0)
            lo_x[i] = min(lo_x[i], xs.start)
            hi_x[i] = max(hi_x[i], xs.stop)
    present = np.flatnonzero(hi_y >= 0)
    return ObjectBoxes(present + 1, lo_y[present], hi_y[present], lo_x[present], hi_x[present])


def crop_windows(boxes: ObjectBoxes, rule: CropRule, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(wy0, wx0, side)`` per object: the top-left corner and side of its square window (may cross the border,
    except with ``padding="none"``, where windows are shifted inside the image when it is big enough)."""
    cy = (boxes.y0 + boxes.y1) / 2.0
    cx = (boxes.x0 + boxes.x1) / 2.0
    if rule.mode == "fixed":
        side = np.full(len(boxes), rule.side, np.int64)
    else:
        longest = np.maximum(boxes.y1 - boxes.y0, boxes.x1 - boxes.x0)
        side = np.maximum(4, np.ceil(longest * (1 + 2 * rule.margin))).astype(np.int64)
    wy0 = np.floor(cy - side / 2.0).astype(np.int64)
    wx0 = np.floor(cx - side / 2.0).astype(np.int64)
    if rule.padding == "none":
        H, W = shape
        wy0 = np.where(side <= H, np.clip(wy0, 0, np.maximum(0, H - side)), wy0)
        wx0 = np.where(side <= W, np.clip(wx0, 0, np.maximum(0, W - side)), wx0)
    return wy0, wx0, side


def n_input_channels(rule: CropRule, image_channels: int) -> int:
    """Network input channels for ``rule`` on an image of ``image_channels`` channels."""
    return {"image": image_channels, "mask": 1, "image+mask": image_channels + 1}[rule.input]


def _groups(wy0: np.ndarray, wx0: np.ndarray, side: np.ndarray, batch: int, max_region: int) -> list[np.ndarray]:
    """Object indices in reading order (bands of rows, then columns), cut into batches whose windows'
    union is at most ``max_region`` pixels per side."""
    bucket = max(64, int(np.median(side)) * 4) if side.size else 64
    order = np.lexsort((wx0, wy0 // bucket))
    out, cur = [], []
    y_lo = x_lo = 1 << 62
    y_hi = x_hi = -(1 << 62)
    for i in order:
        a, b, s = int(wy0[i]), int(wx0[i]), int(side[i])
        ny_lo, nx_lo, ny_hi, nx_hi = min(y_lo, a), min(x_lo, b), max(y_hi, a + s), max(x_hi, b + s)
        if cur and (len(cur) >= batch or ny_hi - ny_lo > max_region or nx_hi - nx_lo > max_region):
            out.append(np.asarray(cur))
            cur = []
            ny_lo, nx_lo, ny_hi, nx_hi = a, b, a + s, b + s
        cur.append(i)
        y_lo, x_lo, y_hi, x_hi = ny_lo, nx_lo, ny_hi, nx_hi
    if cur:
        out.append(np.asarray(cur))
    return out


def _region(read: Callable[[slice, slice], np.ndarray], shape, y0, y1, x0, x1, padding: str, fill=0) -> np.ndarray:
    """``[..., y0:y1, x0:x1]`` of the image through ``read`` (clipped reads), padded where it crosses the border."""
    H, W = shape
    cy0, cy1, cx0, cx1 = max(0, y0), min(H, y1), max(0, x0), min(W, x1)
    if cy1 <= cy0 or cx1 <= cx0:  # entirely outside (cannot happen for real objects)
        raise ValueError("window outside the image")
    r = read(slice(cy0, cy1), slice(cx0, cx1))
    pads = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1))
    if not any(p for pp in pads for p in pp):
        return r
    lead = ((0, 0),) * (r.ndim - 2)
    if padding == "reflect" and r.shape[-2] > 1 and r.shape[-1] > 1:
        # mirror as often as needed (windows may be larger than the image)
        return np.pad(r, lead + pads, mode="symmetric")
    return np.pad(r, lead + pads, mode="constant", constant_values=fill)


def crop_batch(img: np.ndarray | None, lab: np.ndarray, ids: np.ndarray, wy: np.ndarray, wx: np.ndarray, side: np.ndarray, size: int, rule: CropRule) -> np.ndarray:
    """Crops of one batch from a region: ``img`` ``(C, h, w)`` float32 (normalised) or None, ``lab`` ``(h, w)``;
    ``wy, wx`` are window corners relative to the region. Returns ``(B, C', size, size)`` float32."""
    import torch
    from torchvision.ops import roi_align

    B = ids.size
    parts = []
    if rule.input in ("image", "image+mask"):
        if np.all(side == size):  # no resampling: plain slices
            parts.append(np.stack([img[:, y : y + size, x : x + size] for y, x in zip(wy, wx)]))
        else:
            boxes = torch.from_numpy(np.stack([np.zeros(B), wx, wy, wx + side, wy + side], 1).astype(np.float32))
            t = torch.from_numpy(np.ascontiguousarray(img))[None]
            parts.append(roi_align(t, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True).numpy())
    if rule.input in ("mask", "image+mask"):
        step = side.astype(np.float64) / size
        centres = (np.arange(size) + 0.5)[None, :] * step[:, None]  # (B, S) offsets of the sample points
        rows = np.clip(np.floor(wy[:, None] + centres).astype(np.int64), 0, lab.shape[0] - 1)
        cols = np.clip(np.floor(wx[:, None] + centres).astype(np.int64), 0, lab.shape[1] - 1)
        m = lab[rows[:, :, None], cols[:, None, :]] == ids[:, None, None]
        parts.append(m[:, None].astype(np.float32))
    return np.ascontiguousarray(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0], dtype=np.float32)


def iter_crop_batches(
    read_image: Callable[[slice, slice], np.ndarray] | None,
    labels,
    shape: tuple[int, int],
    rule: CropRule,
    size: int,
    *,
    normalize: Callable[[np.ndarray], np.ndarray] | None = None,
    boxes: ObjectBoxes | None = None,
    batch: int = 64,
    max_region: int = 2048,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(object labels, (B, C', size, size) float32 crops)`` for every object of ``labels`` ``(H, W)``.

    ``read_image(ys, xs)`` returns the raw ``(C, h, w)`` window (e.g. ``ImageSource.read`` of one
    plane); ``normalize`` maps it to network values (per-image percentiles). Only each batch's
    region of the image and the labels is read.
    """
    boxes = object_boxes(labels) if boxes is None else boxes
    if not len(boxes):
        return
    wy0, wx0, side = crop_windows(boxes, rule, shape)
    need_image = rule.input != "mask"
    pending_ids: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    n_pending = 0
    for idx in _groups(wy0, wx0, side, batch, max_region):
        # one pixel more on each side: bilinear samples near a window's edge read their neighbours, so a
        # crop does not depend on which batch (and region) its object falls in
        y0, x0 = int(wy0[idx].min()) - 1, int(wx0[idx].min()) - 1
        y1, x1 = int((wy0[idx] + side[idx]).max()) + 1, int((wx0[idx] + side[idx]).max()) + 1
        lab = _region(lambda ys, xs: np.asarray(labels[ys, xs]), shape, y0, y1, x0, x1, "zero")
        img = None
        if need_image:
            raw = _region(read_image, shape, y0, y1, x0, x1, rule.padding)
            img = normalize(raw) if normalize is not None else raw.astype(np.float32)
            if rule.padding == "zero":  # zero in network units: outside the image is "nothing"
                img = _zero_outside(img, shape, y0, x0)
        ids = boxes.labels[idx]
        pending_ids.append(ids)
        pending.append(crop_batch(img, lab, ids, wy0[idx] - y0, wx0[idx] - x0, side[idx], size, rule))
        n_pending += ids.size
        # batches of exactly ``batch`` crops (the last one excepted): every forward has the same shape
        while n_pending >= batch:
            all_ids, all_crops = np.concatenate(pending_ids), np.concatenate(pending)
            yield all_ids[:batch], all_crops[:batch]
            pending_ids, pending = [all_ids[batch:]], [all_crops[batch:]]
            n_pending -= batch
    if n_pending:
        yield np.concatenate(pending_ids), np.concatenate(pending)


def _zero_outside(img: np.ndarray, shape, y0: int, x0: int) -> np.ndarray:
    H, W = shape
    h, w = img.shape[-2:]
    ry0, ry1 = max(0, -y0), min(h, H - y0)
    rx0, rx1 = max(0, -x0), min(w, W - x0)
    if ry0 == 0 and rx0 == 0 and ry1 == h and rx1 == w:
        return img
    out = np.zeros_like(img)
    out[:, ry0:ry1, rx0:rx1] = img[:, ry0:ry1, rx0:rx1]
    return out
