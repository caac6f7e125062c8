"""Vertebrae and ribs found as instances -> what each is (region, side) -> the counts IMPC asks for.

The bones model gives a label per bone; the regions model a probability per class and pixel. Here:

1. :func:`bone_table`: each instance's mean class probabilities decide whether it is a vertebra, a rib
   (or neither: no trace of either, dropped), with ``p_kind`` its share among the bone classes (soft
   tissue and background left out: a thin rib or a tail vertebra is mostly edge at the regions
   model's scale, and the bones model has already said it is a bone);
2. :func:`spine_regions`: the vertebrae are chained from the skull along the spine (each to its
   nearest unvisited neighbour) and given regions by the most probable **ordered** assignment
   (cervical, thoracic, lumbar, sacral, caudal never go backwards along the chain: a Viterbi pass
   over the per-vertebra probabilities), so one vertebra read wrongly in the middle of a region
   cannot add a region boundary; on a dorso-ventral view a vertebra a rib starts from is likelier
   thoracic (:func:`rib_attachments`, :data:`RIB_BOOST`; a lateral view shows the ribs across the
   spine, so there the regions model decides alone);
3. :func:`rib_sides`: on a dorso-ventral view each rib's side is where it lies, in the standard view,
   relative to the nearest vertebra (the mouse's left on the image's left); a lateral view shows
   both sides on top of each other, so its ribs get no side;
4. :func:`rib_heads`: on a dorso-ventral view, ribs per side by the pieces of rib next to the spine
   (ribs overlap further out, so their own pieces merge);
5. :func:`counts`: the numbers and a confidence for each (the least sure of the bones that make
   it up), keyed as :data:`~napari_impc_dl.synthetic.xray_anatomy.COUNT_KEYS`.
"""

from __future__ import annotations

import numpy as np

from ..synthetic.xray_anatomy import REGIONS
from ..synthetic.xray_layout import CLS
from .pose import Pose

VERTEBRA_CLASSES = [CLS[r] for r in REGIONS]
RIB_CLASS = CLS["ribs"]
OTHER_BONES = [CLS[c] for c in ("skull", "pelvis", "limbs", "marker")]
"""Bright things that are not counted. The bones model finds only vertebrae and ribs, so an instance is kept
whenever the regions model sees any vertebra or rib in it (the tips of the tail and the ribs' ends, thin at
the regions model's scale, are often read as limb there); these classes only lower its ``p_kind``."""


BONE_THRESHOLD = 0.8
"""Bone probability (the bones model's foreground) above which a pixel is bone when bones are cut by kind."""


def instances_by_kind(foreground: np.ndarray, probs: np.ndarray, *, threshold: float = BONE_THRESHOLD, min_size: int = 3) -> np.ndarray:
    """Bone instances as the connected pieces of bone of one kind: the bones model's foreground (``(H, W)``, 0-1 or
    uint8 0-255) above ``threshold``, split into vertebra pixels and rib pixels by the regions model (``probs``
    ``(K, H, W)``), each kind's connected components one instance (pieces under ``min_size`` pixels dropped).

    Vertebrae are separate blobs with a gap to the next, so their components count them better than the
    distance-seeded instances, which cut a vertebra from its processes and a thin rib into pieces (on held-out
    phantoms seeds 9000-9011: thoracic exact 0.50 vs 0.08, lumbar 0.83 vs 0.75, caudal within one 0.75 vs 0.58).
    Ribs of neighbouring levels touch at this scale, so their components still merge: rib counts are not
    reliable yet with either rule."""
    from scipy import ndimage as ndi

    fg = np.asarray(foreground, np.float32)
    fg = fg / 255.0 if np.asarray(foreground).dtype == np.uint8 else fg
    bone = fg > threshold
    pv = np.asarray(probs[VERTEBRA_CLASSES], np.float32).sum(0)
    rib = bone & (np.asarray(probs[RIB_CLASS], np.float32) > pv)
    lv, nv = ndi.label(bone & ~rib)
    lr, _ = ndi.label(rib)
    lab = np.where(lv > 0, lv, np.where(lr > 0, lr + nv, 0)).astype(np.int32)
    sizes = np.bincount(lab.ravel())
    small = sizes < min_size
    small[0] = False
    lab[small[lab]] = 0
    return lab


