"""Match predicted objects to ground-truth objects by IoU, and score the match.

A true object and a predicted object *match* when their intersection over union (IoU) is at
least ``iou_threshold``, each object matching at most one other. Then

- TP = matched pairs, FP = predictions left unmatched, FN = true objects left unmatched,
- precision = TP / n_pred, recall = TP / n_true, F1 = 2 TP / (2 TP + FP + FN),

the usual "F1 at IoU 0.5" of nucleus segmentation papers (as in StarDist's ``matching``).
Conventions: two empty images score 1.0 everywhere; otherwise an empty denominator gives 0.0.

How it stays fast on a 4096 x 4096 image with thousands of objects: both images are read once as
runs of constant (true id, predicted id) along the flattened pixels, so the sparse overlap table
comes from ``np.unique`` over runs (far fewer than pixels), never from a loop over objects.
Above IoU 0.5 a match is unique by construction; at or below it, objects competing for each other
are resolved with ``scipy.optimize.linear_sum_assignment`` per connected group of candidates
(most matches first, then the largest total IoU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MatchResult", "match_instances", "overlap_table", "scores"]


@dataclass(frozen=True)
class MatchResult:
    """Scores of one prediction against one ground truth (see the module docstring)."""

    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    iou_matched_mean: float
    """Mean IoU over matched pairs; 0.0 when nothing matched (including two empty images)."""
    matched: list[tuple[int, int, float]] = field(default_factory=list)
    """``(true_label, pred_label, iou)`` of every matched pair, sorted by true label."""

    def as_row(self) -> dict:
        """The scores without the pair list, as a flat dict (one CSV row)."""
        return {
            k: getattr(self, k)
            for k in ("n_true", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "iou_matched_mean")
        }


def scores(tp: int, n_true: int, n_pred: int) -> tuple[float, float, float]:
    """(precision, recall, f1) from counts, with the conventions of this module."""
    if n_true == 0 and n_pred == 0:
        return 1.0, 1.0, 1.0
    fp, fn = n_pred - tp, n_true - tp
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn)
    return float(precision), float(recall), float(f1)


def _flat_labels(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"{name} must be an integer label image, got dtype {a.dtype} with non-integer values")
        a = a.astype(np.int64)
    if a.size and np.issubdtype(a.dtype, np.signedinteger) and a.min() < 0:
        raise ValueError(f"{name} has negative labels; use 0 for background and positive ids for objects")
    return a.reshape(-1)


def overlap_table(pred: np.ndarray, truth: np.ndarray):
    """Sparse overlap of two label images of the same shape.

    Returns
    -------
    true_ids, true_area : np.ndarray
        Nonzero ids of ``truth`` (sorted) and their pixel counts.
    pred_ids, pred_area : np.ndarray
        The same for ``pred``.
    ti, pi, inter : np.ndarray
        For every overlapping pair: index into ``true_ids``, index into ``pred_ids``, pixel count.
    """
    t, p = _flat_labels(truth, "truth"), _flat_labels(pred, "pred")
    n = t.size
    if n == 0:
        e = np.zeros(0, np.int64)
        return e, e, e, e, e, e, e
    change = np.empty(n, bool)
    change[0] = True
    np.not_equal(t[1:], t[:-1], out=change[1:])
    change[1:] |= p[1:] != p[:-1]
    starts = np.flatnonzero(change)
    del change
    length = np.diff(np.append(starts, n))
    tv, pv = t[starts], p[starts]
    t_all, t_inv = np.unique(tv, return_inverse=True)
    p_all, p_inv = np.unique(pv, return_inverse=True)
    t_area = np.bincount(t_inv, length, minlength=t_all.size).astype(np.int64)
    p_area = np.bincount(p_inv, length, minlength=p_all.size).astype(np.int64)
    both = (tv != 0) & (pv != 0)
    code = t_inv[both].astype(np.int64) * p_all.size + p_inv[both]
    pairs, inv = np.unique(code, return_inverse=True)
    inter = np.bincount(inv, length[both], minlength=pairs.size).astype(np.int64)
    ti, pi = np.divmod(pairs, p_all.size)
    # drop background (id 0 sorts first when present)
    t0, p0 = int(t_all[0] == 0), int(p_all[0] == 0)
    return t_all[t0:], t_area[t0:], p_all[p0:], p_area[p0:], ti - t0, pi - p0, inter


def _assign(ti: np.ndarray, pi: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Indices of candidate pairs to keep so each object is used once: most pairs, then most IoU."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if ti.size == 0:
        return np.zeros(0, np.int64)
    deg_t = np.bincount(ti)[ti]
    deg_p = np.bincount(pi)[pi]
    simple = (deg_t == 1) & (deg_p == 1)
    keep = [np.flatnonzero(simple)]
    rest = np.flatnonzero(~simple)
    if rest.size:
        # compact node ids of the contested pairs, then connected groups of them
        tu, tr = np.unique(ti[rest], return_inverse=True)
        pu, pr = np.unique(pi[rest], return_inverse=True)
        graph = coo_matrix((np.ones(rest.size), (tr, tu.size + pr)), shape=(tu.size + pu.size,) * 2)
        _, comp = connected_components(graph, directed=False)
        edge_comp = comp[tr]
        order = np.argsort(edge_comp, kind="stable")
        bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
        for group in np.split(order, bounds):
            e = rest[group]
            rows, r_idx = np.unique(ti[e], return_inverse=True)
            cols, c_idx = np.unique(pi[e], return_inverse=True)
            m = min(rows.size, cols.size)
            weight = np.zeros((rows.size, cols.size))
            weight[r_idx, c_idx] = 1 + iou[e] / (m + 1)  # count first, IoU breaks ties
            r, c = linear_sum_assignment(weight, maximize=True)
            lookup = {(a, b): k for k, a, b in zip(e, r_idx, c_idx)}
            keep.append(np.array([lookup[(a, b)] for a, b in zip(r, c) if (a, b) in lookup], np.int64))
    return np.concatenate(keep)


def match_instances(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> MatchResult:
    """Match the objects of a predicted label image to those of a ground-truth label image.

    Parameters
    ----------
    pred, truth : np.ndarray
        Label images of the same shape (any number of dimensions): 0 is background, every other
        integer is one object. Ids need not be consecutive and need not correspond.
    iou_threshold : float
        Smallest IoU for a pair to count as a match, in (0, 1].

    Returns
    -------
    MatchResult
        Counts, precision / recall / F1 and the matched pairs.

    Raises
    ------
    ValueError
        If the shapes differ, the threshold is outside (0, 1], or an image is not integer labels.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    t_ids, t_area, p_ids, p_area, ti, pi, inter = overlap_table(pred, truth)
    iou = inter / (t_area[ti] + p_area[pi] - inter)
    cand = np.flatnonzero(iou >= iou_threshold)
    ti, pi, iou = ti[cand], pi[cand], iou[cand]
    keep = _assign(ti, pi, iou)
    keep = keep[np.argsort(t_ids[ti[keep]], kind="stable")]
    matched = [(int(a), int(b), float(c)) for a, b, c in zip(t_ids[ti[keep]], p_ids[pi[keep]], iou[keep])]
    n_true, n_pred, tp = int(t_ids.size), int(p_ids.size), len(matched)
    precision, recall, f1 = scores(tp, n_true, n_pred)
    return MatchResult(
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=n_pred - tp,
        fn=n_true - tp,
        precision=precision,
        recall=recall,
        f1=f1,
        iou_matched_mean=float(iou[keep].mean()) if tp else 0.0,
        matched=matched,
    )
