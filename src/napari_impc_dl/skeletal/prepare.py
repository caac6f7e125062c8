"""What the skeletal classifiers learn from, made from a phantom dataset's truth with the preset's own code.

:func:`classifier_data` adds to a folder written by ``synth xray`` (``images/``, ``regions/``,
``instances/``, ``truth.csv``, ``instances.csv``):

* ``view/`` + ``view.csv`` (path, class): each picture turned head-up (the pose read from its class map
  by :func:`~.pose.estimate_pose`, as the pipeline does from the regions model's map), not un-mirrored;
  class ``dv``, ``dv_mirrored``, ``lateral`` or ``lateral_mirrored``;
* ``sex/`` + ``sex.csv``: the standard view (head up, un-mirrored); class ``female`` / ``male``;
* ``ribs.csv`` (image, label, class) over ``instances/``: ``normal``, ``misshapen`` (kinked or wavy) or
  ``fused`` (joined to a neighbour) per rib;
* ``pelvis/`` (label 1 = the convex hull of the pelvis's pixels, :func:`pelvis_object`) + ``pelvis.csv``: ``normal``, ``asymmetric`` or ``malformed``.

The crops are the same :func:`~.pose.standard_view` the pipeline feeds the classifiers, so training
and use see the same pictures. The same folder layout, made from a centre's own annotated X-rays
(class maps and instance labels), fine-tunes the classifiers on real images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..synthetic.xray_layout import CLS
from .pose import Pose, estimate_pose, standard_view

#: the object classifiers' label folders
LABEL_DIRS = {"ribs": "instances", "pelvis": "pelvis"}
CROP = 160
"""Side of the view and sex classifiers' input (pixels)."""


def rib_class(shape: str, fused_with: int) -> str:
    """A rib's class for the rib classifier."""
    if int(fused_with) > 0:
        return "fused"
    return "normal" if shape == "normal" else "misshapen"


def pelvis_class(abnormalities: str) -> str:
    names = str(abnormalities).split(";")
    return "malformed" if "pelvis_malformed" in names else "asymmetric" if "pelvis_asymmetric" in names else "normal"


def pelvis_object(regions: np.ndarray) -> np.ndarray:
    """The pelvis as one object for its classifier: label 1 on the convex hull of the pelvis's pixels (its two
    hip bones and rings are separate pieces on the picture), 0 elsewhere; all 0 without pelvis pixels."""
    from skimage.morphology import convex_hull_image

    mask = regions == CLS["pelvis"]
    if mask.sum() < 3:
        return np.zeros(regions.shape, np.uint8)
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    out = np.zeros(regions.shape, np.uint8)
    out[y0:y1, x0:x1] = convex_hull_image(mask[y0:y1, x0:x1]).astype(np.uint8)
    return out


def classifier_data(folder, *, size: int = CROP) -> dict:
    """Write the classifiers' data into ``folder`` (see the module docstring); returns rows per table."""
    import pandas as pd
    import tifffile

    from ..io.outputs import write_csv_atomic

    d = Path(folder)
    truth = pd.read_csv(d / "truth.csv")
    inst = pd.read_csv(d / "instances.csv")
    for sub in ("view", "sex", "pelvis"):
        (d / sub).mkdir(exist_ok=True)
    view_rows, sex_rows, pelvis_rows = [], [], []
    for row in truth.itertuples(index=False):
        stem = row.image
        image = tifffile.imread(d / "images" / f"{stem}.tif")
        regions = tifffile.imread(d / "regions" / f"{stem}.tif")
        pose = estimate_pose(regions)
        flipped = str(row.flipped).lower() == "true"
        up = standard_view(image, pose, regions, size)
        tifffile.imwrite(d / "view" / f"{stem}.tif", up.astype(np.float32))
        view_rows.append({"path": f"view/{stem}.tif", "class": f"{row.view}_mirrored" if flipped else row.view})
        std = standard_view(image, Pose(pose.rotation_deg, flipped, pose.center_yx), regions, size)
        tifffile.imwrite(d / "sex" / f"{stem}.tif", std.astype(np.float32))
        sex_rows.append({"path": f"sex/{stem}.tif", "class": row.sex})
        pelvis = pelvis_object(regions)
        tifffile.imwrite(d / "pelvis" / f"{stem}.tif", pelvis, compression="zlib")
        if pelvis.any():
            pelvis_rows.append({"image": stem, "label": 1, "class": pelvis_class(row.abnormalities)})
    ribs = inst[(inst["kind"] == "rib") & (inst["area_px"] > 0)]
    rib_rows = pd.DataFrame({"image": ribs["image"], "label": ribs["label"],
                             "class": [rib_class(s, f) for s, f in zip(ribs["shape"], ribs["fused_with"])]})
    tables = {"view": pd.DataFrame(view_rows), "sex": pd.DataFrame(sex_rows), "ribs": rib_rows, "pelvis": pd.DataFrame(pelvis_rows)}
    for name, df in tables.items():
        write_csv_atomic(d / f"{name}.csv", df)
    return {name: len(df) for name, df in tables.items()}


def regions_data(folder, out, *, side: int | None = None) -> None:
    """``out/images`` and ``out/masks``: the pictures and class maps of ``folder`` at the regions model's scale
    (:data:`~.scale.REGIONS_SIDE`, with :mod:`.scale`'s resampling, as the pipeline does)."""
    import tifffile

    from .scale import REGIONS_SIDE, resize_image, resize_labels, work_shape

    side = side or REGIONS_SIDE
    src, out = Path(folder), Path(out)
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for p in sorted((src / "images").iterdir()):
        x = tifffile.imread(p)
        shape = work_shape(x.shape, side)
        tifffile.imwrite(out / "images" / p.name, resize_image(x, shape))
        tifffile.imwrite(out / "masks" / p.name, resize_labels(tifffile.imread(src / "regions" / p.name), shape), compression="zlib")


def merge(folders, out) -> None:
    """One classifier dataset in ``out`` from several prepared folders (links to their files, tables joined;
    image names must differ between folders, as ``synth xray`` names them after the dataset seed)."""
    import pandas as pd

    from ..io.outputs import write_csv_atomic

    out = Path(out)
    for sub in ("images", "instances", "pelvis"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    tables: dict[str, list] = {"view": [], "sex": [], "ribs": [], "pelvis": []}
    for f in map(Path, folders):
        for sub in ("images", "instances", "pelvis"):
            for p in (f / sub).iterdir():
                link = out / sub / p.name
                if not link.exists():
                    link.symlink_to(p.resolve())
        for name in tables:
            df = pd.read_csv(f / f"{name}.csv")
            if "path" in df:
                df["path"] = [str((f / p).resolve()) for p in df["path"]]
            tables[name].append(df)
    for name, dfs in tables.items():
        write_csv_atomic(out / f"{name}.csv", pd.concat(dfs, ignore_index=True))