def bone_table(instances: np.ndarray, probs: np.ndarray):
    """One row per instance: ``label, area, centroid_y, centroid_x, kind (vertebra / rib), region, p_kind``
    and ``p_<region>`` (the vertebra regions' shares), from ``probs`` ``(K, H, W)`` (uint8 ``p * 255`` or float)."""
    import pandas as pd

    lab = np.asarray(instances).ravel().astype(np.int64)
    n = int(lab.max()) if lab.size else 0
    area = np.bincount(lab, minlength=n + 1).astype(np.float64)
    H, W = instances.shape
    yy, xx = np.indices((H, W))
    cy = np.bincount(lab, yy.ravel(), minlength=n + 1) / np.maximum(area, 1)
    cx = np.bincount(lab, xx.ravel(), minlength=n + 1) / np.maximum(area, 1)
    scale = 255.0 if np.asarray(probs).dtype == np.uint8 else 1.0
    mean = np.stack([np.bincount(lab, np.asarray(probs[k], np.float64).ravel(), minlength=n + 1) for k in range(probs.shape[0])], 1)
    mean = mean / np.maximum(area, 1)[:, None] / scale
    rows = []
    for i in range(1, n + 1):
        if area[i] == 0:
            continue
        v = mean[i, VERTEBRA_CLASSES]
        r = mean[i, RIB_CLASS]
        other = mean[i, OTHER_BONES].sum()
        if v.sum() + r < 1e-3:  # no sign of a vertebra or a rib at all: a false detection
            continue
        kind = "rib" if r > v.sum() else "vertebra"
        p_kind = float((r if kind == "rib" else v.sum()) / max(v.sum() + r + other, 1e-9))
        share = v / max(v.sum(), 1e-9)
        rows.append({"label": i, "area": int(area[i]), "centroid_y": float(cy[i]), "centroid_x": float(cx[i]), "kind": kind,
                     "region": "ribs" if kind == "rib" else REGIONS[int(share.argmax())], "p_kind": round(p_kind, 4),
                     **{f"p_{reg}": round(float(s), 4) for reg, s in zip(REGIONS, share)}})
    cols = ["label", "area", "centroid_y", "centroid_x", "kind", "region", "p_kind", *(f"p_{r}" for r in REGIONS)]
    return pd.DataFrame(rows, columns=cols)


def chain(points: np.ndarray, start: np.ndarray) -> list[int]:
    """Indices of ``points`` ``(n, 2)`` in chain order: from the one nearest ``start``, each time the nearest unvisited one."""
    n = len(points)
    if n == 0:
        return []
    left = set(range(n))
    cur = int(np.argmin(np.hypot(*(points - start).T)))
    order = [cur]
    left.discard(cur)
    while left:
        rest = np.fromiter(left, int)
        cur = int(rest[np.argmin(np.hypot(*(points[rest] - points[cur]).T))])
        order.append(cur)
        left.discard(cur)
    return order


def ordered_regions(p: np.ndarray) -> np.ndarray:
    """The most probable region per vertebra ``(n, 5)`` probabilities in chain order, regions never going backwards."""
    n, R = p.shape
    if n == 0:
        return np.zeros(0, int)
    cost = -np.log(np.clip(p, 1e-6, 1.0))
    acc = np.zeros((n, R))
    back = np.zeros((n, R), int)
    acc[0] = cost[0]
    for i in range(1, n):
        best = np.minimum.accumulate(acc[i - 1])  # best over regions <= r
        arg = np.array([int(np.argmin(acc[i - 1][: r + 1])) for r in range(R)])
        acc[i] = best + cost[i]
        back[i] = arg
    out = np.zeros(n, int)
    out[-1] = int(np.argmin(acc[-1]))
    for i in range(n - 1, 0, -1):
        out[i - 1] = back[i, out[i]]
    return out


