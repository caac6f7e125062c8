"""The one training loop, for both tasks (segmentation and classification).

A task (:mod:`~napari_impc_dl.training.tasks`) supplies batches, the loss and the validation
figures; this loop owns everything else:

* devices: CPU, CUDA (bf16 autocast where supported, else fp16 with loss scaling; ``channels_last``;
  pinned, asynchronous copies; the loss is read back every ``sync_every`` steps, not every step)
  and MPS;
* a producer thread that makes the next batches (sampling, augmentation) while the model trains,
  and the time the loop waits for it (``wait_share``);
* AdamW with parameter groups (the encoder at ``encoder_lr_factor`` when starting from weights;
  frozen and in eval mode for ``head-only``), linear warm-up then cosine decay per step;
* validation after every epoch, the best epoch's weights in ``model.safetensors``, the latest in
  ``last.safetensors`` with the optimiser, schedule and history in ``train_state.pt`` (``--resume``);
* early stop on the task's metric, a wall-clock limit, and a cancel token checked every step (a
  cancel mid-epoch still leaves a loadable ``last.safetensors`` and a history of whole epochs).

``progress`` receives one dict per step (``kind: "step"``: epoch, step, loss, samples/s, ETA) and
one per epoch (``kind: "epoch"``: the history row).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import CancelToken, InputError
from ..inference.batches import Prefetch

STATE_FILE = "train_state.pt"


@dataclass
class FitResult:
    """What :func:`fit` did."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best: dict = field(default_factory=dict)
    stopped: str = "completed"
    """``completed``, ``early-stop``, ``time-limit`` or ``cancelled``."""
    samples_per_s: float = 0.0
    wait_share: float = 0.0
    """Share of the training time spent waiting for the next batch."""
    steps: int = 0


def _pair(pin: bool):
    def convert(item):
        import torch

        x, y = (torch.from_numpy(a) for a in item)
        return (x.pin_memory(), y.pin_memory()) if pin else (x, y)

    return convert


