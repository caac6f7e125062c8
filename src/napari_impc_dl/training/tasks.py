"""The two training tasks. A task supplies batches, the loss and the validation figures; the loop
(:mod:`napari_impc_dl.training.loop`) owns devices, AMP, the schedule, checkpoints, early stop,
resume and cancel.

* :class:`SegmentationTask`: random patches (at least ``min_foreground`` foreground) of
  percentile-normalised images; targets are foreground and the normalised distance map of
  :mod:`~napari_impc_dl.training.targets`; loss BCE + soft Dice (foreground) + 2 x BCE (distance);
  validation on whole images through the same postprocessing as inference: F1 / precision /
  recall at IoU 0.5 and foreground IoU. Selected by F1.
* :class:`ClassificationTask`: crops (object level, by :mod:`~napari_impc_dl.classify.crops`, the
  code inference uses) or prepared squares (image level, :mod:`~napari_impc_dl.classify.resize`);
  cross-entropy, class-weighted or class-balanced sampling; validation accuracy, balanced
  accuracy, per-class precision / recall / F1 and the confusion matrix. Selected by balanced accuracy.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from ..inference.runnable import percentile_normalizer
from . import augment
from .data import Sample
from .targets import contact_weights, instance_targets


def normalise(img: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Per-image, per-channel percentile normalisation: what inference does to the whole image."""
    return percentile_normalizer(img.reshape(img.shape[0], -1), low, high)(img)


def _batches_of(n_items: int, batch: int) -> int:
    return max(1, math.ceil(n_items / batch))


