"""One mouse radiograph through the ``skeletal`` models: pose, regions, bones, counts, sex, the IMPC values.

    analyse_xray(image, models) -> SkeletalResult

Steps (each model is a bundled starter by default, or the user's fine-tuned one, see :class:`SkeletalModels`):

1. **regions** (semantic U-Net, any orientation, on the picture resized to 256 px; the probabilities
   resized back, :mod:`.scale`): a class per pixel;
2. **pose**: the head direction from the class map (:func:`~.pose.estimate_pose`), then the **view**
   classifier on the picture turned head-up: dorso-ventral or lateral, mirrored or not. The pose is
   kept with the result (``rotation_deg``, ``mirrored``), so everything maps back onto the picture,
   which is never resampled for counting (labels stay on the original pixels);
3. **bones** (instance U-Net, on the picture resized to 512 px): its bone probability, cut by kind with the
   regions into connected pieces (:func:`~.counting.instances_by_kind`), gives a label per vertebra and rib
   (ribs per side are counted by their heads at the spine, :func:`~.counting.rib_heads`); with the regions, each becomes a vertebra
   of a spine region or a rib of a side (:mod:`.counting`);
4. **ribs** and **pelvis** classifiers: misshapen / fused ribs, asymmetric / malformed pelvis;
5. **sex** classifier on the standard view (head up, un-mirrored);
6. the IMPC values with a confidence each (:mod:`.impc`).

A picture the models cannot orient (no skull or pelvis found: another species, a partial view, not
an X-ray) gives a result with ``flag`` set and no values, never a silent wrong count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InputError
from ..synthetic.xray_layout import CLASSES
from . import counting, impc
from .models import ROLES, model_path
from .pose import Pose, estimate_pose, standard_view
from .prepare import CROP, pelvis_object
from .scale import BONES_SIDE, REGIONS_SIDE, resize_image, resize_probs, work_shape

SHAPE_THRESHOLD = 0.5
"""A rib (the pelvis) is called abnormal when its classifier's probability of an abnormal class passes this."""


@dataclass
class SkeletalModels:
    """The six models, loaded once for many pictures (:meth:`load`)."""

    regions: Any
    bones: Any
    view: Any
    sex: Any
    ribs: Any
    pelvis: Any

    @classmethod
    def load(cls, device: str = "auto", **paths) -> "SkeletalModels":
        """The bundled models, or the files given by role (``regions=PATH``, ...; e.g. fine-tuned ones)."""
        from ..classify.loading import load_classifier
        from ..inference.loading import load_model

        unknown = sorted(set(paths) - set(ROLES))
        if unknown:
            raise InputError(f"Unknown skeletal model role(s): {', '.join(unknown)}", f"Roles: {', '.join(ROLES)}")
        got = {}
        for role in ROLES:
            ref = paths.get(role) or model_path(role)
            if not paths.get(role) and not model_path(role).is_file():
                raise InputError(f"The bundled skeletal '{role}' model is missing from the installation ({model_path(role)})", "Reinstall napari-impc-dl")
            got[role] = load_model(ref, device=device) if role in ("regions", "bones") else load_classifier(ref, device=device)
        return cls(**got)

    def describe(self) -> dict:
        """Name and hash of each model (what every table row carries)."""
        return {role: {"name": m.info.name, "hash": m.info.content_hash} for role, m in vars(self).items()}