def amp_setup(device, enabled: bool):
    """``(autocast factory, GradScaler or None)`` for ``device``: bf16 on CUDA where supported, else fp16 + scaler."""
    import torch

    if device.type != "cuda" or not enabled:
        return nullcontext, None
    from ..devices import native_bf16

    if native_bf16():  # bf16 only where the hardware has it; emulated bf16 is slower than fp16
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def lr_lambda(total_steps: int, schedule: str):
    """Multiplier of the peak learning rate at a step: linear warm-up (3 %), then cosine to 2 %, or constant."""
    warm = max(1, int(0.03 * total_steps))

    def f(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _atomic_torch_save(obj, path: Path) -> None:
    import torch

    fd, tmp = tempfile.mkstemp(prefix="tmp-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _better(m: dict, best: dict, key: str) -> bool:
    if not best:
        return True
    if m[key] > best[key] + 1e-9:
        return True
    return abs(m[key] - best[key]) <= 1e-9 and m["loss"] < best["loss"]


def fit(
    task,
    net,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    schedule: str,
    patience: int,
    seed: int,
    device,
    amp: bool,
    out: Path,
    save: Callable[[object, Path, dict], None],
    encoder_ids: set[int] = frozenset(),
    encoder_lr_factor: float = 1.0,
    frozen: list = (),
    time_limit_s: float | None = None,
    state: dict | None = None,
    on_epoch: Callable[[list[dict]], None] | None = None,
    progress: Callable[[dict], None] | None = None,
    cancel: CancelToken | None = None,
    sync_every: int | None = None,
) -> FitResult:
    """Train ``net`` on ``task``; checkpoints go to ``out`` through ``save(net, path, metrics)``.

    ``state`` is a loaded ``train_state.pt`` to resume from (``net`` already holds ``last.safetensors``).
    On return ``net`` holds the *last* weights; the best are in ``out/model.safetensors``.
    """
    import torch

    torch.manual_seed(seed)
    cuda = device.type == "cuda"
    net.to(device).to(memory_format=torch.channels_last)
    autocast, scaler = amp_setup(device, amp)
    trainable = [p for p in net.parameters() if p.requires_grad]
    enc = [p for p in trainable if id(p) in encoder_ids]
    rest = [p for p in trainable if id(p) not in encoder_ids]
    groups = [g for g in ({"params": rest, "lr": lr}, {"params": enc, "lr": lr * encoder_lr_factor}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    spe = task.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(epochs * spe, schedule))
    res = FitResult()
    start_epoch, stale = 0, 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, stale = int(state["epoch"]), int(state["stale"])
        res.history, res.best, res.best_epoch = list(state["history"]), dict(state["best"]), int(state["best_epoch"])
    sync_every = sync_every or (10 if cuda else 1)
    t_start = time.perf_counter()
    train_s = wait_s = 0.0
    samples = 0

    def save_state(epoch_done: int) -> None:
        save(net, out / "last.safetensors", res.history[-1] if res.history else {})
        _atomic_torch_save(
            {
                "epoch": epoch_done, "stale": stale, "history": res.history, "best": res.best, "best_epoch": res.best_epoch,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {},
            },
            out / STATE_FILE,
        )

    def set_train() -> None:
        net.train()
        for m in frozen:  # head-only: BatchNorm statistics of the encoder stay as they are
            m.eval()

    for epoch in range(start_epoch, epochs):
        set_train()
        t0 = time.perf_counter()
        # batches are made on a thread at nice 10: at normal priority it took a core from torch's threads
        # while it ran (bench_train: 0.88-0.91 of a bare loop; at nice 10 about 1.0)
        feed = Prefetch(task.batches(epoch, seed), _pair(cuda), name="impc-train-batches", nice=10)
        feed.start()
        pending: list = []
        loss_sum, loss_n, step = 0.0, 0, 0
        stop = None
        try:
            while True:
                if cancel is not None and cancel.cancelled:
                    stop = "cancelled"
                    break
                tw = time.perf_counter()
                item = feed.q.get()
                wait_s += time.perf_counter() - tw
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                xb, yb = item
                xb = xb.to(device, non_blocking=cuda).contiguous(memory_format=torch.channels_last)
                yb = yb.to(device, non_blocking=cuda)
                with autocast():
                    loss = task.loss(net(xb), yb)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                step += 1
                res.steps += 1
                samples += len(xb)
                pending.append(loss.detach())
                if len(pending) >= sync_every or step == spe:
                    vals = torch.stack(pending).float().cpu().numpy()  # one host sync for several steps
                    pending.clear()
                    if not np.all(np.isfinite(vals)):
                        raise InputError(
                            f"Training diverged at epoch {epoch + 1}, step {step}: the loss is not a number",
                            "Lower the learning rate (--lr), or check the images for NaN / extreme values",
                        )
                    loss_sum += float(vals.sum())
                    loss_n += len(vals)
                    elapsed = time.perf_counter() - t0
                    rate = samples / max(1e-9, time.perf_counter() - t_start)
                    left = (epochs - epoch) * spe - step
                    if progress is not None:
                        progress({"kind": "step", "epoch": epoch + 1, "epochs": epochs, "step": step, "steps": spe,
                                  "loss": loss_sum / loss_n, "samples_per_s": rate, "eta_s": left * elapsed / step})
                if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
                    if res.steps == 1 and not res.history:
                        raise _TooShort(time.perf_counter() - t_start)
                    stop = "time-limit"
                    break
        finally:
            feed.close()
        epoch_train_s = time.perf_counter() - t0
        train_s += epoch_train_s
        if stop == "cancelled":
            save_state(epoch)  # weights of mid-epoch, history of whole epochs
            res.stopped = stop
            break
        if pending:
            loss_sum += float(torch.stack(pending).float().sum())
            loss_n += len(pending)
        metrics = task.validate(net, device, autocast)
        row = {"epoch": epoch + 1, "steps": step, "train_loss": loss_sum / max(1, loss_n)}
        row.update({f"val_{k}": v for k, v in metrics.items() if k != "confusion"})
        row.update({"lr": opt.param_groups[0]["lr"], "train_seconds": epoch_train_s, "seconds": time.perf_counter() - t0})
        res.history.append(row)
        if _better(metrics, res.best, task.primary):
            res.best, res.best_epoch, stale = {k: v for k, v in metrics.items()}, epoch + 1, 0
            save(net, out / "model.safetensors", row)
        else:
            stale += 1
        if stop is None and patience and stale >= patience:
            stop = "early-stop"
        save_state(epoch + 1)
        if on_epoch is not None:
            on_epoch(res.history)
        if progress is not None:
            progress({"kind": "epoch", **row, "epochs": epochs, "best_epoch": res.best_epoch,
                      "eta_s": (epochs - epoch - 1) * (time.perf_counter() - t0)})
        if stop is not None:
            res.stopped = stop
            break
        set_train()
    total = time.perf_counter() - t_start
    res.samples_per_s = samples / max(1e-9, train_s)
    res.wait_share = wait_s / max(1e-9, total)
    return res


class _TooShort(Exception):
    """Internal: the time limit ran out within the very first step."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds
