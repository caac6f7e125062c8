"""Classes for a segmenter's *own* objects, read from the truth, so a classifier learns its mistakes.

A count per image (chromosomes per spread) is only as right as the instances: a segmenter that merges
two touching chromosomes into one object, or cuts one in two, moves the count by one. The classifier
that runs after it can put that right if it is trained on the objects the segmenter really makes,
with classes that say how many counted things each object holds:

* ``<counted>``: the object holds one of them (the larger part of one, when it was cut);
* ``<counted>_pair``: it holds two or more (a merged touching or crossing pair);
* ``<counted>_piece``: a smaller part of one whose larger part is another object (holds none);
* any other true class (``nucleus``, ``debris``) for objects mostly made of such objects, and
  ``background`` objects (no true object under them) get ``false_class``.

Each true object of the counted class is *held* by the predicted object that covers most of it (when
that covers at least ``min_cover`` of it). :data:`napari_impc_dl.presets.CHROMOSOME_WEIGHTS` turns the
classes back into a count.

    classes_from_truth(pred, true, true_classes)        {pred label: class}
    majority_classes(pred, true, true_classes)          {pred label: class of the true object under most of it}
    merge_touching(labels, classes, rng, share)         true labels with touching pairs merged: more pair examples
"""

from __future__ import annotations

import numpy as np


def _overlap(pred, true) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(overlap, pred_size, true_size)`` indexed by label id: ``overlap[p, t]`` is the pixels predicted object ``p``
    shares with true object ``t`` (row and column 0 stay empty), from :func:`~napari_impc_dl.measure.matching.overlap_table`."""
    from ..measure.matching import overlap_table

    if np.shape(pred) != np.shape(true):
        raise ValueError(f"predicted labels {np.shape(pred)} and true labels {np.shape(true)} differ in shape")
    t_ids, t_area, p_ids, p_area, ti, pi, inter = overlap_table(pred, true)
    p_size = np.zeros(int(p_ids.max(initial=0)) + 1, np.int64)
    t_size = np.zeros(int(t_ids.max(initial=0)) + 1, np.int64)
    p_size[p_ids], t_size[t_ids] = p_area, t_area
    overlap = np.zeros((p_size.size, t_size.size), np.int64)
    overlap[p_ids[pi], t_ids[ti]] = inter
    return overlap, p_size, t_size


def classes_from_truth(
    pred: np.ndarray, true: np.ndarray, true_classes: dict[int, str], *, counted: str = "chromosome", false_class: str = "debris", min_cover: float = 0.3
) -> dict[int, str]:
    """``{predicted label: class}`` for every object of ``pred`` (see the module's docstring)."""
    overlap, p_size, t_size = _overlap(pred, true)
    ts = np.array([t for t, c in true_classes.items() if c == counted and 0 < t < t_size.size and t_size[t]], np.int64)
    holder = overlap[:, ts].argmax(0)  # the predicted object covering most of each counted true object
    ok = (holder > 0) & (overlap[holder, ts] >= min_cover * t_size[ts])
    held = np.bincount(holder[ok], minlength=p_size.size)
    out: dict[int, str] = {}
    for p in np.flatnonzero(p_size).tolist():
        if held[p] >= 2:
            out[p] = f"{counted}_pair"
        elif held[p] == 1:
            out[p] = counted
        else:
            by_class: dict[str, int] = {}
            for t in np.flatnonzero(overlap[p]).tolist():
                c = true_classes.get(t, false_class)
                by_class[c] = by_class.get(c, 0) + int(overlap[p, t])
            best = max(by_class, key=by_class.get) if by_class else None
            out[p] = false_class if best is None else (f"{counted}_piece" if best == counted else best)
    return out


def majority_classes(pred: np.ndarray, true: np.ndarray, true_classes: dict[int, str]) -> dict[int, str]:
    """``{predicted label: class}``: the class of the true object that covers most of each predicted object, for
    classes that are a state of the object (a mitosis phase), not a count: a cell the segmenter cut keeps its
    phase in each part. Predicted objects on the background (no true object under them) are left out."""
    overlap, _, _ = _overlap(pred, true)
    best = overlap.argmax(1)
    return {p: true_classes[int(best[p])] for p in range(1, overlap.shape[0]) if overlap[p, best[p]] > 0 and int(best[p]) in true_classes}


def touching_pairs(labels: np.ndarray, keep=None) -> set[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a < b``, of labels that touch (8-connected); only labels in ``keep`` when given."""
    lab = np.asarray(labels)
    H, W = lab.shape
    found = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = lab[: H - dy, max(0, -dx) : W - max(0, dx)]
        b = lab[dy:, max(0, dx) : W - max(0, -dx)]
        hit = (a != b) & (a > 0) & (b > 0)
        found.append(np.stack([np.minimum(a[hit], b[hit]), np.maximum(a[hit], b[hit])], 1))
    pairs = {(int(u), int(v)) for u, v in np.unique(np.concatenate(found), axis=0)}
    return pairs if keep is None else {(u, v) for u, v in pairs if u in keep and v in keep}


def merge_touching(labels: np.ndarray, classes: dict[int, str], rng: np.random.Generator, share: float = 0.5, *, counted: str = "chromosome") -> tuple[np.ndarray, dict[int, str]]:
    """True labels with about ``share`` of the touching pairs of ``counted`` objects merged into one
    ``<counted>_pair`` object each (an object joins at most one pair): examples of what a segmenter's
    merges look like, many more than its own mistakes give."""
    counted_ids = {k for k, c in classes.items() if c == counted}
    pairs = sorted(touching_pairs(labels, counted_ids))
    order = rng.permutation(len(pairs)) if pairs else []
    used: set[int] = set()
    lut = np.arange(int(labels.max()) + 1)
    out = dict(classes)
    for i in order:
        a, b = pairs[int(i)]
        if a in used or b in used or rng.random() >= share:
            continue
        used |= {a, b}
        lut[b] = a
        out[a] = f"{counted}_pair"
        del out[b]
    return lut[labels].astype(labels.dtype, copy=False), out
