"""Synthetic mouse X-rays (IMPC dorso-ventral and lateral views) with exact ground truth.

IMPC centres X-ray every mouse and count its ribs and vertebrae by eye (IMPC_XRY_008 to 017). A
phantom here is one such radiograph, bone bright on a dark field (attenuation, as X-rays are shown),
soft tissue mid-grey, with the truth a counting or segmentation model is trained and scored on:

* **the mouse** (:mod:`.xray_anatomy`): female or male, 18-34 g (males bigger, the soft tissue
  wider with weight); a normal C57BL/6N skeleton (7 cervical, 13 thoracic with 13 rib pairs,
  6 lumbar, 4 pelvic, 26-31 caudal vertebrae), or with probability ``p_abnormal`` one or two of
  :data:`ABNORMALITIES` (rib counts, fused or misshapen ribs, vertebra counts, pelvis);
* **the skeleton** (:mod:`.xray_layout`): skull and mandible, a smoothly curving spine of separate
  vertebrae (shrinking along the curled tail), curved ribs, pelvis, scapulae and limb bones, inside
  a soft-tissue outline; ``view="lateral"`` shows it from the side;
* **the acquisition** (here): any rotation (up to ``rotation_range`` degrees), a left-right mirror
  half the time, a zoom and position that can crop the soft tissue and limbs but, unless
  ``allow_cut``, never the skull, spine, ribs or pelvis; detector blur, low-frequency scatter haze,
  exposure (gain), photon (Poisson-like) and read (Gaussian) noise, and a calibration marker (a
  metal disc or a ruler with mm marks) on free background.

Ground truth of :class:`XrayPhantom`: ``regions`` (values = :data:`CLASSES`), ``instances`` (one
label per vertebra and per rib; the table ``objects`` says what each is), the counts of each IMPC
parameter (``impc``, keyed by stable id; ``impc_named`` by its IMPReSS name), sex, view, the pose
applied (``rotation_deg``, ``flipped``: see :class:`~.xray_shapes.Frame`), ``pixel_size_mm``, and
``normal`` with the ``abnormalities``. The same ``seed`` gives the same mouse in both views.

Size: the whole mouse, curled tail included, fits the frame, so at 512 px a pixel is about 0.3-0.45 mm
and a 512 px phantom takes about 0.2 s. At 256 px the last caudal vertebrae shrink to 1-2 pixels
(still labelled, but hard to count): use 384 px or more where caudal counts matter.

    make_xray_phantom(seed, view, size, ...)      -> XrayPhantom
    write_xray_dataset(out, n, size, seed, view)   -> images/, regions/, instances/, truth.csv, instances.csv, classes.csv
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ._args import number as _number
from .nuclei import _atomic_tif, dataset_image_seed
from .xray_anatomy import ABNORMALITIES, NORMAL_COUNTS, draw_anatomy
from .xray_layout import CLASSES, CLS, layout
from .xray_shapes import Frame

__all__ = [
    "CLASSES", "VIEWS", "ABNORMALITIES", "IMPC_PARAMETERS", "NORMAL_COUNTS", "TRUTH_COLUMNS", "INSTANCE_COLUMNS",
    "XrayPhantom", "make_xray_phantom", "write_xray_dataset",
]

VIEWS = ("dv", "lateral")

IMPC_PARAMETERS = {
    "IMPC_XRY_008_001": "Number of ribs right",
    "IMPC_XRY_009_001": "Number of ribs left",
    "IMPC_XRY_010_001": "Shape of ribs",
    "IMPC_XRY_011_001": "Fusion of ribs",
    "IMPC_XRY_012_001": "Pelvis",
    "IMPC_XRY_013_001": "Number of cervical vertebrae",
    "IMPC_XRY_014_001": "Number of thoracic vertebrae",
    "IMPC_XRY_015_001": "Number of lumbar vertebrae",
    "IMPC_XRY_016_001": "Number of pelvic vertebrae",
    "IMPC_XRY_017_001": "Number of caudal vertebrae",
}
"""The IMPC X-ray parameters a phantom's truth gives, stable id -> IMPReSS name. Counts are integers;
shape of ribs, fusion of ribs and pelvis are ``"normal"`` or ``"abnormal"``."""

TRUTH_COLUMNS = (
    "image", "specimen", "view", "sex", "weight_g", "normal", "abnormalities", "rotation_deg", "flipped", "pixel_size_mm",
    "marker", "marker_size_mm", *IMPC_PARAMETERS,
)
"""``truth.csv``: one row per image; ``abnormalities`` is ``;``-separated names or ``none``."""

INSTANCE_COLUMNS = (
    "image", "label", "kind", "region", "side", "index", "number", "vertebra", "shape", "fused_with", "area_px", "centroid_y", "centroid_x",
)
"""``instances.csv``: one row per label of ``instances/``. ``kind`` vertebra or rib; ``region`` the
class name its pixels have in ``regions/`` (``ribs`` for ribs); ``side`` left / right (ribs; empty for
vertebrae; anatomical, whatever the mirror); ``index`` the vertebra's place along the spine from the
skull (1 = C1) or the rib's number on its side (1 = most cranial); ``number`` the place within the
region (T5 -> 5); ``vertebra`` the label of the vertebra a rib joins; ``shape`` normal / kinked / wavy;
``fused_with`` the label of the rib it is fused to (0: none); ``area_px`` pixels in view."""


@dataclass(frozen=True)
class XrayPhantom:
    """One radiograph and its truth (see the module docstring)."""

    image: np.ndarray
    """``(size, size)`` uint16, bone bright."""
    regions: np.ndarray
    """``(size, size)`` uint8, values index :data:`CLASSES`."""
    instances: np.ndarray
    """``(size, size)`` uint16: 0 none, else the ``label`` of a vertebra or rib."""
    objects: tuple
    """One dict per instance, the columns of :data:`INSTANCE_COLUMNS` but ``image``."""
    view: str
    sex: str
    weight_g: float
    normal: bool
    abnormalities: tuple
    counts: dict
    """cervical, thoracic, lumbar, sacral, caudal, ribs_left, ribs_right."""
    impc: dict
    """IMPC parameter stable id -> value (see :data:`IMPC_PARAMETERS`)."""
    rotation_deg: float
    flipped: bool
    pixel_size_mm: float
    marker: dict
    """``kind`` (disc / ruler / none), ``size_mm`` (diameter or length), ``center_yx`` (pixels)."""
    seed: int

    @property
    def impc_named(self) -> dict:
        """The IMPC values keyed by the parameters' readable names."""
        return {IMPC_PARAMETERS[k]: v for k, v in self.impc.items()}

    def table(self, image: str = ""):
        """The instance table as a pandas DataFrame (columns :data:`INSTANCE_COLUMNS`)."""
        import pandas as pd

        return pd.DataFrame([{"image": image, **o} for o in self.objects], columns=list(INSTANCE_COLUMNS))

    def truth_row(self, image: str = "", specimen: str = "") -> dict:
        """This image's row of ``truth.csv``."""
        return {
            "image": image, "specimen": specimen, "view": self.view, "sex": self.sex, "weight_g": self.weight_g, "normal": self.normal,
            "abnormalities": ";".join(self.abnormalities) or "none", "rotation_deg": self.rotation_deg, "flipped": self.flipped,
            "pixel_size_mm": self.pixel_size_mm, "marker": self.marker["kind"], "marker_size_mm": self.marker["size_mm"], **self.impc,
        }


