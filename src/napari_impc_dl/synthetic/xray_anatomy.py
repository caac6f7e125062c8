"""What one phantom mouse is: its skeleton's counts and variants (:func:`draw_anatomy`), drawn once per
specimen so that its dorso-ventral and lateral images show the same mouse.

Normal values are those of a C57BL/6N mouse: 7 cervical, 13 thoracic (each with a pair of ribs),
6 lumbar, 4 pelvic (sacral) and 26-31 caudal vertebrae. An abnormal mouse has one, sometimes two,
of :data:`ABNORMALITY_KINDS`; the names the truth lists (:data:`ABNORMALITIES`) are worked out from
the finished anatomy (:func:`abnormalities_of`), so they can never disagree with the counts:

* ``rib_count_left`` / ``rib_count_right``: that side has other than 13 ribs (a missing last rib,
  or an extra one on the first lumbar vertebra; both sides change with ``thoracic_count``);
* ``rib_fusion``: two neighbouring ribs of one side joined by a bony bridge (both still counted);
* ``rib_shape``: one to three ribs kinked or wavy;
* ``cervical_count`` (6 or 8), ``thoracic_count`` (12 or 14), ``lumbar_count`` (5 or 7),
  ``sacral_count`` (3 or 5), ``caudal_count`` (outside 26-31: only when asked for);
* ``pelvis_asymmetric`` (one hip bone shifted and turned) / ``pelvis_malformed`` (one hip bone
  bent, its obturator foramen closed).

The geometry (where each bone lies, in each view) is :mod:`.xray_layout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

REGIONS = ("cervical", "thoracic", "lumbar", "sacral", "caudal")
"""The spine's regions, head to tail (``sacral`` = IMPC's pelvic vertebrae)."""

NORMAL_COUNTS = {"cervical": 7, "thoracic": 13, "lumbar": 6, "sacral": 4, "ribs_left": 13, "ribs_right": 13}
"""A normal mouse; its caudal count is anything in :data:`NORMAL_CAUDAL`."""
NORMAL_CAUDAL = (26, 31)

ABNORMALITIES = (
    "rib_count_left", "rib_count_right", "rib_fusion", "rib_shape", "cervical_count", "thoracic_count",
    "lumbar_count", "sacral_count", "caudal_count", "pelvis_asymmetric", "pelvis_malformed",
)
"""Every abnormality name the truth can list, in the order it lists them."""

ABNORMALITY_KINDS = {
    "rib_count": 0.25, "rib_fusion": 0.15, "rib_shape": 0.15, "cervical_count": 0.1, "thoracic_count": 0.1,
    "lumbar_count": 0.1, "sacral_count": 0.05, "pelvis": 0.1,
}
"""What a randomly abnormal mouse gets, and how often (relative weights)."""

COUNT_KEYS = ("cervical", "thoracic", "lumbar", "sacral", "caudal", "ribs_left", "ribs_right")
_COUNT_RANGE = {"cervical": (4, 9), "thoracic": (10, 15), "lumbar": (3, 8), "sacral": (2, 6), "caudal": (10, 35)}

LEFT, RIGHT = -1, 1
"""Sides as the sign across the body in the canonical picture: the mouse's left is on the image's left."""


@dataclass
class Anatomy:
    """One mouse, independent of the view. Lengths in mm."""

    sex: str
    weight_g: float
    skel: float
    """Skeleton scale (1 = a 25 g mouse)."""
    counts: dict
    fusions: list = field(default_factory=list)
    """``(side, k)``: rib ``k`` of ``side`` (1-based) is fused to rib ``k + 1``; ``t`` in ``fusion_t``."""
    fusion_t: list = field(default_factory=list)
    rib_shapes: dict = field(default_factory=dict)
    """``(side, k) -> "kinked" | "wavy"``; ribs not listed are normal."""
    pelvis: str = "normal"
    pelvis_side: int = LEFT
    geometry_seed: int = 0
    """Seeds the shared geometry (bone sizes, curvature): the same in every view of this mouse."""

    @property
    def abnormalities(self) -> tuple[str, ...]:
        return abnormalities_of(self)

    @property
    def normal(self) -> bool:
        return not self.abnormalities


def abnormalities_of(an: Anatomy) -> tuple[str, ...]:
    """The abnormality names that ``an`` shows, in :data:`ABNORMALITIES` order."""
    c = an.counts
    found = {
        "rib_count_left": c["ribs_left"] != NORMAL_COUNTS["ribs_left"],
        "rib_count_right": c["ribs_right"] != NORMAL_COUNTS["ribs_right"],
        "rib_fusion": bool(an.fusions),
        "rib_shape": bool(an.rib_shapes),
        "cervical_count": c["cervical"] != NORMAL_COUNTS["cervical"],
        "thoracic_count": c["thoracic"] != NORMAL_COUNTS["thoracic"],
        "lumbar_count": c["lumbar"] != NORMAL_COUNTS["lumbar"],
        "sacral_count": c["sacral"] != NORMAL_COUNTS["sacral"],
        "caudal_count": not (NORMAL_CAUDAL[0] <= c["caudal"] <= NORMAL_CAUDAL[1]),
        "pelvis_asymmetric": an.pelvis == "asymmetric",
        "pelvis_malformed": an.pelvis == "malformed",
    }
    return tuple(k for k in ABNORMALITIES if found[k])


def _check_forced(abnormalities) -> list[str]:
    if isinstance(abnormalities, str):
        abnormalities = [abnormalities]
    out = []
    for a in abnormalities:
        if a not in ABNORMALITIES or a == "caudal_count":
            raise InputError(
                f"unknown abnormality {a!r}",
                "Choose from: " + ", ".join(x for x in ABNORMALITIES if x != "caudal_count") + " (give caudal counts with counts={'caudal': N})",
            )
        out.append(a)
    return out


def check_counts(counts) -> dict:
    """``counts`` (a mapping of some :data:`COUNT_KEYS` to integers) checked, else an InputError."""
    if counts is None:
        return {}
    try:
        items = dict(counts).items()
    except (TypeError, ValueError):
        raise InputError(f"counts {counts!r} is not a mapping", "Give e.g. counts={'ribs_left': 14}") from None
    out = {}
    for k, v in items:
        if k not in COUNT_KEYS:
            raise InputError(f"unknown count {k!r}", f"Use some of: {', '.join(COUNT_KEYS)}")
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"count {k}={v!r} is not a whole number", "Give an integer")
        lo, hi = _COUNT_RANGE.get(k, (1, 20))
        if not lo <= int(v) <= hi:
            raise InputError(f"count {k}={v} is out of range", f"Give {k} from {lo} to {hi}")
        out[k] = int(v)
    return out


def draw_anatomy(rng: np.random.Generator, p_abnormal: float, abnormalities=None, counts=None) -> Anatomy:
    """A mouse: sex, weight, counts and variants. ``abnormalities`` (names of :data:`ABNORMALITIES`)
    forces exactly those (None: abnormal with probability ``p_abnormal``); ``counts`` overrides counts."""
    forced = None if abnormalities is None else _check_forced(abnormalities)
    over = check_counts(counts)
    sex = "male" if rng.random() < 0.5 else "female"
    weight = float(rng.uniform(24, 34) if sex == "male" else rng.uniform(18, 26))
    skel = (weight / 25.0) ** (1 / 3) * float(rng.uniform(0.97, 1.03))
    c = {k: v for k, v in NORMAL_COUNTS.items()}
    c["caudal"] = int(rng.integers(NORMAL_CAUDAL[0], NORMAL_CAUDAL[1] + 1))
    if forced is None:
        wanted = []
        if rng.random() < p_abnormal:
            kinds, w = list(ABNORMALITY_KINDS), np.array(list(ABNORMALITY_KINDS.values()))
            pick = rng.choice(len(kinds), size=1 if rng.random() < 0.75 else 2, replace=False, p=w / w.sum())
            for i in pick:
                k = kinds[i]
                if k == "rib_count":
                    wanted += [["rib_count_left"], ["rib_count_right"], ["rib_count_left", "rib_count_right"]][int(rng.integers(3))]
                elif k == "pelvis":
                    wanted.append("pelvis_asymmetric" if rng.random() < 0.5 else "pelvis_malformed")
                else:
                    wanted.append(k)
    else:
        wanted = forced
    if "pelvis_asymmetric" in wanted and "pelvis_malformed" in wanted:
        raise InputError("pelvis_asymmetric and pelvis_malformed were both asked for", "Ask for one pelvis abnormality at a time")
    region_alt = {"cervical_count": ("cervical", (6, 8)), "thoracic_count": ("thoracic", (12, 14)),
                  "lumbar_count": ("lumbar", (5, 7)), "sacral_count": ("sacral", (3, 5))}
    for name, (key, alt) in region_alt.items():
        if name in wanted:
            c[key] = int(alt[int(rng.integers(2))])
    for key in ("cervical", "thoracic", "lumbar", "sacral", "caudal"):
        c[key] = over.get(key, c[key])
    T = c["thoracic"]
    c["ribs_left"] = c["ribs_right"] = T
    for side in ("left", "right"):
        if f"rib_count_{side}" in wanted:
            opts = [n for n in (T - 1, T + 1) if n != NORMAL_COUNTS["ribs_left"]]
            c[f"ribs_{side}"] = int(opts[int(rng.integers(len(opts)))])
        c[f"ribs_{side}"] = over.get(f"ribs_{side}", c[f"ribs_{side}"])
        if not T - 1 <= c[f"ribs_{side}"] <= T + 1:
            raise InputError(
                f"{c[f'ribs_{side}']} ribs on the {side} with {T} thoracic vertebrae",
                f"Give from {T - 1} (a missing last rib) to {T + 1} (an extra rib on the first lumbar vertebra)",
            )
    an = Anatomy(sex=sex, weight_g=round(weight, 1), skel=skel, counts=c, geometry_seed=int(rng.integers(2**62)))
    if "rib_fusion" in wanted:
        side = LEFT if rng.random() < 0.5 else RIGHT
        n = c["ribs_left" if side == LEFT else "ribs_right"]
        an.fusions.append((side, int(rng.integers(2, max(3, n - 2)))))
        an.fusion_t.append(float(rng.uniform(0.35, 0.65)))
    if "rib_shape" in wanted:
        side = LEFT if rng.random() < 0.5 else RIGHT
        n = c["ribs_left" if side == LEFT else "ribs_right"]
        for k in rng.choice(np.arange(3, n - 1), size=int(rng.integers(1, 4)), replace=False):
            an.rib_shapes[(side, int(k))] = "kinked" if rng.random() < 0.5 else "wavy"
    if "pelvis_asymmetric" in wanted or "pelvis_malformed" in wanted:
        an.pelvis = "asymmetric" if "pelvis_asymmetric" in wanted else "malformed"
        an.pelvis_side = LEFT if rng.random() < 0.5 else RIGHT
    return an
