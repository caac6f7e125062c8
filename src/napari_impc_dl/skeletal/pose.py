"""Where the mouse's head points on a radiograph, and the standard view (head up, spine vertical).

A mouse X-ray can come at any angle, mirrored or not. The regions model is trained on phantoms at
every angle, so its class map is right whatever the pose; from it:

* the **head direction** is the line from the end of the trunk (sacral vertebrae and pelvis) to the
  skull: :func:`estimate_pose` turns it into ``rotation_deg``, the counter-clockwise turn (as seen on
  screen) that takes a head-up mouse to this picture (the phantoms' ``rotation_deg``, same sign);
* **mirrored** is told by the view classifier (:mod:`.pipeline`) on the picture turned head-up: on a
  dorso-ventral view the heart and the stomach's gas lie on the mouse's left, on a lateral view the
  belly lies on one side of the spine.

:class:`Pose` maps points between the picture and the **standard view** (head up, the mouse's left on
the image's left, as IMPC curators look at a dorso-ventral image) and :func:`standard_view` resamples
the picture into it, cropped to the skeleton and scaled to a fixed side (what the view and sex
classifiers see). Rotating or mirroring the input changes the pose, not the standard view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..synthetic.xray_layout import CLS

#: region classes whose bounding box (in the standard view) frames the crop the classifiers see
FRAME_CLASSES = ("skull", "cervical", "thoracic", "lumbar", "sacral", "ribs", "pelvis")
_HEAD = (CLS["skull"],)
_TRUNK_END = (CLS["sacral"], CLS["pelvis"])
MIN_PIXELS = 12
"""Fewer pixels of skull (or of the trunk's end) than this: no pose can be read."""
REQUIRED = ("skull", "cervical", "thoracic", "lumbar", "sacral", "ribs", "pelvis")
"""A whole mouse shows each of these (at least :data:`MIN_PIXELS` pixels per 512 x 512): a picture that lacks one
is not read (another species, a part of a mouse, not an X-ray at all), never counted."""


@dataclass(frozen=True)
class Pose:
    """The pose of a mouse on one picture.

    ``rotation_deg``: the picture is the head-up mouse turned this much counter-clockwise on screen;
    ``mirrored``: and mirrored left-right before that; ``center_yx``: the pixel (row, column) about
    which the standard view is taken (the middle of the skull-to-pelvis line); ``confidence``: 0-1,
    how sure the pose is (the view classifier's probability times a penalty for a short or missing
    head-to-trunk line)."""

    rotation_deg: float
    mirrored: bool = False
    center_yx: tuple = (0.0, 0.0)
    confidence: float = 1.0
    head_yx: tuple | None = None
    """The skull's centre (picture pixels), when read from a class map."""
    tail_yx: tuple | None = None
    """The centre of the trunk's end (sacral vertebrae and pelvis), when read from a class map."""

    def _matrix(self) -> np.ndarray:
        """Standard view (x right, y down) -> picture offsets, in (x, y), before scaling."""
        th = math.radians(self.rotation_deg)
        c, s = math.cos(th), math.sin(th)
        m = np.array([[c, s], [-s, c]])
        return m @ np.diag([-1.0 if self.mirrored else 1.0, 1.0])

    def to_standard(self, yx: np.ndarray) -> np.ndarray:
        """Picture pixels ``(n, 2)`` (row, column) -> standard-view offsets from the centre ``(n, 2)`` (row, column)."""
        yx = np.asarray(yx, np.float64).reshape(-1, 2)
        d = (yx - np.asarray(self.center_yx, np.float64))[:, ::-1]  # (x, y)
        return (d @ self._matrix())[:, ::-1]  # M^-1 = M^T for a rotation-reflection

    def to_picture(self, yx: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_standard`."""
        q = np.asarray(yx, np.float64).reshape(-1, 2)[:, ::-1]
        return (q @ self._matrix().T)[:, ::-1] + np.asarray(self.center_yx, np.float64)

    def as_dict(self) -> dict:
        return {"rotation_deg": round(float(self.rotation_deg), 2), "mirrored": bool(self.mirrored),
                "center_y": round(float(self.center_yx[0]), 2), "center_x": round(float(self.center_yx[1]), 2),
                "pose_confidence": round(float(self.confidence), 4)}


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return None if ys.size < MIN_PIXELS else np.array([ys.mean(), xs.mean()])


def estimate_pose(regions: np.ndarray) -> Pose:
    """The head direction (``rotation_deg``) from a class map (values of :data:`~..synthetic.xray_layout.CLASSES`).

    Raises one :class:`InputError` when the map holds no skull or no pelvis: the picture is not a
    whole mouse the models know (another species, a part of a mouse, not an X-ray)."""
    regions = np.asarray(regions)
    need = max(3, int(round(MIN_PIXELS * regions.size / 512**2)))
    area = np.bincount(regions.ravel(), minlength=len(CLS))
    missing = [c for c in REQUIRED if area[CLS[c]] < need]
    head = _centroid(np.isin(regions, _HEAD))
    tail = _centroid(np.isin(regions, _TRUNK_END))
    if missing or head is None or tail is None:
        raise InputError(
            f"No {', '.join(missing or ['skull or pelvis'])} found on this picture: it does not look like a whole mouse, so it is not counted",
            "Give a whole-body mouse X-ray (dorso-ventral or lateral); other species or partial views need models fine-tuned on them",
        )
    dy, dx = head - tail
    length = math.hypot(dx, dy)
    rot = math.degrees(math.atan2(-dx, -dy))
    short = min(1.0, length / (0.15 * max(regions.shape)))  # a skull on top of the pelvis: no direction
    return Pose(rotation_deg=rot, mirrored=False, center_yx=tuple((head + tail) / 2), confidence=float(short), head_yx=tuple(head), tail_yx=tuple(tail))


def frame_box(pose: Pose, regions: np.ndarray, grow: float = 1.3) -> tuple[float, float, float]:
    """Centre (row, column offsets in the standard view) and side of the square that frames the skeleton:
    the bounding box of :data:`FRAME_CLASSES` in the standard view, its longer side times ``grow``."""
    mask = np.isin(regions, [CLS[c] for c in FRAME_CLASSES])
    ys, xs = np.nonzero(mask)
    if ys.size < MIN_PIXELS:
        raise InputError("No skeleton was found on this picture", "Give a whole-body mouse X-ray (dorso-ventral or lateral)")
    step = max(1, ys.size // 20000)
    q = pose.to_standard(np.stack([ys[::step], xs[::step]], 1).astype(np.float64))
    lo, hi = q.min(0), q.max(0)
    return float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), float(max(hi - lo) * grow + 4)


def standard_view(image: np.ndarray, pose: Pose, regions: np.ndarray, size: int = 128, *, order: int = 1) -> np.ndarray:
    """``image`` ``(H, W)`` or ``(C, H, W)`` resampled into the standard view of ``pose``, cropped to the
    skeleton (:func:`frame_box`) and scaled to ``size`` x ``size`` (float32; outside the picture: its minimum)."""
    from scipy import ndimage as ndi

    cy, cx, side = frame_box(pose, regions)
    scale = side / size
    m = pose._matrix()  # standard (x, y) -> picture (x, y)
    A = np.array([[m[1, 1], m[1, 0]], [m[0, 1], m[0, 0]]]) * scale  # in (row, column)
    o = (np.arange(2) * 0 + (size - 1) / 2)
    offset = np.asarray(pose.center_yx) + A @ (np.array([cy, cx]) / scale - o)
    x = np.asarray(image, np.float32)
    planes = x[None] if x.ndim == 2 else x
    out = np.stack([ndi.affine_transform(p, A, offset=offset, output_shape=(size, size), order=order, mode="constant", cval=float(p.min()))
                    for p in planes])
    return out[0] if x.ndim == 2 else out