def _check(size, seed, view, p_abnormal, exposure, noise, body_scale, rotation_range) -> tuple:
    try:
        size, seed = int(size), int(seed)
    except (TypeError, ValueError):
        raise InputError(f"size {size!r} or seed {seed!r} is not a whole number", "Give integers, e.g. size=512, seed=0") from None
    if size < 128:
        raise InputError(f"image size {size} is too small for an X-ray phantom", "Use 128 px or more (512 is the default; 256 the least where tail vertebrae stay apart)")
    if seed < 0:
        raise InputError(f"seed {seed} is negative", "Use a seed >= 0")
    if view not in VIEWS:
        raise InputError(f"unknown view {view!r}", f"Choose one of: {', '.join(VIEWS)}")
    return (size, seed, _number("p_abnormal", p_abnormal, 0, 1, low_ok=True), _number("exposure", exposure, 0, 10),
            _number("noise", noise, 0, 10, low_ok=True), _number("body_scale", body_scale, 0.25, 4),
            _number("rotation_range", rotation_range, 0, 180, low_ok=True))


def _fit(scene, size: int, rng, rotation_range: float, allow_cut: bool) -> Frame:
    """Pose and frame: random rotation and mirror, then a zoom and position that keep the protected
    bones inside (unless ``allow_cut``)."""
    rot = float(rng.uniform(-rotation_range, rotation_range))
    flipped = bool(rng.random() < 0.5)
    fr = Frame(size, rot, flipped)
    reach = [s.reach() for s in scene.protected]
    pts = fr.display_mm(np.concatenate([p for p, _ in reach]))
    rad = np.concatenate([r for _, r in reach])[:, None]
    lo, hi = (pts - rad).min(0), (pts + rad).max(0)
    margin = 3
    fill = rng.uniform(0.85, 1.5) if allow_cut else rng.uniform(0.72, 0.95)
    pix = float((hi - lo).max() / (fill * (size - 2 * margin)))
    slack = size - 2 * margin - (hi - lo) / pix
    start = margin + np.array([rng.uniform(min(0, s), max(0, s)) for s in slack])
    return Frame(size, rot, flipped, pix, start - lo / pix)


