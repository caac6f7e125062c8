"""The StarDist half of ``benchmarks/compare_stardist.py``; runs inside StarDist's own virtual environment.

    python _stardist_side.py versions --out versions.json
    python _stardist_side.py train    --data train.npz --model DIR --minutes M --out train.json [--steps 100]
    python _stardist_side.py predict  --data sets.npz  --model DIR --labels labels.npz --out predict.json
    python _stardist_side.py big      --image big.tif  --model DIR --labels big_labels.tif --out big.json

Our package is not installed here: data come in as ``.npz`` / ``.tif`` files and figures go out as
one JSON file per command (StarDist / Keras print progress bars on stdout; the caller keeps them in
a log). Only numpy, tifffile, csbdeep, stardist and TensorFlow are used.

``train``: ``StarDist2D`` (n_rays 32, grid (2, 2), patch 256 x 256, batch 4, 100 steps per epoch,
no TensorBoard), images normalised with ``csbdeep.utils.normalize(x, 1, 99.8)``, the augmenter of
StarDist's example notebook (flips / rot90, intensity change, a little noise), validation on the
images the caller marks as such (its 10 % split), as many epochs as fit in ``--minutes``: a Keras
callback stops training after the batch that crosses the budget (that epoch's validation and
checkpoint still run; the best weights by validation loss are reloaded, as StarDist always does).
Then ``optimize_thresholds`` on the validation images, timed separately (not in the budget).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _write(path: str, obj: dict) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _versions() -> dict:
    import csbdeep
    import keras
    import stardist
    import tensorflow as tf

    return {"stardist": stardist.__version__, "csbdeep": csbdeep.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}


def _norm(x: np.ndarray) -> np.ndarray:
    from csbdeep.utils import normalize

    return normalize(x.astype(np.float32), 1, 99.8, axis=(0, 1))


def _augmenter(x, y):
    """StarDist's example-notebook augmenter: random flips / rot90, intensity change, a little noise."""
    perm = tuple(np.random.permutation(2))
    x, y = x.transpose(perm), y.transpose(perm)
    for ax in (0, 1):
        if np.random.rand() > 0.5:
            x, y = np.flip(x, axis=ax), np.flip(y, axis=ax)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    x = x + 0.02 * np.random.uniform(0, 1) * np.random.normal(0, 1, x.shape)
    return x, y


def cmd_train(a) -> dict:
    import keras
    from stardist import fill_label_holes
    from stardist.models import Config2D, StarDist2D

    d = np.load(a.data)
    X, Y, val = d["images"], d["labels"], d["val"].astype(bool)
    Xn = [_norm(x) for x in X]
    Yf = [fill_label_holes(y) for y in Y]
    Xt = [x for x, v in zip(Xn, val) if not v]
    Yt = [y for y, v in zip(Yf, val) if not v]
    Xv = [x for x, v in zip(Xn, val) if v]
    Yv = [y for y, v in zip(Yf, val) if v]
    budget_s = a.minutes * 60.0
    conf = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, train_patch_size=(256, 256), train_batch_size=4,
                    train_steps_per_epoch=a.steps, train_epochs=100_000, train_tensorboard=False, use_gpu=False)
    model_dir = Path(a.model)
    model = StarDist2D(conf, name=model_dir.name, basedir=str(model_dir.parent))

    class Budget(keras.callbacks.Callback):
        """Stop after the batch that crosses the wall-clock budget (counted from the start of fit)."""

        def on_train_begin(self, logs=None):
            self.t0, self.steps, self.epochs, self.stopped_at = time.perf_counter(), 0, 0, None

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.perf_counter() - self.t0 > budget_s:
                self.model.stop_training = True
                self.stopped_at = self.stopped_at or time.perf_counter() - self.t0

        def on_epoch_end(self, epoch, logs=None):
            self.epochs += 1
            self.last = {k: float(v) for k, v in (logs or {}).items()}

    budget = Budget()
    model.prepare_for_training()
    model.callbacks.append(budget)
    t0 = time.perf_counter()
    hist = model.train(Xt, Yt, validation_data=(Xv, Yv), augmenter=_augmenter, seed=0)
    t1 = time.perf_counter()
    train_s, fit_s = t1 - t0, t1 - budget.t0
    thr = model.optimize_thresholds(Xv, Yv)
    thr_s = time.perf_counter() - t1
    val_loss = [float(v) for v in hist.history.get("val_loss", [])]
    return {
        "train_s": train_s, "fit_s": fit_s, "budget_s": budget_s,
        "budget_crossed_at_s": budget.stopped_at, "epochs": budget.epochs, "steps": budget.steps,
        "steps_per_epoch": a.steps, "batch": 4, "samples": budget.steps * 4,
        "train_images": len(Xt), "val_images": len(Xv), "val_loss": val_loss,
        "best_val_loss": min(val_loss) if val_loss else None, "thresholds": {k: float(v) for k, v in thr.items()},
        "optimize_thresholds_s": thr_s, "versions": _versions(),
    }


def _load(model_dir: str):
    from stardist.models import StarDist2D

    p = Path(model_dir)
    return StarDist2D(None, name=p.name, basedir=str(p.parent))


def cmd_predict(a) -> dict:
    model = _load(a.model)
    d = np.load(a.data)
    out, times = {}, {}
    for key in sorted(d.files):
        x = d[key]
        t0 = time.perf_counter()
        lab, _ = model.predict_instances(_norm(x), show_tile_progress=False)
        times[key] = time.perf_counter() - t0
        out[key] = lab.astype(np.int32)
    np.savez_compressed(a.labels, **out)
    return {"seconds": times, "thresholds": {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)}}


def cmd_big(a) -> dict:
    import tifffile

    t_load = time.perf_counter()
    model = _load(a.model)
    img = tifffile.imread(a.image)
    load_s = time.perf_counter() - t_load
    n_tiles = model._guess_n_tiles(img)
    t0 = time.perf_counter()
    x = _norm(img)
    t1 = time.perf_counter()
    lab, _ = model.predict_instances(x, n_tiles=n_tiles, show_tile_progress=False)
    t2 = time.perf_counter()
    tifffile.imwrite(a.labels, lab.astype(np.int32), compression="zlib")
    return {"shape": list(img.shape), "n_tiles": list(n_tiles), "normalize_s": t1 - t0, "predict_instances_s": t2 - t1,
            "in_process_s": t2 - t0, "load_s": load_s, "write_s": time.perf_counter() - t2, "n_objects": int(lab.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("versions")
    p.add_argument("--out", required=True)
    p = sub.add_parser("train")
    for k in ("--data", "--model", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--steps", type=int, default=100)
    p = sub.add_parser("predict")
    for k in ("--data", "--model", "--labels", "--out"):
        p.add_argument(k, required=True)
    p = sub.add_parser("big")
    for k in ("--image", "--model", "--labels", "--out"):
        p.add_argument(k, required=True)
    a = ap.parse_args()
    res = _versions() if a.cmd == "versions" else {"train": cmd_train, "predict": cmd_predict, "big": cmd_big}[a.cmd](a)
    _write(a.out, res)


if __name__ == "__main__":
    main()
