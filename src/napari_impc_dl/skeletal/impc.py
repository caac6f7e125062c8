"""The IMPC X-ray parameter table: one row per specimen and parameter, called against the strain's reference.

IMPC centres record per mouse (IMPReSS procedure IMPC_XRY): the number of ribs right and left
(IMPC_XRY_008_001 / 009_001), shape and fusion of ribs (010 / 011), pelvis (012), and the number of
cervical, thoracic, lumbar, pelvic and caudal vertebrae (013-017). :func:`long_table` writes what a
curator reviews, ``impc_parameters.csv``:

    specimen, image, view, parameter_stable_id, parameter_name, value, reference, call, mp_term,
    mp_name, confidence, model, model_hash

``call`` is ``normal`` / ``increased`` / ``decreased`` / ``abnormal`` against the strain's reference
(:data:`REFERENCES`; C57BL/6N by default, caudal vertebrae as a range); where a value deviates,
``mp_term`` / ``mp_name`` is the candidate Mammalian Phenotype term for the curator (the rib terms are
the specific ones; vertebra counts and the pelvis point at the general terms the curator narrows
down). ``confidence`` (0-1) ranks the values to review first. A parameter a view cannot show (ribs
per side on a lateral view) has no row for that image; the specimen's value comes from its other view.
:func:`wide_table` gives one row per specimen (``impc_summary.csv``): every parameter's value from the
view that measures it best (the most confident), sex, normal / abnormal and the calls.
"""

from __future__ import annotations

import numpy as np

from ..synthetic.xray import IMPC_PARAMETERS

#: IMPC parameter -> the count key of :func:`~.counting.counts` (or the shape call it is)
PARAMETER_KEYS = {
    "IMPC_XRY_008_001": "ribs_right", "IMPC_XRY_009_001": "ribs_left", "IMPC_XRY_010_001": "rib_shape",
    "IMPC_XRY_011_001": "rib_fusion", "IMPC_XRY_012_001": "pelvis", "IMPC_XRY_013_001": "cervical",
    "IMPC_XRY_014_001": "thoracic", "IMPC_XRY_015_001": "lumbar", "IMPC_XRY_016_001": "sacral", "IMPC_XRY_017_001": "caudal",
}

REFERENCES = {
    "C57BL/6N": {"ribs_right": 13, "ribs_left": 13, "cervical": 7, "thoracic": 13, "lumbar": 6, "sacral": 4, "caudal": (26, 31)},
}
"""Normal counts of a strain (a number, or an inclusive range)."""

MP_TERMS = {
    ("ribs", "increased"): ("MP:0000480", "increased rib number"),
    ("ribs", "decreased"): ("MP:0003345", "decreased rib number"),
    ("rib_shape", "abnormal"): ("MP:0000150", "abnormal rib morphology"),
    ("rib_fusion", "abnormal"): ("MP:0000153", "rib fusion"),
    ("pelvis", "abnormal"): ("MP:0004509", "abnormal pelvic girdle bone morphology"),
    ("vertebrae", "increased"): ("MP:0004703", "abnormal vertebral column morphology"),
    ("vertebrae", "decreased"): ("MP:0004703", "abnormal vertebral column morphology"),
}
"""(what, call) -> candidate MP term for a deviating value."""

LONG_COLUMNS = ("specimen", "image", "view", "parameter_stable_id", "parameter_name", "value", "reference", "call", "mp_term", "mp_name",
                "confidence", "model", "model_hash")


def call(key: str, value, strain: str = "C57BL/6N") -> str:
    """``normal`` / ``increased`` / ``decreased`` for a count, the value itself for a shape call (normal / abnormal)."""
    if key in ("rib_shape", "rib_fusion", "pelvis"):
        return str(value)
    ref = REFERENCES[strain][key]
    lo, hi = ref if isinstance(ref, tuple) else (ref, ref)
    return "normal" if lo <= int(value) <= hi else "increased" if int(value) > hi else "decreased"


def reference_text(key: str, strain: str = "C57BL/6N") -> str:
    if key in ("rib_shape", "rib_fusion", "pelvis"):
        return "normal"
    ref = REFERENCES[strain][key]
    return f"{ref[0]}-{ref[1]}" if isinstance(ref, tuple) else str(ref)


def mp_term(key: str, verdict: str) -> tuple[str, str]:
    if verdict == "normal":
        return "", ""
    what = "ribs" if key.startswith("ribs_") else key if key in ("rib_shape", "rib_fusion", "pelvis") else "vertebrae"
    return MP_TERMS.get((what, verdict), ("", ""))


def long_rows(specimen: str, image: str, view: str, values: dict, confidence: dict, model: dict, strain: str = "C57BL/6N") -> list[dict]:
    """The rows of :data:`LONG_COLUMNS` for one image (``values`` keyed like :data:`PARAMETER_KEYS`' values; None: not measured)."""
    rows = []
    for pid, key in PARAMETER_KEYS.items():
        v = values.get(key)
        if v is None:
            continue
        verdict = call(key, v, strain)
        term, name = mp_term(key, verdict)
        rows.append({"specimen": specimen, "image": image, "view": view, "parameter_stable_id": pid, "parameter_name": IMPC_PARAMETERS[pid],
                     "value": v, "reference": reference_text(key, strain), "call": verdict, "mp_term": term, "mp_name": name,
                     "confidence": round(float(confidence.get(key, 0.0)), 4), "model": model.get("name", ""), "model_hash": model.get("hash", "")})
    return rows


def wide_table(long, extra=None):
    """One row per specimen: ``<parameter_stable_id>`` value and ``<id>_call`` from the image that measured it most
    confidently, ``min_confidence``, ``n_deviations`` and the MP terms; ``extra`` (DataFrame keyed by specimen: sex,
    normal / abnormal, ...) joined on."""
    import pandas as pd

    if not len(long):
        return pd.DataFrame(columns=["specimen"])
    best = long.sort_values("confidence", ascending=False).drop_duplicates(["specimen", "parameter_stable_id"])
    rows = []
    for spec, g in best.groupby("specimen", sort=True):
        row = {"specimen": spec}
        for r in g.sort_values("parameter_stable_id").itertuples(index=False):
            row[r.parameter_stable_id] = r.value
            row[f"{r.parameter_stable_id}_call"] = r.call
        row["min_confidence"] = round(float(g["confidence"].min()), 4)
        dev = g[g["call"] != "normal"]
        row["n_deviations"] = int(len(dev))
        row["mp_terms"] = ";".join(sorted({t for t in dev["mp_term"] if isinstance(t, str) and t}))
        rows.append(row)
    out = pd.DataFrame(rows)
    if extra is not None and len(extra):
        out = out.merge(extra, on="specimen", how="left")
    return out


def abnormal_score(values: dict, confidence: dict, strain: str = "C57BL/6N") -> float:
    """0-1, how likely the mouse is abnormal: the largest of each parameter's probability of deviating
    (a deviating count: its confidence; a normal one: 1 - confidence; shape calls: their classifier's probability)."""
    p = [0.0]
    for key, v in values.items():
        if v is None or key not in PARAMETER_KEYS.values():
            continue
        c = float(confidence.get(key, 0.0))
        if key in ("rib_shape", "rib_fusion", "pelvis"):
            p.append(c if v == "abnormal" else 1 - c)
        else:
            p.append(c if call(key, v, strain) != "normal" else 1 - c)
    return float(np.clip(max(p), 0, 1))