def _render(scene, fr: Frame, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Attenuation (soft tissue + bone), regions and instances; the pixel centre of each label's last part."""
    soft = np.zeros((size, size), np.float32)
    att = np.zeros((size, size), np.float32)
    regions = np.zeros((size, size), np.uint8)
    inst = np.zeros((size, size), np.uint16)
    for shp in scene.soft:
        win = fr.window(shp)
        if win is None:
            continue
        inside, chord = shp.field(*fr.grid(*win))
        np.maximum(soft[win], chord, out=soft[win])
        regions[win][inside] = CLS["soft_tissue"]
    centres = {}
    for b in scene.bones:
        win = fr.window(b.shape)
        if b.label:
            centres[b.label] = fr.to_pixels(b.shape.reach()[0][:1])[0]
        if win is None:
            continue
        inside, chord = b.shape.field(*fr.grid(*win))
        att[win] += np.float32(0.55 * b.density) * chord
        regions[win][inside] = b.cls
        inst[win][inside] = b.label
    att += np.float32(0.028) * soft
    return att, regions, inst, centres


def _marker(rng, regions: np.ndarray, att: np.ndarray, pix: float) -> dict:
    """A metal calibration disc (3, 5 or 8 mm) or a ruler (5 mm marks) on free background, painted into ``regions``
    and ``att``; kind ``none`` when no free spot fits."""
    size = regions.shape[0]
    kind = "disc" if rng.random() < 0.6 else "ruler"
    if kind == "disc":
        d_mm = float(rng.choice([3.0, 5.0, 8.0]))
        r = max(1.5, d_mm / 2 / pix)
        h = w = int(math.ceil(2 * r)) + 3
    else:
        d_mm = float(rng.choice([20.0, 30.0]))
        along, across = max(8, int(round(d_mm / pix))), max(3, int(round(2.5 / pix)))
        horizontal = rng.random() < 0.5
        h, w = (across, along) if horizontal else (along, across)
    for _ in range(80):
        if h + 4 > size or w + 4 > size:
            break
        y0, x0 = int(rng.integers(2, size - h - 1)), int(rng.integers(2, size - w - 1))
        if regions[y0 - 2 : y0 + h + 2, x0 - 2 : x0 + w + 2].any():
            continue
        win = (slice(y0, y0 + h), slice(x0, x0 + w))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        if kind == "disc":
            rho = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) / r
            inside = rho < 1
            a = 4.0 * np.clip((1 - rho) * r + 0.5, 0, 1)  # a flat metal disc, anti-aliased edge
        else:
            inside = np.ones((h, w), bool)
            pos = (xx if horizontal else yy) * pix  # mm along the ruler
            minor = np.abs(pos - np.round(pos)) < 0.5 * pix
            major = np.abs(pos / 5 - np.round(pos / 5)) * 5 < 0.5 * pix
            a = np.float32(0.12) + 0.6 * minor + 1.0 * major
        att[win] += a.astype(np.float32)
        regions[win][inside] = CLS["marker"]
        return {"kind": kind, "size_mm": d_mm, "center_yx": (y0 + (h - 1) / 2, x0 + (w - 1) / 2)}
    return {"kind": "none", "size_mm": 0.0, "center_yx": None}


