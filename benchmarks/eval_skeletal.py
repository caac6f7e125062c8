"""Accuracy of the ``skeletal`` preset on held-out mouse X-ray phantoms (dataset seeds 7400+, never trained on).

    python benchmarks/eval_skeletal.py [--n 20] [--sets fresh dim noisy bigger upright] [--out DIR]

Each set is ``n`` mice in both views from ``api.synth("xray", ...)``: ``fresh`` (the generator's defaults,
p_abnormal 0.3), and sets with its parameters moved: ``dim`` (exposure x0.7), ``noisy`` (noise x1.6),
``bigger`` (soft tissue x1.2 wider), ``upright`` (no rotation: every mouse head-up). Every picture goes
through ``api.skeletal`` (what ``segment --preset skeletal`` runs) and is scored against ``truth.csv``:

* per IMPC count parameter: the share of pictures with the exact value (ribs per side on dorso-ventral
  pictures only: a lateral view shows both sides on top of each other), caudal within one;
* view accuracy; orientation accuracy (rotation within 45 degrees, i.e. right to the nearest 90, and the
  mirror right) and the median rotation error;
* sex accuracy; normal / abnormal AUC of the abnormal score; per abnormality kind, the sensitivity (its
  parameter called abnormal) on the pictures whose view measures it;
* ``invariance``: on the first pictures, the share whose counts are unchanged when the picture is turned
  by 90 degrees and mirrored.

Prints one JSON line per set and a last line with all of them; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_impc_dl import api  # noqa: E402

SETS = {"fresh": {}, "dim": {"exposure": 0.7}, "noisy": {"noise": 1.6}, "bigger": {"body_scale": 1.2}, "upright": {"rotation_range": 0.0}}
SEED0 = 7400
COUNTS = {"IMPC_XRY_008_001": "n_ribs_right", "IMPC_XRY_009_001": "n_ribs_left", "IMPC_XRY_013_001": "n_cervical", "IMPC_XRY_014_001": "n_thoracic",
          "IMPC_XRY_015_001": "n_lumbar", "IMPC_XRY_016_001": "n_sacral", "IMPC_XRY_017_001": "n_caudal"}
CALLS = {"IMPC_XRY_010_001": "rib_shape", "IMPC_XRY_011_001": "rib_fusion", "IMPC_XRY_012_001": "pelvis"}
#: abnormality -> (column of counts.csv that must deviate, views that can show it)
KINDS = {"rib_count_left": ("n_ribs_left", ("dv",)), "rib_count_right": ("n_ribs_right", ("dv",)), "rib_fusion": ("rib_fusion", ("dv",)),
         "rib_shape": ("rib_shape", ("dv",)), "cervical_count": ("n_cervical", ("dv", "lateral")), "thoracic_count": ("n_thoracic", ("dv", "lateral")),
         "lumbar_count": ("n_lumbar", ("dv", "lateral")), "sacral_count": ("n_sacral", ("dv", "lateral")),
         "pelvis_asymmetric": ("pelvis", ("dv", "lateral")), "pelvis_malformed": ("pelvis", ("dv", "lateral"))}
NORMAL = {"n_ribs_left": 13, "n_ribs_right": 13, "n_cervical": 7, "n_thoracic": 13, "n_lumbar": 6, "n_sacral": 4}


def auc(score, label) -> float | None:
    score, label = np.asarray(score, float), np.asarray(label, bool)
    pos, neg = score[label], score[~label]
    if not len(pos) or not len(neg):
        return None
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def _deviates(row, col) -> bool:
    v = row[col]
    if col in ("rib_shape", "rib_fusion", "pelvis"):
        return v == "abnormal"
    return v == v and int(v) != NORMAL[col]  # NaN (not measured) never deviates


def score(folder: Path, out: Path) -> dict:
    import pandas as pd

    truth = pd.read_csv(folder / "truth.csv")
    rep = api.skeletal(sorted((folder / "images").iterdir()), out)
    pred = pd.DataFrame(rep["counts"]).merge(truth, on="image", suffixes=("", "_truth"))
    s: dict = {"n_images": int(len(pred)), "flagged": int((pred["flag"] != "").sum())}
    ok = pred[pred["flag"] == ""]
    for pid, col in COUNTS.items():
        rows = ok[ok["view_truth"] == "dv"] if "ribs" in col else ok
        got = rows[col].to_numpy(float)
        want = rows[pid].to_numpy(float)
        s[f"exact_{pid}"] = round(float(np.mean(got == want)), 4) if len(rows) else None
        if pid == "IMPC_XRY_017_001":
            s["caudal_within_one"] = round(float(np.mean(np.abs(got - want) <= 1)), 4) if len(rows) else None
    for pid, col in CALLS.items():
        rows = ok[ok["view_truth"] == "dv"] if col.startswith("rib") else ok
        s[f"accuracy_{pid}"] = round(float(np.mean(rows[col] == rows[pid])), 4) if len(rows) else None
    s["view_accuracy"] = round(float(np.mean(ok["view"] == ok["view_truth"])), 4)
    err = np.abs((ok["rotation_deg"] - ok["rotation_deg_truth"] + 180) % 360 - 180)
    mirror_ok = ok["mirrored"].astype(bool).to_numpy() == ok["flipped"].astype(str).str.lower().eq("true").to_numpy()
    s["orientation_accuracy"] = round(float(np.mean((err < 45).to_numpy() & mirror_ok)), 4)
    s["rotation_error_median_deg"] = round(float(np.median(err)), 2)
    s["sex_accuracy"] = round(float(np.mean(ok["sex"] == ok["sex_truth"])), 4)
    normal = ok["normal"].astype(str).str.lower().eq("true")
    s["abnormal_auc"] = auc(ok["abnormal_score"], ~normal)
    sens = {}
    for kind, (col, views) in KINDS.items():
        rows = ok[ok["abnormalities"].astype(str).str.split(";").apply(lambda a, k=kind: k in a) & ok["view_truth"].isin(views)]
        if len(rows):
            sens[kind] = {"sensitivity": round(float(np.mean([_deviates(r, col) for _, r in rows.iterrows()])), 4), "n": int(len(rows))}
    s["sensitivity"] = sens
    return s


def invariance(folder: Path, out: Path, k: int = 6) -> float:
    """Share of the first ``k`` pictures whose counts are unchanged after a 90-degree turn and a mirror."""
    import pandas as pd
    import tifffile

    imgs = sorted((folder / "images").iterdir())[:k]
    moved = out / "moved"
    moved.mkdir(parents=True, exist_ok=True)
    for p in imgs:
        tifffile.imwrite(moved / p.name, np.ascontiguousarray(np.rot90(tifffile.imread(p))[:, ::-1]))
    a = pd.DataFrame(api.skeletal(imgs, out / "orig")["counts"]).set_index("image")
    b = pd.DataFrame(api.skeletal(sorted(moved.iterdir()), out / "moved-out")["counts"]).set_index("image")
    cols = [c for c in a.columns if c.startswith("n_")]
    same = [(a.loc[i, cols].fillna(-1) == b.loc[i, cols].fillna(-1)).all() for i in a.index]
    return round(float(np.mean(same)), 4)


def run_set(name: str, n: int, work: Path) -> dict:
    """Make (once) and score one set; the fresh set also gets the invariance figure."""
    t0 = time.time()
    folder = work / f"{name}-data"
    if not (folder / "truth.csv").is_file():
        api.synth("xray", n, folder, seed=SEED0 + list(SETS).index(name), view="both", **SETS[name])
    s = score(folder, work / name)
    if name == "fresh":
        s["invariance"] = invariance(folder, work / "invariance")
    s["seconds"] = round(time.time() - t0, 1)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="mice per set (two pictures each; default 20)")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--out", type=Path, default=None, help="keep the sets and outputs here")
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="eval-skeletal-"))
    allsets = {}
    for name in args.sets:
        s = allsets[name] = run_set(name, args.n, work)
        print(json.dumps({"set": name, **s}), flush=True)
    print(json.dumps({"preset": "skeletal", "sets": allsets}), flush=True)


if __name__ == "__main__":
    main()