RIB_BOOST = 2.5
"""A vertebra a rib starts from is this much likelier thoracic (and cervical or lumbar this much less); one
without a rib this much less likely thoracic. Curators count thoracic vertebrae as the rib-bearing ones."""


def rib_attachments(instances: np.ndarray, table) -> dict[int, int]:
    """Vertebra label -> how many ribs start at it: each rib's pixel nearest to a vertebra centre (its head, by
    the spine) is given to that vertebra."""
    verts = table[table["kind"] == "vertebra"]
    ribs = table[table["kind"] == "rib"]
    out = {int(v): 0 for v in verts["label"]}
    if not len(verts) or not len(ribs):
        return out
    vc = verts[["centroid_y", "centroid_x"]].to_numpy(float)
    from scipy import ndimage as ndi

    boxes = ndi.find_objects(np.asarray(instances))
    for lab in ribs["label"].to_numpy(int):
        box = boxes[lab - 1] if lab - 1 < len(boxes) else None
        if box is None:
            continue
        ys, xs = np.nonzero(np.asarray(instances)[box] == lab)
        pts = np.stack([ys + box[0].start, xs + box[1].start], 1).astype(float)
        d = np.hypot(pts[:, None, 0] - vc[None, :, 0], pts[:, None, 1] - vc[None, :, 1])
        out[int(verts["label"].iloc[int(np.unravel_index(np.argmin(d), d.shape)[1])])] += 1
    return out


def spine_regions(table, head_yx, ribs_at: dict | None = None) -> None:
    """Set ``region`` (ordered, see the module docstring), ``p_region`` and ``spine_index`` (1 = next to the
    skull) of the vertebra rows of ``table`` in place. ``ribs_at`` (:func:`rib_attachments`) weighs the
    thoracic region by :data:`RIB_BOOST` before the ordered assignment."""
    vert = table.index[table["kind"] == "vertebra"]
    table["spine_index"] = 0
    table["p_region"] = table["p_kind"].astype(float)
    if not len(vert):
        return
    pts = table.loc[vert, ["centroid_y", "centroid_x"]].to_numpy(float)
    order = chain(pts, np.asarray(head_yx, float))
    idx = vert[order]
    p = table.loc[idx, [f"p_{r}" for r in REGIONS]].to_numpy(float)
    if ribs_at is not None:
        has = np.array([ribs_at.get(int(lab), 0) > 0 for lab in table.loc[idx, "label"]])
        w = np.where(has[:, None], [1 / RIB_BOOST, RIB_BOOST, 1 / RIB_BOOST, 1.0, 1.0], [1.0, 1 / RIB_BOOST, 1.0, 1.0, 1.0])
        p = p * w
        p = p / np.maximum(p.sum(1, keepdims=True), 1e-9)
    reg = ordered_regions(p)
    table.loc[idx, "region"] = [REGIONS[r] for r in reg]
    table.loc[idx, "p_region"] = np.round(p[np.arange(len(reg)), reg], 4)
    table.loc[idx, "spine_index"] = np.arange(1, len(idx) + 1)


def rib_sides(table, pose: Pose, view: str) -> None:
    """Set ``side`` (left / right, the mouse's own; empty on a lateral view) of the rib rows of ``table`` in place."""
    table["side"] = ""
    ribs = table.index[table["kind"] == "rib"]
    verts = table.index[table["kind"] == "vertebra"]
    if view != "dv" or not len(ribs) or not len(verts):
        return
    rq = pose.to_standard(table.loc[ribs, ["centroid_y", "centroid_x"]].to_numpy(float))
    vq = pose.to_standard(table.loc[verts, ["centroid_y", "centroid_x"]].to_numpy(float))
    near = np.argmin(np.abs(rq[:, None, 0] - vq[None, :, 0]) + 0.25 * np.abs(rq[:, None, 1] - vq[None, :, 1]), axis=1)
    table.loc[ribs, "side"] = np.where(rq[:, 1] < vq[near, 1], "left", "right")


