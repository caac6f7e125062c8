"""Where each bone of a phantom mouse lies, in body millimetres, for one view (:func:`layout`).

The canonical picture (before the acquisition turns, mirrors and places it) is head up, tail down:

* ``dv`` (dorso-ventral): seen from the back, the mouse's left on the image's left; the spine runs
  down the middle with a gentle random sideways curve, the ribs fan out to both sides, the limbs
  are spread out, the tail curls to one side;
* ``lateral``: seen from the mouse's left side, the back on the image's right; the spine shows its
  thoracic hump and lumbar dip, vertebrae carry spinous processes, the ribs of both sides sweep
  towards the belly and nearly overlap (the far side's slightly offset, as from the divergent beam).

The spine is a smooth centre line (heading angle interpolated between random values at the region
borders, integrated along its length); every vertebra is a separate blob centred on it, with a gap
to the next. Vertebra sizes, rib shapes and the tail's curl come from the mouse (the same in both
views); limb poses and the head's tilt from the view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .xray_anatomy import LEFT, RIGHT, Anatomy
from .xray_parts import limbs, skull
from .xray_shapes import Blob, Tube, bezier, local, perp, turn

CLASSES = (
    "background", "soft_tissue", "skull", "cervical", "thoracic", "lumbar", "sacral", "caudal", "ribs", "pelvis", "limbs", "marker",
)
"""The classes of the ``regions`` map, by value: skull includes the mandible and teeth; cervical to
caudal are the vertebrae of each spine region (``sacral`` = IMPC's pelvic vertebrae); ``limbs`` the
scapulae, clavicles and limb bones; ``marker`` the calibration disc or ruler."""
CLS = {name: i for i, name in enumerate(CLASSES)}

SIDE_NAME = {LEFT: "left", RIGHT: "right"}

# rib profile along the ribcage (rib 1..13): lateral reach (share of the ribcage half-width), caudal
# drop (mm), where the rib ends across (share of its reach: true ribs curve back towards the sternum)
_RIB_REACH = np.array([0.42, 0.58, 0.70, 0.80, 0.88, 0.94, 0.98, 1.0, 0.99, 0.95, 0.88, 0.76, 0.60])
_RIB_DROP = np.array([2.2, 3.0, 3.7, 4.3, 4.8, 5.1, 5.3, 5.3, 5.1, 4.8, 4.3, 3.6, 2.9])
_RIB_END = np.array([0.55, 0.55, 0.55, 0.56, 0.58, 0.6, 0.62, 0.68, 0.76, 0.84, 0.9, 0.95, 0.97])
_RIB_DEPTH = np.array([0.42, 0.56, 0.68, 0.78, 0.86, 0.93, 0.98, 1.0, 0.98, 0.92, 0.83, 0.70, 0.55])


@dataclass
class Bone:
    shape: object
    cls: int
    label: int = 0
    density: float = 1.0


@dataclass
class Scene:
    """Everything one view draws: soft tissue, bones in painting order (later ones own shared
    pixels), the shapes the framing must keep inside the image, and one row per instance."""

    soft: list = field(default_factory=list)
    bones: list = field(default_factory=list)
    protected: list = field(default_factory=list)
    objects: list = field(default_factory=list)


@dataclass
class _Shared:
    """Geometry drawn once per mouse (the same in both views)."""

    verts: list  # (region, number, length, width, half-height)
    gaps: np.ndarray
    rib_jitter: np.ndarray  # (2 sides, 16 ribs, 3): reach, drop, end factors
    H: float  # ribcage half-width (DV), mm
    D: float  # ribcage depth (lateral), mm
    dv_knots: np.ndarray
    lat_knots: np.ndarray
    tail_turn_dv: float
    tail_turn_lat: float
    tail_wiggle: tuple
    pelvis_shift: float
    pelvis_turn: float


def _shared(an: Anatomy) -> _Shared:
    g = np.random.default_rng(an.geometry_seed)
    sk, c = an.skel, an.counts
    verts, gaps = [], []
    nC = c["cervical"]
    for i in range(nC):
        L, W = (1.2, 5.4) if i == 0 else (2.6, 3.3) if i == 1 else (1.4, 3.0 + 0.4 * (i - 2) / max(1, nC - 3))
        verts.append(("cervical", i + 1, L, W, 1.0)), gaps.append(0.35)
    for region, n, Lr, Wr, hd, gap in (("thoracic", c["thoracic"], (1.8, 2.3), (2.4, 2.8), (1.0, 1.2), 0.35),
                                       ("lumbar", c["lumbar"], (2.9, 3.4), (2.9, 3.3), (1.3, 1.35), 0.45),
                                       ("sacral", c["sacral"], (2.6, 2.4), (3.3, 2.6), (1.15, 1.1), 0.3)):
        for i in range(n):
            q = i / max(1, n - 1)
            verts.append((region, i + 1, Lr[0] + q * (Lr[1] - Lr[0]), Wr[0] + q * (Wr[1] - Wr[0]), hd[0] + q * (hd[1] - hd[0]))), gaps.append(gap)
    nCa = c["caudal"]
    for i in range(nCa):
        u = i / max(1, nCa - 1)
        L = float(np.interp(u, [0, 0.2, 0.35, 1], [2.4, 3.8, 3.9, 1.3]))
        W = float(np.interp(u, [0, 0.15, 0.5, 1], [2.5, 1.9, 1.4, 0.6]))
        verts.append(("caudal", i + 1, L, W, 0.42 * W)), gaps.append(0.45 - 0.15 * u)
    jit = g.uniform(0.95, 1.05, (len(verts), 2))
    verts = [(r, k, L * sk * j0, W * sk * j1, h * sk) for (r, k, L, W, h), (j0, j1) in zip(verts, jit)]
    dv = g.normal(0, 0.09, 6)
    return _Shared(
        verts=verts, gaps=np.asarray(gaps) * sk, rib_jitter=g.uniform(0.94, 1.06, (2, 16, 3)),
        H=12.0 * sk * g.uniform(0.93, 1.07), D=16.0 * sk * g.uniform(0.93, 1.07),
        dv_knots=dv - dv.mean(),
        lat_knots=np.array([g.uniform(0.25, 0.6), g.uniform(0.3, 0.6), g.uniform(0.0, 0.2), g.uniform(-0.45, -0.2), g.uniform(-0.25, 0.05), g.uniform(-0.05, 0.25)]),
        tail_turn_dv=float(g.choice([-1, 1]) * g.uniform(0.35, 1.05) * np.pi),
        tail_turn_lat=float(g.choice([-1, 1]) * g.uniform(0.2, 0.8) * np.pi),
        tail_wiggle=(g.uniform(0.05, 0.2), g.uniform(15, 35), g.uniform(0, 2 * np.pi)),
        pelvis_shift=float(g.uniform(1.5, 3.0) * sk), pelvis_turn=float(g.uniform(0.17, 0.35)),
    )


class _Spine:
    """The spine's centre line and one frame (centre, unit tangent towards the tail) per vertebra."""

    def __init__(self, sh: _Shared, view: str) -> None:
        lengths = np.array([v[2] for v in sh.verts])
        regions = [v[0] for v in sh.verts]
        starts = np.concatenate([[0.0], np.cumsum(lengths + sh.gaps)[:-1]])
        self.s = starts + lengths / 2
        first = {r: regions.index(r) for r in ("cervical", "thoracic", "lumbar", "sacral", "caudal")}
        last_sacral = first["caudal"] - 1
        total = float(starts[-1] + lengths[-1])
        ks = [0.0, self.s[first["thoracic"]], self.s[first["thoracic"] + 6] if first["lumbar"] - first["thoracic"] > 6 else self.s[first["thoracic"]] + 12,
              self.s[first["lumbar"] - 1], self.s[last_sacral - 1] if last_sacral >= 1 else 0, self.s[last_sacral]]
        ks = np.maximum.accumulate(np.asarray(ks, np.float64) + np.arange(6) * 1e-3)
        knots = sh.dv_knots if view == "dv" else sh.lat_knots
        grid = np.arange(0.0, total + 0.5, 0.25)
        phi = np.interp(grid, ks, knots)
        s0 = float(starts[first["caudal"]]) if first["caudal"] < len(starts) else total
        tail = np.clip((grid - s0) / max(total - s0, 1.0), 0, 1)
        turn = sh.tail_turn_dv if view == "dv" else sh.tail_turn_lat
        amp, wl, ph = sh.tail_wiggle
        phi = phi + turn * tail**1.4 + amp * np.sin((grid - s0) / wl * 2 * np.pi + ph) * np.clip(tail * 6, 0, 1)
        x = np.concatenate([[0.0], np.cumsum(np.sin(phi[:-1]) * 0.25)])
        y = np.concatenate([[0.0], np.cumsum(np.cos(phi[:-1]) * 0.25)])
        self.grid, self.phi, self.xy = grid, phi, np.stack([x, y], 1)
        self.first, self.regions = first, regions
        self.sacral_end = float(starts[last_sacral] + lengths[last_sacral])

    def at(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """Point and unit tangent of the centre line at arc length ``s`` (extrapolated straight past the ends)."""
        g = self.grid
        sc = float(np.clip(s, g[0], g[-1]))
        p = np.array([np.interp(sc, g, self.xy[:, 0]), np.interp(sc, g, self.xy[:, 1])])
        ph = float(np.interp(sc, g, self.phi))
        u = np.array([math.sin(ph), math.cos(ph)])
        return p + (s - sc) * u, u

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.at(self.s[i])


def _shaped(pts: np.ndarray, kind: str, rng) -> np.ndarray:
    """A rib's centre line with a kink (a sharp bend) or waves."""
    n = len(pts)
    t = np.linspace(0, 1, n)
    d = np.gradient(pts, axis=0)
    nrm = np.stack([d[:, 1], -d[:, 0]], 1) / (np.hypot(d[:, 0], d[:, 1])[:, None] + 1e-9)
    if kind == "kinked":
        t0, amp = rng.uniform(0.35, 0.65), rng.uniform(0.9, 1.5) * rng.choice([-1, 1])
        off = amp * np.clip(1 - np.abs(t - t0) / 0.16, 0, None)
    else:
        amp, cyc = rng.uniform(0.35, 0.6), rng.uniform(2.5, 4.0)
        off = amp * np.sin(2 * np.pi * cyc * t) * np.sin(np.pi * t)
    return pts + off[:, None] * nrm


def _organs(an: Anatomy, sp, sh: _Shared, fT: int, fL: int, iS: int, dv: bool) -> list:
    """The heart (denser than the rest of the soft tissue, on the mouse's left in the thorax), the gas of the
    stomach (darker, left of the first lumbar vertebra) and, in males, the os penis (baculum: a small rod of bone
    behind the pelvic symphysis). The first two tell left from right on a dorso-ventral view, the third tells a
    male; all three are ``soft_tissue`` in the region map (they are not counted)."""
    sk = an.skel
    p4, u4 = sp.frame(fT + 4)
    pL, uL = sp.frame(fL)
    pS, uS = sp.frame(iS)
    hdT = sh.verts[fT + 4][4]
    if dv:
        heart = Blob(local(p4, u4, 0.0, LEFT * 0.28 * sh.H)[0], 0.48 * sh.H, 0.38 * sh.H, u=turn(u4, LEFT * 0.5), depth=0.45 * sh.H)
        gas = Blob(local(pL, uL, 1.0 * sk, LEFT * 0.42 * sh.H)[0], 0.3 * sh.H, 0.22 * sh.H, u=uL, depth=0.2 * sh.H)
        bac = Tube(local(pS, uS, np.array([14.8, 19.6]) * sk, np.array([0.0, 0.3]) * sk), np.array([0.42, 0.3]) * sk)
    else:
        heart = Blob(local(p4, u4, 0.0, -(hdT + 0.5 * sh.D))[0], 0.34 * sh.D, 0.3 * sh.D, u=turn(u4, 0.4), depth=0.5 * sh.H)
        gas = Blob(local(pL, uL, 1.0 * sk, -(hdT + 0.45 * sh.D))[0], 0.22 * sh.D, 0.16 * sh.D, u=uL, depth=0.25 * sh.H)
        bac = Tube(local(pS, uS, np.array([14.2, 18.8]) * sk, np.array([-4.2, -5.0]) * sk), np.array([0.42, 0.3]) * sk)
    organs = [Bone(heart, CLS["soft_tissue"], 0, 0.06), Bone(gas, CLS["soft_tissue"], 0, -0.08)]
    if an.sex == "male":
        organs.append(Bone(bac, CLS["soft_tissue"], 0, 1.1))
    return organs


def layout(an: Anatomy, view: str, body_scale: float = 1.0) -> Scene:
    """The scene of mouse ``an`` in ``view`` ("dv" or "lateral"), with instance labels and table rows."""
    sh = _shared(an)
    rng = np.random.default_rng([an.geometry_seed, 1 if view == "dv" else 2])
    sp = _Spine(sh, view)
    sk, dv = an.skel, view == "dv"
    sc = Scene()
    nV = len(sh.verts)
    fat = (an.weight_g / 25.0) ** 0.35 * body_scale

    # --- soft tissue: trunk along the spine, head, tail (limbs added with their bones)
    W = (13.5 if dv else 10.5) * sk * fat
    fT, fL, fCa = sp.first["thoracic"], sp.first["lumbar"], sp.first["caudal"]
    ks = [0.0, sp.s[fT], sp.s[min(fT + 7, fL - 1)], sp.s[min(fL + 2, fCa - 1)], sp.s[sp.first["sacral"]], sp.sacral_end, sp.sacral_end + 8 * sk]
    kr = np.array([0.62, 0.8, 1.0, 1.08, 0.92, 0.5, 0.2]) * W
    ss = np.linspace(-2.0, ks[-1], max(8, int(ks[-1] / 4)))
    pts, rad = [], []
    for s in ss:
        p, u = sp.at(s)
        r = float(np.interp(s, ks, kr))
        if not dv:
            p = p - perp(u) * max(0.0, r - 2.6 * sk)  # the trunk hangs below (ventral of) the spine
        pts.append(p), rad.append(r)
    sc.soft.append(Tube(np.array(pts), np.array(rad)))
    tail_pts = [sp.at(sp.sacral_end)[0]] + [sp.frame(i)[0] for i in range(fCa, nV)]
    tail_r = [0.5 * sh.verts[fCa][3] + 0.8 * sk] + [0.5 * sh.verts[i][3] + 0.55 * sk for i in range(fCa, nV)]
    sc.soft.append(Tube(np.array(tail_pts), np.array(tail_r)))

    # --- skull and mandible
    p0, u0 = sp.at(0.0)
    sk_parts, head = skull(p0, u0, sk, dv, rng)
    sc.soft.append(head)
    skull_bones = [Bone(s, CLS["skull"], 0, d) for s, d in sk_parts]

    # --- vertebrae
    verts, vert_rows = [], []
    ribs_extra = {side: an.counts["ribs_left" if side == LEFT else "ribs_right"] > an.counts["thoracic"] for side in (LEFT, RIGHT)}
    for i, (region, k, L, Wd, hd) in enumerate(sh.verts):
        p, u = sp.frame(i)
        label = i + 1
        parts = []
        if dv:
            parts.append(Blob(p, L / 2, Wd / 2, u=u, power=2.4 if (region, k) == ("cervical", 1) else 2.6 if region == "caudal" else 3.0, depth=hd, hollow=0.65))
            for s in (LEFT, RIGHT):
                if region == "lumbar" and not (k == 1 and ribs_extra[s]):
                    parts.append(Tube(local(p, u, [0.05 * L, -0.35 * L], [s * 0.35 * Wd, s * (Wd / 2 + 1.7 * sk)]), np.array([0.5, 0.3]) * sk))
                elif region == "sacral":
                    reach, r = (1.3, 0.7) if k == 1 else (0.6, 0.45)
                    parts.append(Tube(local(p, u, [0, 0.1 * L], [s * 0.35 * Wd, s * (Wd / 2 + reach * sk)]), r * sk))
                elif region == "cervical" and k >= 3:
                    parts.append(Tube(local(p, u, [0, 0], [s * 0.3 * Wd, s * (Wd / 2 + 0.5 * sk)]), 0.35 * sk))
        else:
            hdv = hd
            parts.append(Blob(p, L / 2, hdv, u=u, power=2.6 if region == "caudal" else 3.0, depth=Wd / 2, hollow=0.65))
            spine_len = {"cervical": 1.8 if k == 2 else 0.0, "thoracic": 3.0 if k <= 2 else 2.2 - k * 0.07,
                         "lumbar": 1.6, "sacral": 0.8}.get(region, 0.0) * sk
            if spine_len > 0:
                tilt = {"lumbar": -0.5, "sacral": 0.0}.get(region, 0.6) * sk
                parts.append(Tube(local(p, u, [0, tilt], [0.8 * hdv, hdv + spine_len]), np.array([0.38, 0.24]) * sk))
        verts.append([Bone(s, CLS[region], label, 1.0) for s in parts])
        vert_rows.append({"label": label, "kind": "vertebra", "region": region, "side": None, "index": i + 1, "number": k,
                          "vertebra": 0, "shape": "normal", "fused_with": 0})

    # --- ribs: rib k of each side on the k-th thoracic vertebra (the first lumbar one for an extra rib)
    T = an.counts["thoracic"]
    rib_pts, rib_rows, label = {}, [], nV
    for side in (LEFT, RIGHT):
        n = an.counts["ribs_left" if side == LEFT else "ribs_right"]
        si = 0 if side == LEFT else 1
        for k in range(1, n + 1):
            vi = fT + k - 1  # T1.. then L1 for the extra rib
            p, u = sp.frame(vi)
            _, _, L, Wd, hd = sh.verts[vi]
            q = int(np.clip(round((k - 1) * 12 / max(1, T - 1)), 0, 12))
            jr, jd, je = sh.rib_jitter[si, k - 1]
            if dv:
                h = sh.H * (_RIB_REACH[q] if k <= T else 0.36) * jr
                d = (_RIB_DROP[q] if k <= T else 2.0) * 1.5 * sk * jd
                e = min(0.98, (_RIB_END[q] if k <= T else 0.97) * je)
                w0 = Wd / 2 + 0.3 * sk
                ctrl = [(0, w0), (0.1 * d, w0 + 0.55 * h), (0.5 * d, h), (d, e * h)]
                lw = bezier(*[np.array([a, side * b]) for a, b in ctrl], 16)
            else:
                D = sh.D * (_RIB_DEPTH[q] if k <= T else 0.3) * jr
                dl = (0.35 * D + 1.0 * sk) * jd
                w0 = hd + 0.25 * sk
                ctrl = [(0.2 * sk, -w0), (0.2 * sk + 0.35 * dl, -(w0 + 0.35 * D)), (dl, -(w0 + 0.75 * D)), (0.75 * dl * je, -(w0 + D))]
                lw = bezier(*[np.array(c) for c in ctrl], 16)
                if side == RIGHT:  # the far side: offset by the divergent beam
                    lw = lw * np.array([1.0, 1.04]) + np.array([-0.9 * sk, 0.0])
            pts = local(p, u, lw[:, 0], lw[:, 1])
            shape = an.rib_shapes.get((side, k), "normal")
            if shape != "normal":
                pts = _shaped(pts, shape, rng)
            label += 1
            rib_pts[(side, k)] = (label, pts)
            rib_rows.append({"label": label, "kind": "rib", "region": "ribs", "side": SIDE_NAME[side], "index": k, "number": k,
                             "vertebra": vi + 1, "shape": shape, "fused_with": 0})
    ribs = {key: [Bone(Tube(pts, np.linspace(0.45 if key[1] <= 2 else 0.4, 0.28, len(pts)) * sk, hollow=0.4), CLS["ribs"], lab, 1.8)]
            for key, (lab, pts) in rib_pts.items()}
    for (side, k), t in zip(an.fusions, an.fusion_t):
        (la, pa), (lb, pb) = rib_pts[(side, k)], rib_pts[(side, k + 1)]
        j = int(round(t * (len(pa) - 1)))
        ribs[(side, k)].append(Bone(Tube(np.array([pa[j], pb[j]]), 0.5 * sk), CLS["ribs"], la, 1.0))
        ribs[(side, k)].append(Bone(Blob((pa[j] + pb[j]) / 2, 0.9 * sk, 0.7 * sk, u=pb[j] - pa[j]), CLS["ribs"], la, 0.8))
        for row in rib_rows:
            if row["label"] in (la, lb):
                row["fused_with"] = lb if row["label"] == la else la

    # --- pelvis, in the frame of the first sacral vertebra
    iS = sp.first["sacral"]
    pS, uS = sp.frame(iS)
    wS, hS = sh.verts[iS][3], sh.verts[iS][4]
    pelvis, acetabula = [], {}
    for side in (LEFT, RIGHT):
        if dv:
            il_l, il_w, ring_c, ace = [-0.6, 3.8, 8.0], [wS / 2 / sk + 1.0, 3.5, 3.9], (11.5, 2.9), (8.3, 4.4)
            il_w = [side * w for w in il_w]
            ring_c, ace = (ring_c[0], side * ring_c[1]), (ace[0], side * ace[1])
            ring_turn = side * 0.12
        else:
            il_l, il_w, ring_c, ace, ring_turn = [-0.8, 4.0, 8.0], [-0.3 * hS / sk, -2.2, -3.4], (11.5, -3.6), (8.3, -3.8), -0.25
        ab = (3.4, 1.9) if dv else (3.2, 1.7)
        pts_l = np.array(il_l + [ring_c[0], ace[0]], float)
        pts_w = np.array(il_w + [ring_c[1], ace[1]], float)
        if not dv and side == RIGHT:
            pts_l, pts_w = pts_l - 0.6, pts_w + 0.4
        hole, rr, ab_s = True, 1.0, 1.0
        if an.pelvis != "normal" and side == an.pelvis_side:
            if an.pelvis == "asymmetric":
                c, s = math.cos(sh.pelvis_turn), math.sin(sh.pelvis_turn)
                l0, w0 = pts_l[0], pts_w[0]
                dl, dw = pts_l - l0, pts_w - w0
                pts_l, pts_w = l0 + c * dl - s * dw + sh.pelvis_shift / sk, w0 + s * dl + c * dw
            else:  # malformed: bent, thickened ilium and a closed, squashed obturator ring
                pts_w[1] += (side if dv else -1) * 1.6
                pts_l[2] -= 1.2
                hole, rr, ab_s = False, 1.3, 0.7
        P = local(pS, uS, pts_l * sk, pts_w * sk)
        pelvis.append(Tube(P[:3], np.array([1.0, 0.85, 1.15]) * sk * rr, hollow=0.5))
        pelvis.append(Blob(P[3], ab[0] * sk * ab_s, ab[1] * sk * ab_s, u=turn(uS, ring_turn), depth=0.9 * sk, hollow=0.6, hole=hole))
        if dv:
            sym = local(pS, uS, np.array([12.8, 13.9]) * sk, side * np.array([1.3, 0.45]) * sk)
            pelvis.append(Tube(sym, 0.45 * sk))
        acetabula[side] = P[4]
    pelvis_bones = [Bone(s, CLS["pelvis"], 0, 0.95) for s in pelvis]

    # --- limbs (and their soft tissue)
    pT, uT = sp.frame(fT)
    lb_parts, lb_soft = limbs(pT, uT, sh.verts[fT][4], uS, acetabula, sh.H, sk, dv, rng)
    sc.soft += lb_soft
    limb_bones = [Bone(s, CLS["limbs"], 0, d) for s, d in lb_parts]

    # --- soft-tissue landmarks that tell the mouse's sides and its sex, as on real radiographs
    organs = _organs(an, sp, sh, fT, fL, iS, dv)

    # --- painting order: organs, limbs, pelvis, skull, ribs (far side first), vertebrae (they own shared pixels)
    sc.bones = organs + limb_bones + pelvis_bones + skull_bones
    order = sorted(ribs, key=lambda key: (0 if key[0] == RIGHT else 1, key[1])) if not dv else sorted(ribs, key=lambda key: (key[1], key[0]))
    for key in order:
        sc.bones += ribs[key]
    for vb in verts:
        sc.bones += vb
    sc.protected = [b.shape for b in pelvis_bones + skull_bones] + [b.shape for key in order for b in ribs[key]] + [b.shape for vb in verts for b in vb]
    sc.objects = vert_rows + sorted(rib_rows, key=lambda r: r["label"])
    return sc
