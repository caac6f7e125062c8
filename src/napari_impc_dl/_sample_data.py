"""napari sample data (File > Open Sample > IMPC Deep Learning).

- **Synthetic nuclei**: the bundled 1024 x 1024 fluorescence-like image and its exact ground-truth
  labels (the image the starter ``nuclei`` model is checked on; the ground truth layer starts hidden).
- **Large synthetic nuclei**: a 4096 x 4096 image rendered into a temporary zarr folder, to try the
  large-image path (tiles read lazily, labels kept on disk).
- **Coins** / **Cell** from scikit-image (offline): real photographs of round objects / one cell.
- **Rods, nuclei and debris, annotated**: a synthetic image, its labels and each object's class, for
  trying Annotate -> Train -> Classify in two minutes.
- **Metaphase spread** / **Cells with mitosis phases** / **Tissue with fibrosis**: the bundled
  samples of the ``chromosomes``, ``cells`` and ``fibrosis`` presets (1024 x 1024, made by ``scripts/train_preset_models.py`` from seeds never
  trained on), with their ground truth (labels with each object's true class, hidden) and the
  true counts in the layer's metadata.
- **Mouse X-ray, dorso-ventral / lateral (phantom)**: the bundled synthetic radiographs of the
  ``skeletal`` workflow (Segment > skeletal), with a label per vertebra and rib as ground truth (hidden)
  and the true IMPC counts in that layer's metadata.

This module imports neither napari nor Qt.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from .errors import InputError


def nuclei() -> list[tuple]:
    """The bundled synthetic nuclei sample and its ground truth."""
    import tifffile

    from .presets import SAMPLE_IMAGE, SAMPLE_LABELS

    if not SAMPLE_IMAGE.is_file():
        raise InputError(f"The bundled sample image is missing from the installation ({SAMPLE_IMAGE})", "Reinstall napari-impc-dl")
    layers: list[tuple] = [(tifffile.imread(SAMPLE_IMAGE), {"name": "sample_nuclei"}, "image")]
    if SAMPLE_LABELS.is_file():
        layers.append((tifffile.imread(SAMPLE_LABELS), {"name": "sample_nuclei ground truth", "visible": False}, "labels"))
    return layers


def large_nuclei(size: int = 4096) -> list[tuple]:
    """A ``size`` x ``size`` synthetic nuclei image in a temporary zarr folder (removed when napari exits)."""
    import zarr

    from .synthetic import write_large_nuclei_zarr

    folder = Path(tempfile.mkdtemp(prefix="napari-impc-dl-sample-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = write_large_nuclei_zarr(folder / "large_nuclei.zarr", size, seed=7)
    return [(zarr.open_array(str(path), mode="r"), {"name": "large_nuclei"}, "image")]


def coins() -> list[tuple]:
    """scikit-image's coins (303 x 384, uint8): round bright objects on a dark background."""
    from skimage import data

    return [(data.coins(), {"name": "coins"}, "image")]


def cell() -> list[tuple]:
    """scikit-image's cell (660 x 550, uint8)."""
    from skimage import data

    return [(data.cell(), {"name": "cell"}, "image")]


def shapes() -> list[tuple]:
    """A 1024 x 1024 synthetic image of rods, nuclei and debris (about 150 objects), its labels, and every object's class in the
    labels layer's features (``class``): ready for Classify > Annotate, Train (object classification), Classify."""
    import numpy as np
    import pandas as pd

    from .synthetic.shapes import make_shapes_image

    img, lab, classes = make_shapes_image((1024, 1024), seed=2024)
    ids = np.unique(lab)
    ids = ids[ids > 0]
    features = pd.DataFrame({"index": ids, "label": ids, "class": [classes.get(int(i), "") for i in ids]})
    return [
        (img, {"name": "shapes"}, "image"),
        (lab, {"name": "shapes labels", "features": features, "metadata": {"napari_impc_dl": {"image": "shapes"}}}, "labels"),
    ]


def _preset_sample(preset: str) -> list[tuple]:
    """A preset's bundled sample image, and its true labels with the true class of every object (hidden)."""
    import pandas as pd
    import tifffile

    from .presets import DATA, PRESETS

    p = PRESETS[preset]
    image = DATA / p.sample
    if not image.is_file():
        raise InputError(f"The bundled '{preset}' sample is missing from the installation ({image})", "Reinstall napari-impc-dl")
    stem = image.stem
    img = tifffile.imread(image)
    meta = {"channel_axis": 0, "colormap": ["green", "magenta"][: img.shape[0]], "blending": "additive"} if img.ndim == 3 and img.shape[0] <= 4 else {}
    layers: list[tuple] = [(img, {"name": stem, **meta}, "image")]
    truth_labels = DATA / f"{stem}_labels.tif"
    if truth_labels.is_file():
        lab = tifffile.imread(truth_labels)
        objects_csv = DATA / f"{stem}_objects_truth.csv"
        if objects_csv.is_file():
            objects = pd.read_csv(objects_csv)
        else:  # a class map (semantic preset): one "object" per class
            from .synthetic.fibrosis import CLASSES

            objects = pd.DataFrame({"label": range(len(CLASSES)), "class": CLASSES})
        features = pd.DataFrame({"index": objects["label"], "label": objects["label"], "class": objects["class"]})
        truth = pd.read_csv(DATA / f"{stem}_truth.csv").iloc[0].to_dict()
        layers.append((lab, {"name": f"{stem} ground truth", "visible": False, "features": features, "metadata": {"truth": truth}}, "labels"))
    return layers


def chromosomes() -> list[tuple]:
    """The ``chromosomes`` preset's sample: one synthetic Giemsa-stained metaphase spread and its truth."""
    return _preset_sample("chromosomes")


def cells() -> list[tuple]:
    """The ``cells`` preset's sample: one synthetic two-channel cell field (cytoplasm, nuclei) and its truth."""
    return _preset_sample("cells")


def fibrosis() -> list[tuple]:
    """The ``fibrosis`` preset's sample: one synthetic H&E-like tissue tile (RGB) and its true class map
    (background / tissue / fibrosis, hidden), the true areas and fractions in its metadata."""
    return _preset_sample("fibrosis")


def _xray_sample(view: str) -> list[tuple]:
    """The bundled phantom X-ray of one view, and its true bone labels (hidden) with the true counts in their metadata."""
    import pandas as pd
    import tifffile

    from .presets import DATA

    stem = f"sample_xray_{view}"
    image = DATA / f"{stem}.tif"
    if not image.is_file():
        raise InputError(f"The bundled X-ray sample is missing from the installation ({image})", "Reinstall napari-impc-dl")
    layers: list[tuple] = [(tifffile.imread(image), {"name": stem, "colormap": "gray"}, "image")]
    labels, truth = DATA / f"{stem}_labels.tif", DATA / f"{stem}_truth.csv"
    if labels.is_file():
        meta = {"truth": pd.read_csv(truth).iloc[0].to_dict()} if truth.is_file() else {}
        layers.append((tifffile.imread(labels), {"name": f"{stem} ground truth", "visible": False, "metadata": meta}, "labels"))
    return layers


def xray_dv() -> list[tuple]:
    """A synthetic mouse X-ray, dorso-ventral view (the ``skeletal`` workflow), and its truth."""
    return _xray_sample("dv")


def xray_lateral() -> list[tuple]:
    """A synthetic mouse X-ray, lateral view (the ``skeletal`` workflow), and its truth."""
    return _xray_sample("lateral")