class SegmentationTask:
    """Instance segmentation (foreground + distance) on image / mask pairs."""

    kind = "segmentation"
    primary = "f1"
    target_order = 1
    """Interpolation order of the targets under affine / elastic warps (0 keeps class indices whole)."""

    def __init__(self, train: list[Sample], val: list[Sample], *, patch: int, batch: int, min_foreground: float, augment_kinds, step: int, params, low=1.0, high=99.8, contact_weight: float = 0.0):
        self.patch, self.batch, self.min_fg, self.step, self.params = patch, batch, min_foreground, step, params
        self.kinds = tuple(augment_kinds)
        self.xs = [normalise(s.image, low, high) for s in train]
        self.ts = [self._targets(s.mask, contact_weight) for s in train]
        self.val = [(normalise(s.image, low, high), s.mask, self._targets(s.mask, contact_weight)) for s in val]
        self.area = np.array([x.shape[1] * x.shape[2] for x in self.xs], np.float64)
        self.n_channels = self.xs[0].shape[0]
        # an epoch covers every training image's area about once
        self.steps_per_epoch = _batches_of(int(sum(math.ceil(a / patch**2) for a in self.area)), batch)

    @staticmethod
    def _targets(mask, contact_weight: float) -> np.ndarray:
        """foreground, distance and (with a contact weight) the loss weight of each pixel, stacked."""
        t = instance_targets(mask)
        return np.concatenate([t, contact_weights(mask, contact_weight)[None]]) if contact_weight > 0 else t

    def _patch(self, i: int, rng, side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A ``side`` x ``side`` window (default the patch side) of image ``i`` and its targets, re-drawn
        up to 10 times until ``min_foreground`` of it is foreground."""
        x, t = self.xs[i], self.ts[i]
        H, W = x.shape[1:]
        P = side or self.patch
        if H < P or W < P:
            py, px = max(0, P - H), max(0, P - W)
            x = np.pad(x, ((0, 0), (0, py), (0, px)), mode="reflect" if min(H, W) > max(py, px) else "edge")
            t = np.pad(t, ((0, 0), (0, py), (0, px)))
            H, W = x.shape[1:]
        best = None
        for _ in range(10 if self.min_fg > 0 else 1):
            y0, x0 = int(rng.integers(0, H - P + 1)), int(rng.integers(0, W - P + 1))
            tp = t[:, y0 : y0 + P, x0 : x0 + P]
            fg = float((tp[0] > 0).mean())  # foreground, or (semantic) pixels not of the first class
            if best is None or fg > best[0]:
                best = (fg, y0, x0)
            if fg >= self.min_fg:
                break
        _, y0, x0 = best
        return x[:, y0 : y0 + P, x0 : x0 + P], t[:, y0 : y0 + P, x0 : x0 + P]

    def batches(self, epoch: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, epoch, 0x5E6])
        p = self.area / self.area.sum()
        for _ in range(self.steps_per_epoch):
            xs, ts = [], []
            for i in rng.choice(len(self.xs), size=self.batch, p=p):
                side = augment.zoom_side(self.patch, self.kinds, rng)  # a larger or smaller window, resized to the patch
                x, t = self._patch(int(i), rng, side)
                resampled = side != self.patch
                if resampled:
                    x, t = augment.resize([x, t], self.patch, orders=[1, self.target_order])
                x, t = augment.geometric([x, t], self.kinds, rng, orders=[1, self.target_order])
                if self.target_order and (resampled or "affine" in self.kinds or "elastic" in self.kinds):
                    t[0] = t[0] > 0.5
                xs.append(augment.intensity(np.asarray(x, np.float32), self.kinds, rng))
                ts.append(t.astype(np.float32))
            yield np.stack(xs), np.stack(ts)

    @staticmethod
    def loss(logits, target):
        import torch.nn.functional as F

        logits = logits.float()
        fg_l, d_l = logits[:, 0], logits[:, 1]
        fg_t, d_t = target[:, 0], target[:, 1]
        w = target[:, 2] / target[:, 2].mean() if target.shape[1] > 2 else None  # contact weights, mean 1
        bce = F.binary_cross_entropy_with_logits(fg_l, fg_t, weight=w)
        p = fg_l.sigmoid()
        dice = 1 - (2 * (p * fg_t).sum() + 1) / (p.sum() + fg_t.sum() + 1)
        return bce + dice + 2 * F.binary_cross_entropy_with_logits(d_l, d_t, weight=w)

    def _val_maps(self, net, device, autocast) -> tuple[list[float], list[np.ndarray]]:
        """The validation loss per image and the model's uint8 probability maps ``(2, H, W)`` per image."""
        import torch

        losses, maps = [], []
        net.eval()
        with torch.inference_mode(), autocast():
            for x, gt, t in self.val:
                h, w = x.shape[1:]
                ph, pw = (-h) % self.step, (-w) % self.step
                xp = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
                logits = net(torch.from_numpy(xp)[None].to(device))[:, :, :h, :w].float()
                losses.append(float(self.loss(logits, torch.from_numpy(t)[None].to(device))))
                maps.append((logits.sigmoid()[0] * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy())
        return losses, maps

    def _score(self, maps: list[np.ndarray], params) -> dict:
        """F1 / precision / recall at IoU 0.5 (means over the validation images) and foreground IoU under ``params``."""
        from ..inference.instances import local_instances
        from ..measure.matching import match_instances

        f1s, ps, rs, inter, union = [], [], [], 0, 0
        for y8, (_, gt, _) in zip(maps, self.val):
            pred, _ = local_instances(y8[0], y8[1], params)
            m = match_instances(pred, gt)
            f1s.append(m.f1), ps.append(m.precision), rs.append(m.recall)
            inter += int(np.count_nonzero((pred > 0) & (gt > 0)))
            union += int(np.count_nonzero((pred > 0) | (gt > 0)))
        return {"f1": float(np.mean(f1s)), "precision": float(np.mean(ps)), "recall": float(np.mean(rs)), "iou": inter / union if union else 1.0}

    def validate(self, net, device, autocast) -> dict:
        losses, maps = self._val_maps(net, device, autocast)
        return {"loss": float(np.mean(losses)), **self._score(maps, self.params)}

    def tune_thresholds(self, net, device, autocast) -> tuple[object, dict]:
        """The foreground and seed thresholds with the best validation F1@0.5 (StarDist's ``optimize_thresholds``
        for our two heads): a grid of :data:`FOREGROUND_GRID` x :data:`SEED_GRID` over the validation images' maps
        (one forward pass each). The current thresholds stay unless another pair beats them by more than
        :data:`TUNE_MARGIN` (noise on a few images). Then the border merge is tried the other way round (off when
        on, :data:`CONVEX_MERGE` when off) at the chosen pair, under the same margin. Returns ``(params, metrics
        at them)``."""
        import dataclasses

        losses, maps = self._val_maps(net, device, autocast)
        p0 = self.params
        best_params, best = p0, self._score(maps, p0)
        grid = sorted(((fg, seed) for fg in FOREGROUND_GRID for seed in SEED_GRID),  # ties go to the pair nearest the current one
                      key=lambda fs: (abs(fs[0] - p0.foreground_threshold) + abs(fs[1] - p0.seed_threshold), fs))
        for fg, seed in grid:
            params = dataclasses.replace(p0, foreground_threshold=fg, seed_threshold=seed)
            if params == p0:
                continue
            m = self._score(maps, params)
            if m["f1"] > best["f1"] + TUNE_MARGIN:
                best_params, best = params, m
        merge = {"merge_threshold": None, "merge_min_solidity": None} if p0.merge_threshold is not None else CONVEX_MERGE
        params = dataclasses.replace(best_params, **merge)
        m = self._score(maps, params)
        if m["f1"] > best["f1"] + TUNE_MARGIN:
            best_params, best = params, m
        return best_params, {"loss": float(np.mean(losses)), **best}


#: the thresholds :meth:`SegmentationTask.tune_thresholds` tries
FOREGROUND_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)
SEED_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
TUNE_MARGIN = 0.002
#: the border merge of a new instance model (``InstanceParams``): neighbours whose shared border has a mean
#: distance above 0.25 are joined when the joined object fills >= 0.98 of its digital convex hull
#: (``inference.instances.solidity``). Chosen among 0.95-1 on the nuclei development sets of
#: ``benchmarks/compare_stardist.py`` (6 images per set, seeds never scored): it mends the nuclei the seeds cut in
#: two (larger nuclei than in training: F1 0.987 -> 0.995) and moves no other set by more than 0.002; without the
#: hull rule touching nuclei were joined too (small 0.965 -> 0.953, clustered 0.923 -> 0.896).
CONVEX_MERGE = {"merge_threshold": 0.25, "merge_min_solidity": 0.98}


class ClassificationTask:
    """Image- or object-level classification with a class head."""

    kind = "classification"
    primary = "balanced_accuracy"

    def __init__(self, train: list[Sample], val: list[Sample], classes: list[str], spec, *, batch: int, balance: str, label_smoothing: float, augment_kinds, low=1.0, high=99.8):
        self.classes, self.spec, self.batch = classes, spec, batch
        self.balance, self.smoothing = balance, label_smoothing
        self.kinds = tuple(augment_kinds)
        self.low, self.high = low, high
        self.x, self.y = self._prepare(train)
        self.vx, self.vy = self._prepare(val)
        self.n_channels = self.x.shape[1]
        self.n_image_channels = self.n_channels - (1 if spec.level == "object" and spec.crop.input == "image+mask" else 0)
        if spec.level == "object" and spec.crop.input == "mask":
            self.n_image_channels = 0
        counts = np.bincount(self.y, minlength=len(classes)).astype(np.float64)
        self.class_weights = (counts.sum() / (len(classes) * np.maximum(counts, 1))).astype(np.float32)
        self.counts = counts
        n = len(self.y)
        # a batch of one would break BatchNorm in training mode: then the last samples join the other batches
        self.steps_per_epoch = max(1, n // batch) if n % batch == 1 else _batches_of(n, batch)

    def _prepare(self, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
        index = {c: k for k, c in enumerate(self.classes)}
        xs, ys = [], []
        if self.spec.level == "image":
            from ..classify.resize import normalise_square, resize_square

            for s in samples:
                xs.append(normalise_square(resize_square(s.image.astype(np.float32), self.spec.input_size, self.spec.resize), self.low, self.high))
                ys.append(index[s.cls])
            return np.stack(xs), np.asarray(ys, np.int64)
        from ..classify.crops import ObjectBoxes, iter_crop_batches, object_boxes

        for s in samples:
            boxes = object_boxes(s.mask)
            keep = np.isin(boxes.labels, np.fromiter(s.objects, np.int64, len(s.objects)))
            boxes = ObjectBoxes(*(a[keep] for a in (boxes.labels, boxes.y0, boxes.y1, boxes.x0, boxes.x1)))
            norm = percentile_normalizer(s.image.reshape(s.image.shape[0], -1), self.low, self.high)
            read = lambda ys, xs, img=s.image: img[:, ys, xs]  # noqa: E731
            for ids, crops in iter_crop_batches(read, s.mask, s.image.shape[1:], self.spec.crop, self.spec.input_size, normalize=norm, boxes=boxes, batch=256):
                xs.append(crops)
                ys += [index[s.objects[int(i)]] for i in ids]
        return np.concatenate(xs), np.asarray(ys, np.int64)

    def batches(self, epoch: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([seed, epoch, 0xC1A])
        n = len(self.y)
        if self.balance == "sampling":
            p = (1.0 / self.counts)[self.y]
            order = rng.choice(n, size=n, p=p / p.sum())
        else:
            order = rng.permutation(n)
        for idx in np.array_split(order, self.steps_per_epoch):  # sizes differ by one at most
            xs = []
            for i in idx:
                (x,) = augment.geometric([self.x[i]], self.kinds, rng)
                xs.append(augment.intensity(x, self.kinds, rng, self.n_image_channels))
            yield np.stack(xs).astype(np.float32, copy=False), self.y[idx]

    def loss(self, logits, target):
        import torch
        import torch.nn.functional as F

        w = torch.from_numpy(self.class_weights).to(logits.device) if self.balance == "weights" else None
        return F.cross_entropy(logits.float(), target, weight=w, label_smoothing=self.smoothing)

    def predict(self, net, device, autocast, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities of ``x`` ``(N, C, S, S)``, in batches."""
        import torch

        net.eval()
        out = []
        with torch.inference_mode(), autocast():
            for i in range(0, len(x), 256):
                xb = torch.from_numpy(x[i : i + 256]).to(device).contiguous(memory_format=torch.channels_last)
                out.append(net(xb).float().softmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def validate(self, net, device, autocast) -> dict:
        import torch

        p = self.predict(net, device, autocast, self.vx)
        loss = float(torch.nn.functional.nll_loss(torch.from_numpy(np.log(np.clip(p, 1e-12, 1))), torch.from_numpy(self.vy)))
        return {"loss": loss, **classification_metrics(self.vy, p.argmax(1), self.classes)}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy (mean recall over classes present), per-class precision / recall / F1,
    and the confusion matrix (rows: true class, columns: predicted)."""
    K = len(classes)
    cm = np.bincount(y_true * K + y_pred, minlength=K * K).reshape(K, K)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    recall = np.divide(tp, support, out=np.zeros(K), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(K), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(K), where=(precision + recall) > 0)
    out = {
        "accuracy": float(tp.sum() / max(1, cm.sum())),
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "macro_f1": float(f1[support > 0].mean()) if (support > 0).any() else 0.0,
    }
    for k, c in enumerate(classes):
        out[f"precision_{c}"], out[f"recall_{c}"], out[f"f1_{c}"] = float(precision[k]), float(recall[k]), float(f1[k])
    out["confusion"] = cm.tolist()
    return out
