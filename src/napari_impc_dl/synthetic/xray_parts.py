"""The skull and the limbs of a phantom mouse, in body millimetres (used by :func:`.xray_layout.layout`).

Both come as ``(shape, density)`` pairs (density: attenuation relative to vertebral bone) plus the
soft tissue around them; the layout gives them their classes (``skull``, ``limbs``) and painting order.
"""

from __future__ import annotations

import math

import numpy as np

from .xray_anatomy import LEFT, RIGHT
from .xray_shapes import Blob, Tube, local, perp, turn


def skull(p0, u0, sk: float, dv: bool, rng) -> tuple[list, Blob]:
    """Skull, mandible and teeth as ``(shape, density)`` pairs, and the head's soft tissue, for the spine
    starting at ``p0`` with tangent ``u0``. Built in the skull's frame: ``l`` mm from the occiput towards
    the snout, ``w`` mm across (to the dorsal side in the lateral view)."""
    ang = rng.uniform(-0.12, 0.12) if dv else -rng.uniform(0.3, 0.75)
    A = turn(-u0, ang)
    O = p0 - u0 * 0.5 * sk

    def S(l, w):
        return local(O, A, np.asarray(l) * sk, -np.asarray(w) * sk)

    bones = []
    if dv:
        soft = Blob(S(11, 0)[0], 13 * sk, 7.5 * sk, u=A, depth=6.5 * sk)
        bones += [(Blob(S(7, 0)[0], 7 * sk, 5.3 * sk, u=A, power=2.2, depth=3.6 * sk, hollow=0.88, marrow=0.1), 0.9),
                  (Tube(S([10.5, 17, 23.5], [0, 0, 0]), np.array([3.9, 2.8, 1.3]) * sk, hollow=0.85, marrow=0.15), 0.7)]
        for s in (-1, 1):
            bones += [(Tube(S([5.5, 9.5, 13.5], [s * 5.0, s * 6.1, s * 4.0]), 0.55 * sk), 1.0),
                      (Blob(S(3.5, s * 3.9)[0], 2.0 * sk, 1.8 * sk, u=A, hollow=0.8), 0.8),
                      (Tube(S([4.5, 9, 17, 21.5], [s * 4.0, s * 3.4, s * 1.7, s * 0.6]), np.array([0.95, 0.9, 0.7, 0.5]) * sk, hollow=0.5), 0.9),
                      (Blob(S(14.5, s * 2.2)[0], 1.9 * sk, 0.8 * sk, u=A), 1.4),
                      (Tube(S([22.0, 25.2], [s * 0.5, s * 0.45]), 0.45 * sk), 1.7)]
    else:
        soft = Blob(S(11, -0.5)[0], 13 * sk, 6.2 * sk, u=A, depth=6.5 * sk)
        bones += [(Blob(S(7, 1.0)[0], 7 * sk, 4.3 * sk, u=A, power=2.2, depth=5 * sk, hollow=0.88, marrow=0.1), 0.9),
                  (Tube(S([10.5, 17, 23.5], [0.6, 0.1, -0.8]), np.array([3.2, 2.4, 1.2]) * sk, hollow=0.85, marrow=0.15), 0.7),
                  (Tube(S([6, 9.5, 13], [-1.6, -1.9, -1.2]), 0.6 * sk), 1.0),
                  (Tube(S([22, 24.4, 24.2], [-0.5, -1.8, -3.1]), 0.45 * sk), 1.7),
                  (Blob(S(14.5, -2.1)[0], 2.2 * sk, 1.0 * sk, u=A), 1.4),
                  (Tube(S([3.5, 5.0, 10, 19, 22], [-0.6, -4.4, -5.1, -4.0, -3.6]), np.array([0.8, 1.0, 1.0, 0.8, 0.6]) * sk, hollow=0.5), 1.0),
                  (Tube(S([8.5, 7.5], [-4.8, -2.6]), np.array([0.6, 0.4]) * sk), 0.9),
                  (Tube(S([19.5, 24], [-4.2, -3.4]), 0.42 * sk), 1.7)]
    return [(s, 0.7 * d) for s, d in bones], soft  # a thin shell: less dense than vertebral bone


