"""Semantic segmentation training: a class per pixel (e.g. background / tissue / fibrosis).

:class:`SemanticTask` is the segmentation task with class maps for targets: the same patches
(re-drawn until ``min_foreground`` of their pixels are not of the first class), the same
augmentation (class maps warped with order 0), a loss of cross-entropy + soft Dice over the
classes, and validation on whole images through the softmax and argmax that inference uses:

* ``accuracy`` (pixels), ``iou_<class>`` and ``miou`` (their mean over the classes present in
  the truth or the prediction) — selected by ``miou``;
* ``fraction_error``: the mean absolute error of each tissue class's area fraction per image
  (what the fibrosis measure reports), and ``fraction_error_<class>``.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .data import Sample
from .tasks import SegmentationTask


class SemanticTask(SegmentationTask):
    """A class per pixel on image / class-map pairs."""

    kind = "semantic"
    primary = "miou"
    target_order = 0

    def __init__(self, train: list[Sample], val: list[Sample], classes: list[str], background: list[str], **kw):
        K = len(classes)
        for s in train + val:
            top = int(s.mask.max()) if s.mask.size else 0
            if top >= K:
                raise InputError(
                    f"The class map of '{s.name}' holds the value {top}, but there are {K} classes ({', '.join(classes)}: values 0..{K - 1})",
                    "Give one class name per mask value with --classes, or fix the masks",
                )
        self.classes, self.background = list(classes), list(background)
        kw.pop("contact_weight", None)
        super().__init__(train, val, **kw)

    @staticmethod
    def _targets(mask, contact_weight: float = 0.0) -> np.ndarray:
        return mask[None].astype(np.float32)

    def loss(self, logits, target):
        import torch.nn.functional as F

        logits = logits.float()
        t = target[:, 0].round().long()
        ce = F.cross_entropy(logits, t)
        p = logits.softmax(1)
        onehot = F.one_hot(t, logits.shape[1]).permute(0, 3, 1, 2).float()
        inter = (p * onehot).sum((0, 2, 3))
        dice = 1 - ((2 * inter + 1) / (p.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)).mean()
        return ce + dice

    def validate(self, net, device, autocast) -> dict:
        import torch

        K = len(self.classes)
        tissue = [k for k, c in enumerate(self.classes) if c not in self.background]
        cm = np.zeros((K, K), np.int64)
        losses, errors = [], []
        net.eval()
        with torch.inference_mode(), autocast():
            for x, gt, t in self.val:
                h, w = x.shape[1:]
                ph, pw = (-h) % self.step, (-w) % self.step
                xp = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
                logits = net(torch.from_numpy(xp)[None].to(device))[:, :, :h, :w].float()
                losses.append(float(self.loss(logits, torch.from_numpy(t)[None].to(device))))
                pred = logits[0].argmax(0).cpu().numpy()
                cm += np.bincount(gt.ravel().astype(np.int64) * K + pred.ravel(), minlength=K * K).reshape(K, K)
                errors.append([abs(_fraction(pred, k, tissue) - _fraction(gt, k, tissue)) for k in tissue])
        return {"loss": float(np.mean(losses)), **semantic_metrics(cm, self.classes, np.asarray(errors), [self.classes[k] for k in tissue])}


def _fraction(class_map: np.ndarray, k: int, tissue: list[int]) -> float:
    n = int(np.isin(class_map, tissue).sum())
    return float((class_map == k).sum()) / n if n else 0.0


def semantic_metrics(cm: np.ndarray, classes: list[str], fraction_errors: np.ndarray, tissue_classes: list[str]) -> dict:
    """Pixel accuracy, per-class IoU and their mean over classes present, and fraction errors, from a
    confusion matrix (rows: true class, columns: predicted) and per-image absolute fraction errors."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.divide(tp, union, out=np.zeros(len(classes)), where=union > 0)
    out = {"accuracy": float(tp.sum() / max(1, cm.sum())), "miou": float(iou[union > 0].mean()) if (union > 0).any() else 1.0}
    out.update({f"iou_{c}": float(v) for c, v in zip(classes, iou)})
    if fraction_errors.size:
        out["fraction_error"] = float(fraction_errors.mean())
        out.update({f"fraction_error_{c}": float(v) for c, v in zip(tissue_classes, fraction_errors.mean(0))})
    return out