def counts(table, view: str) -> tuple[dict, dict]:
    """``(counts, confidence)`` keyed by cervical, thoracic, lumbar, sacral, caudal, ribs_left, ribs_right
    (ribs: None on a lateral view, whose two sides overlap)."""
    n, conf = {}, {}
    v = table[table["kind"] == "vertebra"]
    for r in REGIONS:
        sel = v[v["region"] == r]
        n[r] = int(len(sel))
        conf[r] = round(float(sel["p_region" if "p_region" in sel else "p_kind"].min()) if len(sel) else 0.0, 4)
    ribs = table[table["kind"] == "rib"]
    for side in ("left", "right"):
        key = f"ribs_{side}"
        if view != "dv":
            n[key], conf[key] = None, 0.0
            continue
        sel = ribs[ribs["side"] == side]
        n[key] = int(len(sel))
        conf[key] = round(float(sel["p_kind"].min()) if len(sel) else 0.0, 4)
    return n, conf


RIB_HEAD_BAND = 3.0
"""Rib pixels at most this far (pixels at the 512-px working scale) from a vertebra are the ribs' heads."""


def rib_heads(instances: np.ndarray, table, probs: np.ndarray, pose: Pose, *, scale: float = 1.0) -> tuple[dict, dict]:
    """Ribs per side counted by their heads, as a curator counts them at the spine: on a dorso-ventral view ribs
    overlap out in the rib cage (rib k crosses k+1 and k+2 in projection, so their pixels join), but each starts
    at its own vertebra. The rib pixels within :data:`RIB_HEAD_BAND` x ``scale`` pixels of a vertebra fall into
    one piece per rib; each piece's side is where it lies in the standard view against the nearest vertebra.
    Returns ``({"ribs_left": n, "ribs_right": n}, confidence)``, the confidence of a side being its least sure
    head's rib share (rib against vertebra probability over its pixels). On held-out phantoms (seeds 9001-9023,
    dorso-ventral) 17 of 24 sides exact, against 0 for the rib pieces themselves (11 of 12 with true masks)."""
    from scipy import ndimage as ndi

    lab = np.asarray(instances)
    verts = table[table["kind"] == "vertebra"]
    vert = np.isin(lab, verts["label"].to_numpy(int))
    rib = np.isin(lab, table.loc[table["kind"] == "rib", "label"].to_numpy(int))
    n = {"ribs_left": 0, "ribs_right": 0}
    conf = {"ribs_left": 0.0, "ribs_right": 0.0}
    if not vert.any() or not rib.any():
        return n, conf
    band = rib & (ndi.distance_transform_edt(~vert) <= RIB_HEAD_BAND * scale)
    heads, k = ndi.label(band)
    if not k:
        return n, conf
    cen = np.asarray(ndi.center_of_mass(band, heads, range(1, k + 1)), float).reshape(-1, 2)
    pr = np.asarray(probs[RIB_CLASS], np.float64)
    pv = np.asarray(probs[VERTEBRA_CLASSES], np.float64).sum(0)
    share = np.asarray(ndi.mean(pr / np.maximum(pr + pv, 1e-9), heads, range(1, k + 1)), float).reshape(-1)
    cq = pose.to_standard(cen)
    vq = pose.to_standard(verts[["centroid_y", "centroid_x"]].to_numpy(float))
    near = np.argmin(np.hypot(cq[:, None, 0] - vq[None, :, 0], cq[:, None, 1] - vq[None, :, 1]), 1)
    left = cq[:, 1] < vq[near, 1]
    for key, sel in (("ribs_left", left), ("ribs_right", ~left)):
        n[key] = int(sel.sum())
        conf[key] = round(float(share[sel].min()) if sel.any() else 0.0, 4)
    return n, conf