def limbs(pT, uT, hdT: float, uS, acetabula: dict, H: float, sk: float, dv: bool, rng) -> tuple[list, list]:
    """Scapulae, clavicles and limb bones as ``(shape, density)`` pairs, and the limbs' soft tissue.

    Forelimbs hang from the shoulders beside the first thoracic vertebra (centre ``pT``, tangent ``uT``,
    half-height ``hdT``; ``H`` the ribcage half-width), hindlimbs from the ``acetabula`` (side -> point;
    ``uS`` the sacrum's tangent). Joint angles are random: the limbs spread out (DV) or hang below
    the body (lateral, the far side offset)."""
    parts, soft = [], []

    def bone(pts, radii, dens=1.0, hollow=0.55, flesh=None):
        """A long bone along ``pts`` (radii in mm at sk=1), with soft tissue of radii ``flesh`` around it."""
        pts = np.asarray(pts, float)
        parts.append((Tube(pts, np.asarray(radii, float) * sk, hollow=hollow), dens))
        if flesh is not None:
            soft.append(Tube(pts, np.asarray(flesh, float) * sk))

    for side in (LEFT, RIGHT):
        if dv:
            across = side * perp(uT)
            shoulder = pT + 0.5 * sk * uT + 0.55 * H * across
            scap = Blob(pT + 2.5 * sk * uT + 0.48 * H * across, 4.2 * sk, 2.0 * sk, u=turn(uT, side * 0.2), depth=0.35 * sk, hollow=0.6)
            parts.append((scap, 0.7))
            bone([shoulder, pT - 1.8 * sk * uT + 1.4 * sk * across], [0.3, 0.3])
            a_h = math.radians(rng.uniform(55, 125))
            a_f = a_h + math.radians(rng.uniform(40, 110))
            d_h = math.cos(a_h) * uT + math.sin(a_h) * across
            d_f = math.cos(a_f) * uT + math.sin(a_f) * across
            hip, ux = acetabula[side], uS
            a_fe = math.radians(rng.uniform(45, 115))
            a_ti = a_fe - math.radians(rng.uniform(40, 100))
            acr = side * perp(uS)
            d_fe = math.cos(a_fe) * ux + math.sin(a_fe) * acr
            d_ti = math.cos(a_ti) * ux + math.sin(a_ti) * acr
            offset = np.zeros(2)
        else:
            vT = perp(uT)
            shoulder = pT + 1.0 * sk * uT - (hdT + 4.5 * sk) * vT
            offset = np.zeros(2) if side == LEFT else -1.2 * sk * uT + 0.6 * sk * vT
            scap = Blob(pT + 1.5 * sk * uT + 0.5 * sk * vT + offset, 5 * sk, 2.2 * sk, u=turn(uT, -0.35), depth=0.35 * sk, hollow=0.6)
            parts.append((scap, 0.7))
            shoulder = shoulder + offset
            a_h = math.radians(rng.uniform(30, 80))
            a_f = a_h + math.radians(rng.uniform(60, 120))
            d_h = math.cos(a_h) * uT - math.sin(a_h) * vT
            d_f = math.cos(a_f) * uT - math.sin(a_f) * vT
            hip, ux, vS = acetabula[side], uS, perp(uS)
            a_fe = math.radians(rng.uniform(100, 150))
            a_ti = a_fe - math.radians(rng.uniform(90, 140))
            d_fe = math.cos(a_fe) * ux - math.sin(a_fe) * vS
            d_ti = math.cos(a_ti) * ux - math.sin(a_ti) * vS
        elbow = shoulder + 11 * sk * d_h
        bone([shoulder, (shoulder + elbow) / 2, elbow], [0.8, 0.55, 0.75], flesh=np.array([2.6, 2.3, 1.8]))
        wrist = elbow + 12 * sk * d_f
        n_f = perp(d_f) * 0.35 * sk
        bone([elbow - 1.0 * sk * d_f + n_f, wrist + n_f], [0.45, 0.36], flesh=np.array([1.8, 1.3]))
        bone([elbow - n_f, wrist - n_f], [0.4, 0.34])
        parts.append((Blob(wrist + 1.0 * sk * d_f, 1.1 * sk, 1.3 * sk, u=d_f), 0.8))
        for da in (-30, -10, 10, 30):
            dd = turn(d_f, math.radians(da))
            bone([wrist + 1.8 * sk * d_f, wrist + 1.8 * sk * d_f + 3.0 * sk * dd], [0.24, 0.18], 0.9, 0.0, flesh=np.array([0.7, 0.5]))
        parts.append((Blob(hip + offset, 1.1 * sk, 1.1 * sk), 0.9))
        knee = hip + offset + 14.5 * sk * d_fe
        bone([hip + offset, (hip + offset + knee) / 2, knee], [0.95, 0.7, 0.9], flesh=np.array([3.4, 3.0, 2.0]))
        ankle = knee + 16.5 * sk * d_ti
        bone([knee, (knee + ankle) / 2, ankle], [0.7, 0.45, 0.6], flesh=np.array([1.9, 1.5, 1.0]))
        bone([knee + 0.9 * sk * perp(d_ti), knee + 0.9 * sk * perp(d_ti) + 11 * sk * d_ti], [0.28, 0.2], 0.8, 0.0)
        d_p = turn(d_ti, math.radians(rng.uniform(-35, 35)))
        for da in (-12, -4, 4, 12):
            dd = turn(d_p, math.radians(da))
            bone([ankle + 1.2 * sk * d_p, ankle + 1.2 * sk * d_p + 7 * sk * dd, ankle + 1.2 * sk * d_p + 10 * sk * dd], [0.3, 0.25, 0.18], 0.9, 0.3,
                 flesh=np.array([1.0, 0.8, 0.5]))
        parts.append((Blob(ankle + 0.6 * sk * d_p, 1.3 * sk, 0.8 * sk, u=d_p), 0.8))
    return parts, soft
