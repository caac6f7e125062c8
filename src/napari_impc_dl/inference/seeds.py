"""Seeds and flooding heights for models without a distance head (most Model Zoo U-Nets).

Our own models predict a normalised distance-to-edge map, and :mod:`.instances` seeds touching
objects from its peaks. Foreign models give less, and the step from their maps to instances is
where a naive pipeline cuts every nucleus in two. Three ways, chosen per model (:func:`choose_method`)
or by the user (``--instances``):

* ``distance`` with no distance channel (*distance transform*): the Euclidean distance transform of
  the foreground's *core* (the pixels above :func:`core_level`: where the model is surest, so that
  touching objects the thresholded foreground joins are often apart) is the height, smoothed by a
  Gaussian of ``radius / 8`` (jagged outlines make spurious ridge peaks); seeds are its peaks that
  are the highest within half a radius and rise above their saddle (**h-maxima**). A round object
  has one peak at any size; two touching ones keep two unless their contact is nearly as wide as
  they are. The radius comes from ``--diameter`` or :func:`estimate_size`; on the synthetic nuclei,
  this reaches F1@0.5 within 0.02-0.03 of our distance head (benchmarks/eval_foreign_instances.py).
* ``boundary`` (a foreground and a boundary / contour / edge channel): the same h-maxima, on the
  distance transform of the interiors ``foreground & boundary < seed_threshold``, grown over the
  foreground.
* ``threshold``: connected components of the foreground, no splitting (sparse objects, or a
  semantic map).

Everything here is local (smoothing, distance transform, h-maxima by morphological
reconstruction inside each foreground component), so blocks with a halo larger than a cluster of
touching objects give the whole image's seeds, as for the distance head.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

METHODS = ("distance", "boundary", "threshold")
"""What ``--instances`` accepts (``auto``: :func:`choose_method`)."""
H_FRACTION = 0.05
"""h of the h-maxima, as a share of the expected radius."""
SEED_DISTANCE_FRACTION = 0.5
"""A seed is the highest point of the smoothed distance within this share of the expected radius."""
CORE_FRACTION = 0.9
"""Where the core level sits between the foreground threshold and the foreground's 99th percentile."""
SMOOTH_FRACTION = 0.125
"""The distance transform is smoothed by a Gaussian of this share of the expected radius."""
MIN_SIZE_DIAMETER_FRACTION = 0.25
"""With a diameter, objects smaller than a disk of this share of it are dropped."""
DEFAULT_DIAMETER = 30.0
"""The diameter used when none is given and the image has no object to estimate it from."""

_EIGHT = np.ones((3, 3), bool)


def choose_method(output_names, wanted: str = "auto") -> str:
    """The internal method for a model's outputs: ``distance-head``, ``distance-transform``, ``boundary`` or ``threshold``.

    ``output_names`` are the probability maps the runnable gives (``foreground`` first, then
    ``distance`` or ``boundary`` when it has one). ``wanted`` is ``auto`` or one of :data:`METHODS`.
    """
    names = [str(n).lower() for n in output_names]
    second = names[1] if len(names) > 1 else None
    if wanted == "auto":
        wanted = "boundary" if second == "boundary" else "distance"
    if wanted == "distance":
        return "distance-head" if second == "distance" else "distance-transform"
    if wanted == "boundary":
        if second != "boundary":
            from ..errors import InputError

            raise InputError(f"--instances boundary needs a model with a boundary output (this one gives {', '.join(names)})", "Use --instances distance or threshold with this model")
        return "boundary"
    if wanted == "threshold":
        return "threshold"
    raise ValueError(f"unknown instances method {wanted!r}")


def needs_diameter(method: str) -> bool:
    """Whether a method's seeds depend on the object size."""
    return method in ("distance-transform", "boundary")


def min_area(diameter: float | None) -> int:
    """The smallest object kept for a given diameter: a disk of :data:`MIN_SIZE_DIAMETER_FRACTION` of it."""
    if not diameter:
        return 0
    return int(round(math.pi / 4 * (MIN_SIZE_DIAMETER_FRACTION * diameter) ** 2))


