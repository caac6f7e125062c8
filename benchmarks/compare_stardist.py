"""Head-to-head: our nuclei segmentation against StarDist, same data, same wall-clock training budget (issue #19).

    python benchmarks/compare_stardist.py                      # full run: 10 min of training per side
    python benchmarks/compare_stardist.py --quick              # smoke run: 30 s per side, 2 images per set, 1024² timing
    python benchmarks/compare_stardist.py --minutes 5 --sets fresh crowded --workdir /tmp/cmp
    python benchmarks/compare_stardist.py --skip-train-ours --skip-stardist   # score the bundled starter only

Not part of CI (needs TensorFlow and StarDist, and about 25 minutes on a 2-core CPU).

What it measures
----------------
Three methods on the same held-out images:

* **ours-trained**: our trainer (``api.train_segmentation``, what the ``train`` verb runs) from scratch with the
  recipe of every bundled starter (``OUR_RECIPE``: U-Net, ``mobilenetv3-minimal`` encoder, patch 128, batch 8,
  AdamW peak 3e-3, cosine; the trainer's default 3e-4 suits fine-tuning, not a network started from random weights),
  stopped by its own wall-clock limit (``time_limit_min`` = ``--minutes``; per-epoch validation inside it).
  So that the cosine schedule ends at the budget rather than being cut mid-way, a 3-epoch calibration run
  (not counted in the budget, reported as ``calibration_s``) measures the seconds per epoch and sets
  ``epochs`` = 1.05 x budget / that (so the limit, not the count, ends it); ``patience`` 0 (no early stop:
  the whole budget is used). The trainer's default augmentations (flips, 90° turns, gamma / gain / offset, noise,
  blur, uneven illumination), its postprocessing defaults for a new model (the convex border merge,
  ``training.tasks.CONVEX_MERGE``) and, after the budget, its threshold search on the validation images
  (foreground and seed thresholds and the merge on / off by F1@0.5, stored in the card: the counterpart of
  StarDist's ``optimize_thresholds``, not counted in the budget either).
* **ours-starter**: the bundled ``nuclei`` preset (``api.load_model("nuclei")``), as shipped (trained on
  480 other synthetic images, seed 1000), no training here.
* **stardist**: ``StarDist2D`` (n_rays 32, grid (2, 2), patch 256², batch 4, 100 steps per epoch,
  StarDist's example augmenter, ``normalize(x, 1, 99.8)``) trained in StarDist's own virtual environment
  (``--stardist-venv``, created with ``pip install tensorflow-cpu==2.21.0 stardist==0.9.2`` if missing) by
  ``benchmarks/_stardist_side.py``, for as many epochs as fit in ``--minutes`` (a Keras callback stops after
  the step that crosses the budget; that epoch's validation and checkpoint follow, the best weights by
  validation loss are kept). Then ``optimize_thresholds`` (StarDist's defaults) on the validation images,
  timed separately and **not** counted in the budget (``optimize_thresholds_s``).

Both train on the same 64 synthetic 256² images (``synth nuclei`` seed 11, instance ground truth) with the same
validation images (our trainer's 10 % split, seed 0). The two trainings run one after the other.

Held-out sets (never trained on; ``--n-test`` images of ``--test-size``², each set from its own dataset seed):
``fresh`` (same generator, new seed), ``small`` / ``large`` (generator ``scale`` 0.6 / 1.6; training spans
0.8-1.25), ``crowded`` (generator ``density`` 0.55), ``dim`` (signal x0.3 above the background + Gaussian
noise 1.5 x the image's own), ``blur`` (Gaussian sigma 2.5, the noise put back), ``background`` (a
multiplicative illumination fall-off to 0.35 and an additive ramp + hot spot up to 0.8 x the signal range),
``clustered`` (the generator with 95 % of nuclei placed against another, faint seams, density 0.4: its
private style, there is no public knob), ``defocus`` (35 % of the nuclei out of focus: blurred sigma 3.5,
dimmed to 0.6, noise put back; they stay in the ground truth). Transforms are deterministic per image.

Scores per set and method (pooled over the set's images: TP, FP, FN summed): F1 at IoU 0.5, precision,
recall, mean IoU of matched pairs (``measure.matching``), predicted vs true counts, merges (predicted objects
holding more than half of each of >= 2 true objects) and splits (true objects holding more than half of each
of >= 2 predicted objects).

Inference time on one ``--big``² synthetic image (``write_large_nuclei_zarr`` seed 5, written as a TIFF for
both): ours = the whole ``napari-impc-dl segment`` CLI process (wall clock: start, model load, read, tiles,
postprocessing, labels + tables written), with the bundled preset and with the model trained here;
StarDist = ``predict_instances`` with ``n_tiles`` from StarDist's own guess (in-process time, normalisation
included) and the wall time of its whole process. The ratio is StarDist / ours.

``--reuse ours stardist`` scores the models an earlier run left in ``--workdir`` without training them again (to
score a retrained bundled starter against the same trained models); ``--reuse stardist`` trains ours again only.

Output: a table on stderr; the last line on stdout is one JSON object with every figure. Work files stay in
``--workdir`` (default ``/tmp/compare_stardist_work``; each run replaces the models there).
How long (2 CPU cores, measured): full run 25.4 min (calibration 0.7, 2 x 10 min training, thresholds 0.15,
scoring 0.8, the 4096² timings 2.5); ``--quick`` about 5 min. Not part of CI (TensorFlow + StarDist needed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_impc_dl import __version__  # noqa: E402

SIDE = Path(__file__).resolve().parent / "_stardist_side.py"
DEFAULT_VENV = Path.home() / ".cache" / "napari-impc-dl" / "stardist-venv"
STARDIST_PINS = ["tensorflow-cpu==2.21.0", "stardist==0.9.2"]
TRAIN_SEED = 11
SETS = ["fresh", "small", "large", "crowded", "dim", "blur", "background", "clustered", "defocus"]
SET_SEED = {name: 500 + k for k, name in enumerate(SETS)}
METHODS = ["ours-trained", "ours-starter", "stardist"]
#: our trainer's settings for a network trained from scratch (those of scripts/train_starter_model.py)
OUR_RECIPE = {"arch": "mobilenetv3-minimal", "patch": 128, "batch": 8, "lr": 3e-3}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------- StarDist's environment


def ensure_venv(venv: Path) -> dict:
    py = venv / "bin" / "python"
    t0 = time.perf_counter()
    created = False
    if not py.exists():
        log(f"creating StarDist's venv in {venv} ({' '.join(STARDIST_PINS)}; a few minutes)")
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *STARDIST_PINS], check=True)
        created = True
    return {"venv": str(venv), "created": created, "install_s": round(time.perf_counter() - t0, 1)}


def side(venv: Path, work: Path, cmd: str, *args: str, timeout: float) -> tuple[dict, float]:
    """Run one command of _stardist_side.py in StarDist's venv; (its JSON, process wall seconds)."""
    out = work / f"stardist_{cmd}.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    with open(work / f"stardist_{cmd}.log", "w") as logf:
        t0 = time.perf_counter()
        r = subprocess.run([str(venv / "bin" / "python"), str(SIDE), cmd, *args, "--out", str(out)], stdout=logf,
                           stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=str(work))
        wall = time.perf_counter() - t0
    if r.returncode != 0 or not out.exists():
        tail = (work / f"stardist_{cmd}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"StarDist '{cmd}' failed (exit {r.returncode}); log {work / f'stardist_{cmd}.log'}:\n{tail}")
    return json.loads(out.read_text()), wall


# ----------------------------------------------------------------------------- data


def _noise_sd(img: np.ndarray, labels: np.ndarray) -> float:
    """Pixel noise of an image, from horizontal differences over background well away from nuclei."""
    from scipy import ndimage as ndi

    bg = ~ndi.binary_dilation(labels > 0, iterations=4)
    both = bg[:, 1:] & bg[:, :-1]
    d = np.diff(img.astype(np.float64), axis=1)[both]
    return float(np.std(d) / np.sqrt(2)) if d.size > 100 else float(np.std(img) * 0.05)


def _transform(kind: str, img: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A domain shift applied to a camera image; the ground truth stays as it is."""
    from scipy import ndimage as ndi

    x = img.astype(np.float64)
    lo, hi = np.percentile(x, 1), np.percentile(x, 99.8)
    rngv, sd = max(hi - lo, 1.0), _noise_sd(img, labels)
    H, W = x.shape
    if kind == "dim":
        x = lo + (x - lo) * 0.3 + rng.normal(0, 1.5 * sd, x.shape)
    elif kind == "blur":
        x = ndi.gaussian_filter(x, 2.5) + rng.normal(0, sd, x.shape)
    elif kind == "background":
        yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
        ang = rng.uniform(0, 2 * np.pi)
        t = (np.cos(ang) * (yy - 0.5) + np.sin(ang) * (xx - 0.5)) / np.sqrt(0.5) + 0.5  # 0..1 across the image
        gain = 1.0 - 0.65 * np.clip(t, 0, 1)
        cy, cx = rng.uniform(0.2, 0.8, 2)
        spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.18**2))
        add = rngv * (0.5 * np.clip(1 - t, 0, 1) + 0.3 * spot)
        x = lo + (x - lo) * gain + add
    elif kind == "defocus":
        ids = np.arange(1, int(labels.max()) + 1)
        chosen = ids[rng.random(ids.size) < 0.35]
        m = ndi.binary_dilation(np.isin(labels, chosen), iterations=4).astype(np.float64)
        w = np.clip(ndi.gaussian_filter(m, 2.0) * 1.5, 0, 1)
        blurred = lo + (ndi.gaussian_filter(x, 3.5) - lo) * 0.6
        x = w * (blurred + rng.normal(0, sd, x.shape)) + (1 - w) * x
    else:
        raise ValueError(kind)
    return np.clip(np.rint(x), 0, 65535).astype(np.uint16)


def _clustered_image(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_nuclei_image`` with 95 % of nuclei placed against another and faint seams (its private style)."""
    from napari_impc_dl.synthetic import nuclei as N

    rng = np.random.default_rng(int(seed))
    st = N._sample_style(rng, None, 0.4, field=float(size))
    st = dataclasses.replace(st, cluster_prob=0.95, seam=0.9)
    pad = st.radius
    nuc = N._sample_nuclei(rng, st, -pad, -pad, size + 2 * pad, size + 2 * pad)
    raw, d = N._rasterize(nuc, 0, 0, size, size)
    labels, owner = N._clean_labels(raw, min_area=max(8, round(15 * st.scale**2)))
    d[labels == 0] = 1.0
    sig = N._signal(labels, d, nuc.bright, nuc, owner - 1, st, 0, 0, int(rng.integers(2**62)))
    image = N._camera(sig, N._illumination(st, 0, 0, size, size, float(size)), st, rng)
    return image, labels


def make_set(name: str, n: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from napari_impc_dl.synthetic import dataset_image_seed, make_nuclei_image

    out = []
    for i in range(n):
        s = dataset_image_seed(SET_SEED[name], i)
        if name == "clustered":
            out.append(_clustered_image(size, s))
            continue
        kw = {"small": {"scale": 0.6}, "large": {"scale": 1.6}, "crowded": {"density": 0.55}}.get(name, {})
        img, lab = make_nuclei_image((size, size), s, **kw)
        if name in ("dim", "blur", "background", "defocus"):
            img = _transform(name, img, lab, np.random.default_rng([SET_SEED[name], i, 7]))
        out.append((img, lab))
    return out


def training_data(work: Path, n: int) -> tuple[Path, list[str], list[str]]:
    """The training set (written once, reused) and our trainer's validation split (names)."""
    import tifffile

    from napari_impc_dl import api
    from napari_impc_dl.training.data import segmentation_pairs, split_by_image

    d = work / f"train_{n}"
    if len(list((d / "masks").glob("*.tif"))) != n:
        shutil.rmtree(d, ignore_errors=True)
        api.synth("nuclei", n, d, size=256, seed=TRAIN_SEED)
    tr, va = split_by_image(segmentation_pairs(d / "images", d / "masks"), 0.1, 0)
    names = sorted(p.stem for p in (d / "images").glob("*.tif"))
    val = {s.name for s in va}
    X = np.stack([tifffile.imread(d / "images" / f"{k}.tif") for k in names])
    Y = np.stack([tifffile.imread(d / "masks" / f"{k}.tif") for k in names]).astype(np.int32)
    np.savez(work / "stardist_train.npz", images=X, labels=Y, val=np.array([k in val for k in names]))
    return d, [s.name for s in tr], sorted(val)


# ----------------------------------------------------------------------------- our side


def train_ours(work: Path, data: Path, minutes: float, epochs: int | None, quick: bool) -> dict:
    from napari_impc_dl import api

    common = dict(images=data / "images", masks=data / "masks", device="cpu", patience=0, **OUR_RECIPE)
    calib_s = 0.0
    if epochs is None:
        cdir = work / "ours_calibration"
        shutil.rmtree(cdir, ignore_errors=True)
        t0 = time.perf_counter()
        r = api.train_segmentation(cdir, epochs=2 if quick else 3, **common)
        calib_s = time.perf_counter() - t0
        secs = [h["seconds"] for h in r.history]
        per_epoch = float(np.median(secs[1:] if len(secs) > 1 else secs))
        epochs = max(1, int(1.05 * minutes * 60 / per_epoch))  # +5 %: the time limit, not the epoch count, ends it
        log(f"ours: calibration {calib_s:.0f}s, {per_epoch:.2f}s per epoch -> {epochs} epochs in {minutes:g} min")
    mdir = work / "ours_model"
    shutil.rmtree(mdir, ignore_errors=True)
    t0 = time.perf_counter()
    last = [0.0]

    def prog(rec):
        if rec.get("kind") == "epoch" and time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            log(f"  ours epoch {rec['epoch']}/{rec['epochs']}: loss {rec['train_loss']:.3f} val F1 {rec.get('val_f1', float('nan')):.3f}")

    load0 = load()
    r = api.train_segmentation(mdir, epochs=epochs, time_limit_min=minutes, progress=prog, **common)
    total = time.perf_counter() - t0
    loop_s = sum(h["seconds"] for h in r.history)
    return {
        "model_dir": str(mdir), "epochs_planned": epochs, "epochs": len(r.history), "steps": int(sum(h["steps"] for h in r.history)),
        "steps_per_epoch": int(r.history[0]["steps"]) if r.history else 0, "best_epoch": r.best_epoch,
        "recipe": OUR_RECIPE, "stopped": r.stopped, "budget_s": minutes * 60, "loop_s": round(loop_s, 1), "train_call_s": round(total, 1),
        "calibration_s": round(calib_s, 1), "samples_per_s": round(r.samples_per_s, 2),
        "val": {k: round(float(v), 4) for k, v in r.metrics.items() if isinstance(v, (int, float))}, "load_before": load0, "load_after": load(),
    }


def predict_ours(model_ref, sets: dict) -> tuple[dict, dict]:
    from napari_impc_dl import api
    from napari_impc_dl.config import SegmentConfig

    runnable = api.load_model(model_ref, device="cpu")
    cfg = SegmentConfig(device="cpu")
    labels, secs = {}, {}
    for name, items in sets.items():
        t0 = time.perf_counter()
        labels[name] = [np.asarray(api.segment_image(img, runnable, cfg).labels) for img, _ in items]
        secs[name] = time.perf_counter() - t0
    return labels, secs


# ----------------------------------------------------------------------------- scoring


def _split_merge(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(merges, true objects inside merges, splits): see the module docstring."""
    from napari_impc_dl.measure.matching import overlap_table

    _, t_area, _, p_area, ti, pi, inter = overlap_table(pred, truth)
    most_of_true = inter * 2 > t_area[ti]
    per_pred = np.bincount(pi[most_of_true], minlength=p_area.size)
    most_of_pred = inter * 2 > p_area[pi]
    per_true = np.bincount(ti[most_of_pred], minlength=t_area.size)
    return int((per_pred >= 2).sum()), int(per_pred[per_pred >= 2].sum()), int((per_true >= 2).sum())


def score_set(preds: list[np.ndarray], items: list) -> dict:
    from napari_impc_dl.measure.matching import match_instances, scores

    tp = n_true = n_pred = 0
    iou_sum = 0.0
    merges = merged = splits = 0
    for pred, (_, truth) in zip(preds, items):
        m = match_instances(pred, truth, 0.5)
        tp, n_true, n_pred = tp + m.tp, n_true + m.n_true, n_pred + m.n_pred
        iou_sum += sum(p[2] for p in m.matched)
        a, b, c = _split_merge(pred, truth)
        merges, merged, splits = merges + a, merged + b, splits + c
    p, r, f1 = scores(tp, n_true, n_pred)
    return {"f1": round(f1, 4), "precision": round(p, 4), "recall": round(r, 4), "iou_matched": round(iou_sum / tp, 4) if tp else 0.0,
            "tp": tp, "fp": n_pred - tp, "fn": n_true - tp, "n_true": n_true, "n_pred": n_pred,
            "merges": merges, "true_in_merges": merged, "splits": splits}


# ----------------------------------------------------------------------------- the big image


def big_image(work: Path, size: int) -> Path:
    import tifffile
    import zarr

    from napari_impc_dl.synthetic import write_large_nuclei_zarr

    tif = work / f"big_{size}.tif"
    if not tif.exists():
        z = write_large_nuclei_zarr(work / f"big_{size}.zarr", size, seed=5, overwrite=True)
        tifffile.imwrite(tif, np.asarray(zarr.open_array(str(z), mode="r")[:]), metadata={"axes": "YX"})
        shutil.rmtree(z, ignore_errors=True)
    return tif


def cli_time(tif: Path, out: Path, model_args: list[str]) -> dict:
    exe = Path(sys.executable).parent / "napari-impc-dl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_impc_dl.cli"]
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([*cmd, "segment", str(tif), "--out", str(out), "--device", "cpu", *model_args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"napari-impc-dl segment failed ({r.returncode}): {r.stderr[-2000:]}")
    import pandas as pd

    n = int(pd.read_csv(out / "counts.csv")["n_objects"].iloc[0])
    return {"process_s": round(wall, 2), "n_objects": n}


# ----------------------------------------------------------------------------- report


def table(res: dict) -> str:
    lines = ["", "| set | n_true | " + " | ".join(f"{m} F1 / IoU / n_pred / merges / splits" for m in METHODS) + " |",
             "|---|---:|" + "---:|" * len(METHODS)]
    for name, row in res["sets"].items():
        cells = []
        for m in METHODS:
            s = row.get(m)
            cells.append("-" if s is None else f"{s['f1']:.3f} / {s['iou_matched']:.3f} / {s['n_pred']} / {s['merges']} / {s['splits']}")
        lines.append(f"| {name} | {row['n_true']} | " + " | ".join(cells) + " |")
    b = res.get("big")
    if b:
        lines += ["", f"one {b['size']}² image:"]
        for k, v in b.items():
            if isinstance(v, dict):
                lines.append(f"  {k}: " + ", ".join(f"{a}={c}" for a, c in v.items()))
            elif k.startswith("ratio"):
                lines.append(f"  {k}: {v}")
    for k in ("ours_training", "stardist_training"):
        t = res.get(k)
        if t:
            keep = ("epochs", "steps", "stopped", "budget_s", "loop_s", "fit_s", "train_call_s", "train_s", "calibration_s", "optimize_thresholds_s", "thresholds", "best_epoch")
            lines.append(f"{k}: " + ", ".join(f"{a}={t[a]}" for a in keep if a in t))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per side (default 10)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/compare_stardist_work"))
    ap.add_argument("--stardist-venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--sets", nargs="+", choices=SETS, default=SETS)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=8, help="images per held-out set (default 8)")
    ap.add_argument("--test-size", type=int, default=256)
    ap.add_argument("--big", type=int, default=4096, help="side of the timing image (default 4096; 0: skip)")
    ap.add_argument("--our-epochs", type=int, default=None, help="epochs for our trainer (default: calibrated to the budget)")
    ap.add_argument("--stardist-steps", type=int, default=100, help="StarDist steps per epoch (default 100)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 0.5 min per side, 16 training images, 2 per set, 1024² timing")
    ap.add_argument("--skip-train-ours", action="store_true")
    ap.add_argument("--skip-stardist", action="store_true")
    ap.add_argument("--reuse", nargs="+", choices=["ours", "stardist"], default=[], help="score these sides' models already trained in --workdir (no training; their training figures are read back)")
    args = ap.parse_args()
    if args.quick:
        args.minutes = min(args.minutes, 0.5)
        args.n_train, args.n_test = min(args.n_train, 16), min(args.n_test, 2)
        args.big = min(args.big, 1024)
        args.stardist_steps = min(args.stardist_steps, 10)
    work = args.workdir.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    import torch

    res: dict = {"benchmark": "compare_stardist", "quick": args.quick, "budget_min": args.minutes, "n_train": args.n_train,
                 "n_test": args.n_test, "test_size": args.test_size, "sets": {},
                 "versions": {"napari_impc_dl": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
                 "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_start": load()}, "errors": []}
    venv = args.stardist_venv.expanduser()
    if not args.skip_stardist:
        res["stardist_env"] = ensure_venv(venv)
        res["versions"]["stardist_side"], _ = side(venv, work, "versions", timeout=300)

    log(f"data: {args.n_train} training images 256² (seed {TRAIN_SEED}), sets {args.sets} x {args.n_test} of {args.test_size}²")
    data, tr_names, val_names = training_data(work, args.n_train)
    res["split"] = {"train": len(tr_names), "val": len(val_names), "val_names": val_names}
    sets = {name: make_set(name, args.n_test, args.test_size) for name in args.sets}
    np.savez_compressed(work / "stardist_sets.npz", **{f"{n}__{i:02d}": img for n, items in sets.items() for i, (img, _) in enumerate(items)})
    for name, items in sets.items():
        res["sets"][name] = {"n_true": int(sum(int(lab.max()) for _, lab in items))}

    # ---- training, one side after the other
    ours_model = None
    sd_model = work / "stardist_model"
    records = {"ours_training": work / "ours_training.record.json", "stardist_training": work / "stardist_training.record.json"}
    for side_name in args.reuse:
        key = f"{side_name}_training"
        if not records[key].is_file():
            raise SystemExit(f"--reuse {side_name}: {records[key]} is missing; run once without --reuse to train that side")
        res[key] = {**json.loads(records[key].read_text()), "reused": True}
        log(f"reusing {side_name}'s trained model in {work}")
    if "ours" in args.reuse and not args.skip_train_ours:
        ours_model = Path(res["ours_training"]["model_dir"])
    if not args.skip_train_ours and "ours" not in args.reuse:
        log(f"ours: training from scratch, {args.minutes:g} min")
        res["ours_training"] = train_ours(work, data, args.minutes, args.our_epochs, args.quick)
        records["ours_training"].write_text(json.dumps(res["ours_training"]))
        ours_model = Path(res["ours_training"]["model_dir"])
        log(f"ours: {res['ours_training']['epochs']} epochs, {res['ours_training']['steps']} steps, stopped: {res['ours_training']['stopped']}")
    if not args.skip_stardist and "stardist" not in args.reuse:
        shutil.rmtree(sd_model, ignore_errors=True)
        log(f"stardist: training, {args.minutes:g} min (+ optimize_thresholds)")
        l0 = load()
        t, wall = side(venv, work, "train", "--data", str(work / "stardist_train.npz"), "--model", str(sd_model), "--minutes", str(args.minutes),
                       "--steps", str(args.stardist_steps), timeout=args.minutes * 60 * 3 + 1200)
        res["stardist_training"] = {**{k: v for k, v in t.items() if k != "versions"}, "process_s": round(wall, 1), "load_before": l0, "load_after": load()}
        records["stardist_training"].write_text(json.dumps(res["stardist_training"]))
        log(f"stardist: {t['epochs']} epochs, {t['steps']} steps in {t['fit_s']:.0f}s; thresholds {t['thresholds']} in {t['optimize_thresholds_s']:.0f}s")

    # ---- scoring
    preds: dict = {}
    timing: dict = {}
    if ours_model is not None:
        log("scoring ours-trained")
        preds["ours-trained"], timing["ours-trained"] = predict_ours(ours_model, sets)
    log("scoring ours-starter")
    preds["ours-starter"], timing["ours-starter"] = predict_ours("nuclei", sets)
    if not args.skip_stardist:
        log("scoring stardist")
        p, wall = side(venv, work, "predict", "--data", str(work / "stardist_sets.npz"), "--model", str(sd_model),
                       "--labels", str(work / "stardist_labels.npz"), timeout=3600)
        lab = np.load(work / "stardist_labels.npz")
        preds["stardist"] = {n: [lab[f"{n}__{i:02d}"] for i in range(len(items))] for n, items in sets.items()}
        timing["stardist"] = {n: sum(v for k, v in p["seconds"].items() if k.startswith(n + "__")) for n in sets}
        res["stardist_predict_process_s"] = round(wall, 1)
    for name, items in sets.items():
        for m, by_set in preds.items():
            res["sets"][name][m] = score_set(by_set[name], items)
    res["scoring_seconds"] = {m: {n: round(v, 2) for n, v in t.items()} for m, t in timing.items()}

    # ---- one big image
    if args.big:
        log(f"timing one {args.big}² image")
        tif = big_image(work, args.big)
        b: dict = {"size": args.big, "file": str(tif)}
        b["ours-starter"] = cli_time(tif, work / "big_ours_starter", ["--preset", "nuclei"])
        if ours_model is not None:
            b["ours-trained"] = cli_time(tif, work / "big_ours_trained", ["--model", str(ours_model)])
        if not args.skip_stardist:
            s, wall = side(venv, work, "big", "--image", str(tif), "--model", str(sd_model), "--labels", str(work / "big_stardist_labels.tif"), timeout=3600)
            b["stardist"] = {**{k: (round(v, 2) if isinstance(v, float) else v) for k, v in s.items()}, "process_s": round(wall, 2)}
            b["ratio_stardist_in_process_over_ours_process"] = round(s["in_process_s"] / b["ours-starter"]["process_s"], 2)
            b["ratio_stardist_process_over_ours_process"] = round(wall / b["ours-starter"]["process_s"], 2)
        res["big"] = b
    res["machine"]["load_end"] = load()
    res["total_s"] = round(time.perf_counter() - t_all, 1)
    print(table(res), file=sys.stderr, flush=True)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
