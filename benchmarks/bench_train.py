"""Training throughput: our loop against a bare torch loop with the same model, batch, patch and optimiser.

    python benchmarks/bench_train.py [--task segmentation|classification] [--arch A] [--batch B] [--patch P] [--steps N] [--device D]

Ours: ``training.loop.fit`` through ``training.run.train`` (patch sampling, augmentation and
batching on the producer thread, AdamW + warm-up/cosine schedule, channels_last, AMP on CUDA,
loss read back every step on the CPU, every 10 on CUDA), timed over the training steps of every
epoch after the first (each epoch's start, when the producer makes its first batch, included;
validation excluded). Bare: the same network, loss, AdamW and scheduler on batches that are
already tensors in memory (crops cut beforehand, no augmentation), channels_last too, after
the same warm-up. Data: 64 synthetic nuclei images of 256 x 256 (segmentation) or the crops of
synthetic rods / nuclei / debris (classification).

``--repeats`` pairs (ours, then bare) are run in turn; the machine's speed drifts by 10-30 % within
minutes, so the median of the pair ratios is the figure.

Last line: one JSON object: ours_samples_per_s, bare_samples_per_s (one pair), efficiency (median of the pair ratios ours / bare),
wait_share (share of our loop's time spent waiting for a batch), and the settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _bare(task, net, device, steps: int, warmup: int, lr: float) -> float:
    import torch

    from napari_impc_dl.training.loop import amp_setup, lr_lambda

    batches = [b for _, b in zip(range(steps + warmup), _forever(task))]
    tensors = [(torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last), torch.from_numpy(y).to(device)) for x, y in batches]
    net.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps + warmup, "cosine"))
    autocast, _ = amp_setup(device, True)
    t0 = 0.0
    for i, (x, y) in enumerate(tensors):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with autocast():
            loss = task.loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    float(loss)
    return steps * len(tensors[0][0]) / (time.perf_counter() - t0)


def _forever(task):
    e = 0
    while True:
        yield from task.batches(e, 0)
        e += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["segmentation", "classification"], default="segmentation")
    ap.add_argument("--arch", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=256, help="segmentation patch / classifier input side (classification default 64)")
    ap.add_argument("--steps", type=int, default=24, help="timed steps of each loop (ours: whole epochs covering at least this many)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3, help="ours / bare pairs, run in turn (the machine's speed drifts): the median ratio is reported")
    a = ap.parse_args()

    import torch

    from napari_impc_dl import api
    from napari_impc_dl.inference.engine import describe_device, resolve_device
    from napari_impc_dl.training import run as run_mod

    device = resolve_device(a.device)
    work = Path(tempfile.mkdtemp(prefix="impc-bench-train-"))
    captured = {}
    real_fit = run_mod.fit

    def spy(task, net, **kw):  # keep the task and a fresh copy of the network for the bare loop
        import copy

        captured["task"], captured["net"] = task, copy.deepcopy(net)
        return real_fit(task, net, **kw)

    run_mod.fit = spy
    if a.task == "segmentation":
        api.synth("nuclei", 64, work / "data", size=256, seed=5)
        arch = a.arch or "mobilenetv3-minimal"
        kw = dict(images=work / "data/images", masks=work / "data/masks", arch=arch, patch=a.patch)
        train = api.train_segmentation
    else:
        api.synth("shapes", 40, work / "data", size=256, seed=5)
        arch = a.arch or "resnet18"
        size = a.patch if a.patch != 256 else 64
        kw = dict(data=work / "data/classes.csv", images=work / "data/images", labels=work / "data/labels", level="object", arch=arch, size=size)
        train = api.train_classification
    # epochs: one warm-up epoch plus enough to cover --steps; the throughput counts every epoch's steps
    probe = train(work / "probe", epochs=1, batch=a.batch, device=str(device), patience=0, **kw)
    spe = captured["task"].steps_per_epoch
    epochs = 1 + max(1, -(-a.steps // spe))
    pairs = []
    for k in range(a.repeats):
        t0 = time.perf_counter()
        r = train(work / f"ours{k}", epochs=epochs, batch=a.batch, device=str(device), patience=0, **kw)
        total = time.perf_counter() - t0
        # like the bare loop's warm-up steps, the first epoch is not counted: steps / training seconds of the others
        later = r.history[1:]
        ours = sum(h["steps"] for h in later) * a.batch / sum(h["train_seconds"] for h in later)
        bare = _bare(captured["task"], captured["net"], device, steps=max(a.steps, spe), warmup=3, lr=3e-4)
        pairs.append((ours, bare, r.wait_share, total))
        print(json.dumps({"repeat": k, "ours": round(ours, 2), "bare": round(bare, 2), "ratio": round(ours / bare, 3)}), file=sys.stderr, flush=True)
    del probe
    ratios = sorted(o / b for o, b, _, _ in pairs)
    ours, bare, wait, total = pairs[len(pairs) // 2]
    out = {
        "task": a.task, "arch": arch, "batch": a.batch, "patch": kw.get("patch", kw.get("size")), "device": describe_device(device),
        "threads": torch.get_num_threads(), "steps_ours": epochs * spe, "ours_samples_per_s": round(ours, 2), "bare_samples_per_s": round(bare, 2),
        "efficiency": round(float(np.median(ratios)), 3), "efficiency_runs": [round(x, 3) for x in ratios], "wait_share": round(wait, 4), "ours_wall_s": round(total, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