def edt_seeds(mask: np.ndarray, diameter: float, core: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(seeds, height)`` of the distance-transform method.

    The distance transform of ``core`` (the pixels the model is surest of, see :func:`core_level`;
    ``mask`` when not given), smoothed by a Gaussian of ``SMOOTH_FRACTION * radius``; seeds are its
    maxima that are the highest point within ``SEED_DISTANCE_FRACTION * radius`` and rise at least
    ``h`` above their saddle (h-maxima, ``h = H_FRACTION * radius``). ``seeds`` is bool, ``height``
    uint8 (the smoothed distance in steps of at most a quarter pixel, the same in every window for a
    given diameter).
    """
    from skimage.morphology import h_maxima

    core = mask if core is None else (core & mask)
    r = max(1.0, diameter / 2)
    d = ndimage.distance_transform_edt(core)
    sigma = SMOOTH_FRACTION * r
    if sigma >= 0.5:
        d = ndimage.gaussian_filter(d, sigma, truncate=3.0) * core
    scale = min(4.0, 250.0 / (1.5 * r))
    q = np.round(d * scale).astype(np.int32)  # integer levels: h-maxima are exact and reproducible
    h = max(1, int(round(H_FRACTION * r * scale)))
    rad = max(1, int(round(SEED_DISTANCE_FRACTION * r)))
    yy, xx = np.mgrid[-rad : rad + 1, -rad : rad + 1]
    highest = q >= ndimage.maximum_filter(q, footprint=(yy**2 + xx**2) <= rad**2)
    # h-maxima: regional maxima of the reconstruction of q - h under q (one connected seed per peak)
    seeds = core & (q > 0) & highest & (h_maxima(q, h) > 0)
    height = np.minimum(q, 255).astype(np.uint8)
    return seeds, height


def core_level(fg_values: np.ndarray, threshold: float) -> float:
    """The probability above which a foreground pixel is *core*: ``CORE_FRACTION`` of the way from the
    foreground threshold to the 99th percentile of the foreground (0.95 for a confident model and
    threshold 0.5). Touching objects that the foreground mask joins are often apart in the core."""
    if fg_values.size == 0:
        return threshold
    top = float(np.percentile(fg_values, 99)) / 255
    return threshold + CORE_FRACTION * max(0.0, top - threshold)


def boundary_seeds(mask: np.ndarray, boundary: np.ndarray, diameter: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(seeds, height)`` of the boundary method: the distance-transform method on the objects' interiors.

    Interiors are ``mask & boundary < threshold``: the boundary map separates touching objects, and
    the h-maxima of the interiors' distance transform keep a gap in a boundary line from merging two
    objects and a speck of noise from splitting one. The band under the boundary is flooded last,
    from the nearest interior.
    """
    interior = mask & (boundary < round(threshold * 255))
    return edt_seeds(interior, diameter)


def estimate_size(probs, windows, threshold: float, *, max_windows: int = 9) -> tuple[float | None, float]:
    """``(diameter, core level)`` of the objects in ``probs`` ``(K, H, W)`` uint8.

    The diameter is the median over objects of twice the largest distance to the edge (``None``
    when there is no object); the core level is :func:`core_level` of the foreground's values.
    Looks at up to ``max_windows`` of the postprocessing ``windows`` (spread over the image, the
    same ones whatever the tiling) and at the foreground components that lie inside them (not cut
    by a window edge). A cluster of touching objects counts with its largest member, which is what
    seed suppression needs.
    """
    H, W = probs.shape[-2:]
    pick = np.unique(np.linspace(0, len(windows) - 1, min(len(windows), max_windows)).round().astype(int))
    found: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for i in pick:
        w = windows[i]
        fg = np.asarray(probs[0, w.cy0 : w.cy1, w.cx0 : w.cx1])
        mask = fg > round(threshold * 255)
        lab, n = ndimage.label(mask, structure=_EIGHT)
        if not n:
            continue
        values.append(fg[mask])
        d = ndimage.distance_transform_edt(mask)
        peak = np.asarray(ndimage.maximum(d, lab, np.arange(1, n + 1)))
        cut = np.zeros(n + 1, bool)  # components touching a window edge that is not the image's edge
        for edge, inner in ((lab[0], w.cy0 > 0), (lab[-1], w.cy1 < H), (lab[:, 0], w.cx0 > 0), (lab[:, -1], w.cx1 < W)):
            if inner:
                cut[edge] = True
        found.append(2 * peak[~cut[1:]])
    core = core_level(np.concatenate(values) if values else np.zeros(0, np.uint8), threshold)
    vals = np.concatenate(found) if found else np.zeros(0)
    vals = vals[vals >= 2]  # single-pixel specks say nothing about size
    return (float(np.median(vals)) if vals.size else None), core