def _expose(rng, att: np.ndarray, exposure: float, noise: float) -> np.ndarray:
    """Attenuation -> displayed uint16: detector blur, scatter haze, exposure gain, photon and read noise."""
    size = att.shape[0]
    sig = 1 - np.exp(-att)
    sig = ndi.gaussian_filter(sig, rng.uniform(0.4, 0.9))
    small = ndi.zoom(sig, 1 / 8, order=1)
    haze = ndi.zoom(ndi.gaussian_filter(small, small.shape[0] / 10), (size / small.shape[0], size / small.shape[1]), order=1)[:size, :size]
    s = rng.uniform(0.05, 0.3)
    sig = (sig + s * haze) / (1 + 0.5 * s)
    g = rng.uniform(-0.04, 0.04, 2)
    yy, xx = np.ogrid[0:size, 0:size]
    level = exposure * rng.uniform(38000, 52000) * (1 + g[0] * (yy / size - 0.5) + g[1] * (xx / size - 0.5))
    quanta = rng.uniform(1500, 4000) * exposure  # photons per unit signal
    out = sig.astype(np.float32)
    if noise > 0:
        out = out + (noise * np.sqrt(out * quanta + 4) / quanta).astype(np.float32) * rng.standard_normal(out.shape, dtype=np.float32)
    out = rng.uniform(600, 2500) + level * out
    if noise > 0:
        out = out + noise * rng.uniform(40, 120) * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)


def make_xray_phantom(
    seed: int = 0, view: str = "dv", size: int = 512, *, p_abnormal: float = 0.3, abnormalities=None, counts=None,
    exposure: float = 1.0, noise: float = 1.0, body_scale: float = 1.0, rotation_range: float = 180.0, allow_cut: bool = False,
) -> XrayPhantom:
    """One ``size`` x ``size`` radiograph of the mouse of ``seed`` in ``view`` ("dv" or "lateral").

    ``p_abnormal`` (0-1): how often the mouse has an abnormality; ``abnormalities``: exactly these
    names of :data:`ABNORMALITIES` instead (``[]`` = a normal mouse); ``counts``: set counts outright,
    e.g. ``{"ribs_left": 14}`` (keys cervical, thoracic, lumbar, sacral, caudal, ribs_left,
    ribs_right; the abnormalities follow from them). Shifts for held-out sets: ``exposure`` x the
    gain (brighter), ``noise`` x the noise (0 = none), ``body_scale`` x the soft tissue's width,
    ``rotation_range`` the largest rotation in degrees (0 = head up), ``allow_cut`` lets the frame
    crop anything (counts still describe the whole mouse; ``area_px`` what is in view).
    """
    size, seed, p_abnormal, exposure, noise, body_scale, rotation_range = _check(size, seed, view, p_abnormal, exposure, noise, body_scale, rotation_range)
    an = draw_anatomy(np.random.default_rng([seed, 0x58]), p_abnormal, abnormalities, counts)
    scene = layout(an, view, body_scale)
    rng = np.random.default_rng([seed, VIEWS.index(view) + 1, 0x41])
    fr = _fit(scene, size, rng, rotation_range, bool(allow_cut))
    att, regions, inst, centres = _render(scene, fr, size)
    n = len(scene.objects)
    area = np.bincount(inst.ravel(), minlength=n + 1)
    for lab in np.flatnonzero(area[1:] == 0) + 1:  # a part too small to cover a pixel centre: its nearest pixel
        x, y = np.rint(centres[int(lab)]).astype(int)
        if 0 <= x < size and 0 <= y < size and inst[y, x] == 0:
            row = scene.objects[lab - 1]
            regions[y, x] = CLS[row["region"]]
            inst[y, x] = lab
    marker = _marker(rng, regions, att, fr.pixel_size_mm)
    image = _expose(rng, att, exposure, noise)
    area = np.bincount(inst.ravel(), minlength=n + 1).astype(np.int64)
    yy, xx = np.indices(inst.shape)
    cy = np.bincount(inst.ravel(), yy.ravel(), minlength=n + 1) / np.maximum(area, 1)
    cx = np.bincount(inst.ravel(), xx.ravel(), minlength=n + 1) / np.maximum(area, 1)
    objects = tuple({**o, "area_px": int(area[o["label"]]), "centroid_y": round(float(cy[o["label"]]), 2), "centroid_x": round(float(cx[o["label"]]), 2)}
                    for o in scene.objects)
    c = an.counts
    ab = an.abnormalities
    impc = {
        "IMPC_XRY_008_001": c["ribs_right"], "IMPC_XRY_009_001": c["ribs_left"],
        "IMPC_XRY_010_001": "abnormal" if "rib_shape" in ab else "normal",
        "IMPC_XRY_011_001": "abnormal" if "rib_fusion" in ab else "normal",
        "IMPC_XRY_012_001": "abnormal" if an.pelvis != "normal" else "normal",
        "IMPC_XRY_013_001": c["cervical"], "IMPC_XRY_014_001": c["thoracic"], "IMPC_XRY_015_001": c["lumbar"],
        "IMPC_XRY_016_001": c["sacral"], "IMPC_XRY_017_001": c["caudal"],
    }
    return XrayPhantom(
        image=image, regions=regions, instances=inst, objects=objects, view=view, sex=an.sex, weight_g=an.weight_g,
        normal=not ab, abnormalities=ab, counts=dict(c), impc=impc, rotation_deg=round(fr.rotation_deg, 3), flipped=fr.flipped,
        pixel_size_mm=round(fr.pixel_size_mm, 6), marker=marker, seed=seed,
    )


