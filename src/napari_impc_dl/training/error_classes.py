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
    """``(pred, true, overlap)``: both label images as int64 and ``overlap[p, t]``, the pixels predicted object ``p``
    shares with true object ``t`` (row and column 0: background)."""
    pred = np.asarray(pred).astype(np.int64, copy=False)
    true = np.asarray(true).astype(np.int64, copy=False)
    if pred.shape != true.shape:
        raise ValueError(f"predicted labels {pred.shape} and true labels {true.shape} differ in shape")
    n_p, n_t = int(pred.max()) + 1, int(true.max()) + 1
    both = (pred > 0) & (true > 0)
    return pred, true, np.bincount(pred[both] * n_t + true[both], minlength=n_p * n_t).reshape(n_p, n_t)


def classes_from_truth(
    pred: np.ndarray, true: np.ndarray, true_classes: dict[int, str], *, counted: str = "chromosome", false_class: str = "debris", min_cover: float = 0.3
) -> dict[int, str]:
    """``{predicted label: class}`` for every object of ``pred`` (see the module's docstring)."""
    pred, true, overlap = _overlap(pred, true)
    n_p, n_t = overlap.shape
    p_size = np.bincount(pred.ravel(), minlength=n_p)
    t_size = np.bincount(true.ravel(), minlength=n_t)
    held = np.zeros(n_p, np.int64)
    for t in range(1, n_t):
        if t_size[t] and true_classes.get(t) == counted:
            p = int(overlap[:, t].argmax())
            if p and overlap[p, t] >= min_cover * t_size[t]:
                held[p] += 1
    out: dict[int, str] = {}
    for p in range(1, n_p):
        if not p_size[p]:
            continue
        if held[p] >= 2:
            out[p] = f"{counted}_pair"
        elif held[p] == 1:
            out[p] = counted
        else:
            by_class: dict[str, int] = {}
            for t in np.nonzero(overlap[p])[0]:
                c = true_classes.get(int(t), false_class)
                by_class[c] = by_class.get(c, 0) + int(overlap[p, t])
            best = max(by_class, key=by_class.get) if by_class else None
            out[p] = false_class if best is None else (f"{counted}_piece" if best == counted else best)
    return out


def majority_classes(pred: np.ndarray, true: np.ndarray, true_classes: dict[int, str]) -> dict[int, str]:
    """``{predicted label: class}``: the class of the true object that covers most of each predicted object, for
    classes that are a state of the object (a mitosis phase), not a count: a cell the segmenter cut keeps its
    phase in each part. Predicted objects on the background (no true object under them) are left out."""
    _, _, overlap = _overlap(pred, true)
    best = overlap.argmax(1)
    return {p: true_classes[int(best[p])] for p in range(1, overlap.shape[0]) if overlap[p, best[p]] > 0 and int(best[p]) in true_classes}


def touching_pairs(labels: np.ndarray, keep=None) -> set[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a < b``, of labels that touch (8-connected); only labels in ``keep`` when given."""
    lab = np.asarray(labels)
    pairs: set[tuple[int, int]] = set()
    H, W = lab.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = lab[: H - dy, max(0, -dx) : W - max(0, dx)]
        b = lab[dy:, max(0, dx) : W - max(0, -dx)]
        hit = (a != b) & (a > 0) & (b > 0)
        for u, v in zip(a[hit].tolist(), b[hit].tolist()):
            pairs.add((min(u, v), max(u, v)))
    if keep is not None:
        pairs = {(u, v) for u, v in pairs if u in keep and v in keep}
    return pairs


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