@dataclass
class SkeletalResult:
    """Everything one radiograph gave. ``regions`` / ``bones`` are label images on the input's pixels."""

    name: str
    specimen: str
    view: str | None
    pose: Pose | None
    regions: np.ndarray
    bones: np.ndarray
    table: Any  # pandas DataFrame: one row per vertebra / rib
    values: dict = field(default_factory=dict)
    """IMPC values keyed as :data:`.impc.PARAMETER_KEYS`' values (None: not measured on this view)."""
    confidence: dict = field(default_factory=dict)
    sex: str | None = None
    p_male: float | None = None
    p_view: float | None = None
    abnormal_score: float | None = None
    pixel_size_mm: float | None = None
    length_mm: float | None = None
    """Skull to pelvis (the pose line), in mm when the pixel size is known."""
    flag: str = ""
    models: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def counts_row(self) -> dict:
        """This picture's row of ``counts.csv``."""
        row = {"image": self.name, "specimen": self.specimen, "view": self.view or "", "flag": self.flag}
        if self.pose is not None:
            row.update(self.pose.as_dict())
        row.update({"p_view": self.p_view, "sex": self.sex or "", "p_male": self.p_male, "abnormal_score": self.abnormal_score,
                    "pixel_size_mm": self.pixel_size_mm, "length_mm": self.length_mm})
        for key in ("cervical", "thoracic", "lumbar", "sacral", "caudal", "ribs_left", "ribs_right", "rib_shape", "rib_fusion", "pelvis"):
            row[f"n_{key}" if key not in ("rib_shape", "rib_fusion", "pelvis") else key] = self.values.get(key)
            row[f"confidence_{key}"] = self.confidence.get(key)
        for role, m in self.models.items():
            row[f"{role}_model_hash"] = m["hash"]
        return row

    def impc_rows(self, strain: str = "C57BL/6N") -> list[dict]:
        model = {"name": "skeletal", "hash": "+".join(m["hash"][:8] for m in self.models.values())}
        return impc.long_rows(self.specimen, self.name, self.view or "", self.values, self.confidence, model, strain)


def _grey(image) -> np.ndarray:
    """The picture as one 2D float32 plane: grey, or colour whose channels are equal (a grey PNG saved as RGB)."""
    from ..io.image import ImageSource

    src = image if hasattr(image, "spatial_shape") else ImageSource.from_array(np.asarray(image), name="image")
    if src.stack_shape:
        raise InputError(f"{src.name} is a stack {src.stack_shape}; an X-ray is one 2D picture", "Save each picture as its own file")
    H, W = src.spatial_shape
    x = np.asarray(src.read((), slice(0, H), slice(0, W)), np.float32)
    if x.shape[0] > 1:
        rgb = x[:3]
        spread = float(np.abs(rgb - rgb.mean(0, keepdims=True)).mean() / (np.abs(rgb).mean() + 1e-6))
        if spread > 0.02:
            raise InputError(
                f"{src.name} is a colour picture, not an X-ray (its colour channels differ)",
                "Give the radiograph itself (greyscale: DICOM, TIFF or PNG)",
            )
    return x[0]


def analyse_xray(image, models: SkeletalModels, *, name: str = "image", specimen: str | None = None, pixel_size_mm: float | None = None,
                 progress=None, cancel=None) -> SkeletalResult:
    """Run the whole workflow on one radiograph (a path, an array or an ImageSource; see the module docstring)."""
    from ..classify.predict import classify_images, classify_objects
    from ..inference.pipeline import segment_image
    from ..io.image import ImageSource

    t0 = time.perf_counter()
    step = (lambda i, what: progress(i, 6, what)) if progress else (lambda i, what: None)
    if isinstance(image, (str,)) or hasattr(image, "__fspath__"):
        from ..io.image import open_image

        with open_image(image) as src:
            if pixel_size_mm is None and src.slide and src.slide.get("pixel_size_um"):
                pixel_size_mm = src.slide["pixel_size_um"] / 1000.0
            name = src.name
            x = _grey(src)
    else:
        x = _grey(image)
    specimen = specimen or name
    res = SkeletalResult(name=name, specimen=specimen, view=None, pose=None, regions=np.zeros(x.shape, np.uint8), bones=np.zeros(x.shape, np.uint16),
                         table=None, pixel_size_mm=pixel_size_mm, models=models.describe())
    step(0, "regions")
    xr = resize_image(x, work_shape(x.shape, REGIONS_SIDE))
    seg = segment_image(xr, models.regions, cancel=cancel)
    probs = resize_probs(np.asarray(seg.probabilities), x.shape)  # (K, H, W) uint8 on the picture's pixels
    regions = probs.argmax(0).astype(np.uint8)
    res.regions = regions
    res.timings["regions_s"] = time.perf_counter() - t0
    step(1, "pose")
    try:
        pose = estimate_pose(regions)
    except InputError as exc:
        res.flag = f"not oriented: {exc.what}"
        res.table = counting.bone_table(np.zeros(x.shape, np.int32), probs)
        return res
    up = standard_view(x, pose, regions, CROP)
    vt = classify_images(models.view, [ImageSource.from_array(up, name=name)])
    view_cls = str(vt["class"].iloc[0])
    p_view = float(vt[f"p_{view_cls}"].iloc[0])
    mirrored = view_cls.endswith("_mirrored")
    res.view = view_cls.replace("_mirrored", "")
    pose = replace(pose, mirrored=mirrored, confidence=round(pose.confidence * p_view, 4))
    res.pose, res.p_view = pose, round(p_view, 4)
    skull = np.asarray(pose.head_yx)
    res.length_mm = round(float(np.hypot(*(skull - np.asarray(pose.tail_yx)))) * pixel_size_mm, 3) if pixel_size_mm else None
    step(2, "sex")
    std = standard_view(x, pose, regions, CROP)
    st = classify_images(models.sex, [ImageSource.from_array(std, name=name)])
    res.p_male = round(float(st["p_male"].iloc[0]), 4)
    res.sex = "male" if res.p_male >= 0.5 else "female"
    step(3, "bones")
    xb = resize_image(x, work_shape(x.shape, BONES_SIDE))
    bseg = segment_image(xb, models.bones, cancel=cancel)
    fg = resize_probs(np.asarray(bseg.probabilities)[:1], x.shape)[0]
    inst = counting.instances_by_kind(fg, probs)
    table = counting.bone_table(inst, probs)
    counting.spine_regions(table, skull, counting.rib_attachments(inst, table) if res.view == "dv" else None)
    counting.rib_sides(table, pose, res.view)
    kept = np.zeros(int(inst.max()) + 1, inst.dtype)
    kept[table["label"].to_numpy(int)] = table["label"].to_numpy(int)
    res.bones = kept[inst]
    n, conf = counting.counts(table, res.view)
    if res.view == "dv":  # per side, by their heads at the spine (rib pieces overlap out in the rib cage)
        heads, head_conf = counting.rib_heads(inst, table, probs, pose, scale=max(x.shape) / BONES_SIDE)
        n.update(heads)
        conf.update(head_conf)
    step(4, "shapes")
    source = ImageSource.from_array(x, name=name)
    rib_labels = np.where(np.isin(res.bones, table.loc[table["kind"] == "rib", "label"].to_numpy()), res.bones, 0).astype(np.int32)
    rt = classify_objects(models.ribs, source, rib_labels)
    p_mis = float(rt["p_misshapen"].max()) if len(rt) else 0.0
    p_fus = float(rt["p_fused"].max()) if len(rt) else 0.0
    if len(rt):
        table = table.merge(rt[["label", "class", "p_misshapen", "p_fused"]].rename(columns={"class": "shape"}), on="label", how="left")
    pelvis = pelvis_object(regions).astype(np.int32)
    if pelvis.any():
        pt = classify_objects(models.pelvis, source, pelvis)
        p_pel = 1.0 - float(pt["p_normal"].iloc[0])
    else:
        p_pel = None
    for key, p in (("rib_shape", p_mis), ("rib_fusion", p_fus), ("pelvis", p_pel)):
        if p is None:
            n[key], conf[key] = None, 0.0
        else:
            n[key] = "abnormal" if p >= SHAPE_THRESHOLD else "normal"
            conf[key] = round(p if p >= SHAPE_THRESHOLD else 1 - p, 4)
    step(5, "table")
    if pixel_size_mm:
        table["area_mm2"] = (table["area"] * pixel_size_mm**2).round(4)
    for key in n:
        if key in conf and conf[key] is not None:
            conf[key] = round(float(conf[key]) * min(1.0, pose.confidence / 0.9 if key.startswith("ribs_") else 1.0), 4)
    res.table, res.values, res.confidence = table, n, conf
    res.abnormal_score = round(impc.abnormal_score(n, conf), 4)
    res.timings["total_s"] = time.perf_counter() - t0
    return res


__all__ = ["CLASSES", "SkeletalModels", "SkeletalResult", "analyse_xray"]