def write_xray_dataset(
    out_dir, n: int, *, size: int = 512, seed: int = 0, view: str = "dv", p_abnormal: float = 0.3, exposure: float = 1.0,
    noise: float = 1.0, body_scale: float = 1.0, rotation_range: float = 180.0, allow_cut: bool = False, abnormalities=None, progress=None,
) -> list[pathlib.Path]:
    """Write ``n`` mice (``view`` "dv", "lateral" or "both": both views of each mouse); returns the image paths.

    ``images/xray_<seed>_<i:04d>_<view>.tif`` (uint16), ``regions/`` (uint8 class maps, same names),
    ``instances/`` (uint16 labels), ``truth.csv`` (:data:`TRUTH_COLUMNS`, one row per image),
    ``instances.csv`` (:data:`INSTANCE_COLUMNS`, one row per vertebra and rib of every image) and
    ``classes.csv`` (value, name of each region class). ``abnormalities``: every mouse gets exactly these
    (names of :data:`ABNORMALITIES`; e.g. a set of rare kinds to train a classifier on). The other
    arguments as :func:`make_xray_phantom`.
    """
    import pandas as pd

    from ..io.outputs import write_csv_atomic

    try:
        n = int(n)
    except (TypeError, ValueError):
        raise InputError(f"number of images {n!r} is not a whole number", "Give an integer >= 1") from None
    if n < 1:
        raise InputError(f"number of images {n} is below 1", "Ask for 1 or more images")
    if view not in (*VIEWS, "both"):
        raise InputError(f"unknown view {view!r}", "Choose dv, lateral or both")
    views = VIEWS if view == "both" else (view,)
    _check(size, seed, views[0], p_abnormal, exposure, noise, body_scale, rotation_range)
    out = pathlib.Path(out_dir)
    try:
        for d in ("images", "regions", "instances"):
            (out / d).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write to {out} ({exc.strerror or exc})", "Choose a folder you can write to") from exc
    rows, tables, paths = [], [], []
    kw = dict(p_abnormal=p_abnormal, exposure=exposure, noise=noise, body_scale=body_scale, rotation_range=rotation_range, allow_cut=allow_cut,
              abnormalities=None if abnormalities is None else list(abnormalities))
    for i in range(n):
        specimen = f"xray_{seed}_{i:04d}"
        for v in views:
            ph = make_xray_phantom(dataset_image_seed(seed, i) % 2**63, v, size, **kw)
            stem = f"{specimen}_{v}"
            try:
                _atomic_tif(out / "images" / f"{stem}.tif", ph.image)
                _atomic_tif(out / "regions" / f"{stem}.tif", ph.regions, compression="zlib")
                _atomic_tif(out / "instances" / f"{stem}.tif", ph.instances, compression="zlib")
            except OSError as exc:
                raise InputError(f"cannot write the X-ray dataset to {out} ({exc.strerror or exc})", "Choose a folder you can write to, with free disk space") from exc
            rows.append(ph.truth_row(stem, specimen))
            tables.append(ph.table(stem))
            paths.append(out / "images" / f"{stem}.tif")
        if progress is not None:
            progress(i + 1, n)
    write_csv_atomic(out / "truth.csv", pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)))
    write_csv_atomic(out / "instances.csv", pd.concat(tables, ignore_index=True))
    write_csv_atomic(out / "classes.csv", pd.DataFrame({"value": range(len(CLASSES)), "name": list(CLASSES)}))
    return paths
