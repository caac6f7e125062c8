"""A compact, honest training loop for the instance-segmentation U-Nets.

* Inputs are normalised exactly as at inference (per-image percentiles), so a trained model sees
  the same numbers in napari as in training.
* Augmentation: random crops, flips, 90-degree rotations, gamma, gain and additive noise.
* Loss: BCE + soft Dice on foreground, BCE on the normalised distance map.
* Validation after every epoch: loss and instance F1 at IoU 0.5 (the same postprocessing as
  inference); the best epoch's weights are kept; training stops early when F1 has not improved
  for ``patience`` epochs. ``progress`` gets one dict per epoch; ``cancel`` stops between batches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import CancelToken
from ..inference.instances import InstanceParams, local_instances
from ..inference.runnable import percentile_normalizer
from ..measure.matching import match_instances
from .targets import instance_targets


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_segmentation`."""

    epochs: int = 20
    batch: int = 8
    crop: int = 192
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 0
    norm_low: float = 1.0
    norm_high: float = 99.8
    threads: int | None = None


@dataclass
class History:
    """Per-epoch figures and the best epoch."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_f1: float = -1.0


def _normalise(img: np.ndarray, low: float, high: float) -> np.ndarray:
    x = img[None] if img.ndim == 2 else img
    return percentile_normalizer(x.reshape(x.shape[0], -1), low, high)(x)


def _augment(x: np.ndarray, t: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = x.shape[-2:]
    cy, cx = min(crop, h), min(crop, w)
    y0, x0 = rng.integers(0, h - cy + 1), rng.integers(0, w - cx + 1)
    x, t = x[:, y0 : y0 + cy, x0 : x0 + cx], t[:, y0 : y0 + cy, x0 : x0 + cx]
    k = int(rng.integers(0, 4))
    x, t = np.rot90(x, k, (1, 2)), np.rot90(t, k, (1, 2))
    if rng.random() < 0.5:
        x, t = x[:, :, ::-1], t[:, :, ::-1]
    x = np.clip(x, 0, None) ** rng.uniform(0.7, 1.4) * rng.uniform(0.8, 1.2)
    x = x + rng.normal(0, rng.uniform(0, 0.03), x.shape)
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(t, np.float32)


def _loss(logits, target):
    import torch.nn.functional as F

    fg_l, d_l = logits[:, 0], logits[:, 1]
    fg_t, d_t = target[:, 0], target[:, 1]
    bce = F.binary_cross_entropy_with_logits(fg_l, fg_t)
    p = fg_l.sigmoid()
    dice = 1 - (2 * (p * fg_t).sum() + 1) / (p.sum() + fg_t.sum() + 1)
    dist = F.binary_cross_entropy_with_logits(d_l, d_t)
    return bce + dice + 2 * dist


def evaluate_model(model, images: list[np.ndarray], masks: list[np.ndarray], params: InstanceParams, low: float, high: float, device="cpu") -> dict:
    """Mean F1 / precision / recall at IoU 0.5 of ``model`` on whole images (pads to a multiple of 32)."""
    import torch

    f1s, ps, rs = [], [], []
    model.eval()
    with torch.inference_mode():
        for img, gt in zip(images, masks):
            x = _normalise(img, low, high)
            h, w = x.shape[-2:]
            ph, pw = (-h) % 32, (-w) % 32
            xp = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
            y = model(torch.from_numpy(xp)[None].to(device)).sigmoid()[0, :, :h, :w]
            y8 = (y * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
            pred, _ = local_instances(y8[0], y8[1], params)
            m = match_instances(pred, gt)
            f1s.append(m.f1), ps.append(m.precision), rs.append(m.recall)
    return {"f1": float(np.mean(f1s)), "precision": float(np.mean(ps)), "recall": float(np.mean(rs))}


def train_segmentation(
    model,
    train: tuple[list[np.ndarray], list[np.ndarray]],
    val: tuple[list[np.ndarray], list[np.ndarray]],
    config: TrainConfig = TrainConfig(),
    *,
    params: InstanceParams = InstanceParams(),
    progress: Callable[[dict], None] | None = None,
    cancel: CancelToken | None = None,
    device: str = "cpu",
) -> History:
    """Train ``model`` (2 outputs: foreground, distance) in place; on return it holds the best epoch's weights."""
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    xs = [_normalise(i, config.norm_low, config.norm_high) for i in train[0]]
    ts = [instance_targets(m) for m in train[1]]
    model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(xs) / config.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15)
    hist, best_state, stale = History(), None, 0
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(len(xs))
        losses = []
        for s in range(steps_per_epoch):
            if cancel is not None:
                cancel.raise_if_cancelled()
            idx = order[s * config.batch : (s + 1) * config.batch]
            pairs = [_augment(xs[i], ts[i], config.crop, rng) for i in idx]
            xb = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device).contiguous(memory_format=torch.channels_last)
            tb = torch.from_numpy(np.stack([p[1] for p in pairs])).to(device)
            loss = _loss(model(xb), tb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        metrics = evaluate_model(model, val[0], val[1], params, config.norm_low, config.norm_high, device)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **{f"val_{k}": v for k, v in metrics.items()}, "seconds": time.perf_counter() - t0}
        hist.epochs.append(row)
        if metrics["f1"] > hist.best_f1:
            hist.best_f1, hist.best_epoch, stale = metrics["f1"], epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if progress is not None:
            progress(row)
        if stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return hist
