"""Training data: what the user gives, checked, loaded and split by image.

    segmentation_pairs       folders images/ + masks/ (matched by name), or (image, mask) pairs (napari layers)
    classification_images    a folder per class, or a CSV ``path,class``          (image level)
    classification_objects   images + instance masks + a CSV ``image,label,class`` (object level)
    split_by_image           the validation split: by image, reproducible from the seed, every class on both sides

Every problem is one :class:`~napari_impc_dl.errors.InputError` naming the file and what to do,
raised before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io.image import ImageSource, image_name, open_image

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy", ".zarr")


@dataclass
class Sample:
    """One training image: ``image`` ``(C, H, W)`` (its own dtype), ``mask`` ``(H, W)`` int32 instance labels
    (segmentation and object level), ``cls`` the class (image level), ``objects`` label id -> class (object level)."""

    name: str
    image: np.ndarray
    mask: np.ndarray | None = None
    cls: str | None = None
    objects: dict[int, str] = field(default_factory=dict)


def _files(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"The {role} folder '{folder}' does not exist", f"Give an existing folder of {role}")
    found = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        found.setdefault(image_name(p), p)
    if not found:
        raise InputError(f"The {role} folder '{folder}' holds no images", f"Put {role} there (tif, png, jpg, npy, zarr)")
    return found


def _read_image(src: ImageSource) -> np.ndarray:
    if src.stack_shape:
        raise InputError(f"'{src.path or src.name}' is a stack {src.stack_shape}; training takes 2D images", "Save each plane as its own file")
    H, W = src.spatial_shape
    return src.read((), slice(0, H), slice(0, W))


def check_mask(mask: np.ndarray, shape: tuple[int, int], where: str, *, semantic: bool = False) -> np.ndarray:
    """An instance mask as int32, or one clear error (float, wrong shape, negative ids, one id for many objects).

    ``semantic``: a class map (pixel value = class index), where one value over many regions is expected."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dtype.kind not in "biu":
        raise InputError(f"The mask {where} is {mask.dtype}, not an instance mask", "Save masks as integer labels: 0 background, 1..n one id per object")
    if mask.shape != tuple(shape):
        raise InputError(f"The mask {where} is {mask.shape[0]} x {mask.shape[1] if mask.ndim > 1 else '?'} but its image is {shape[0]} x {shape[1]}", "Give the mask drawn on this very image (same height and width)")
    if mask.dtype.kind == "i" and mask.size and mask.min() < 0:
        raise InputError(f"The mask {where} has negative ids", "Use 0 for background and 1..n for objects")
    m = mask.astype(np.int32)
    if m.size and m.max() == 1 and not semantic:
        from scipy import ndimage

        n = ndimage.label(m)[1]
        if n > 1:
            raise InputError(f"The mask {where} is binary: {n} separate objects all have id 1", "Give instance masks (one id per object), e.g. skimage.measure.label(mask)")
    return m


def segmentation_pairs(images: str | os.PathLike | Sequence, masks: str | os.PathLike | None = None, *, channel: int | None = None, semantic: bool = False) -> list[Sample]:
    """Image / instance-mask pairs from two folders (matched by file name) or from a list of ``(image, mask)`` arrays.

    ``semantic``: the masks are class maps (0..K-1), not instance labels."""
    out: list[Sample] = []
    if masks is None:  # a list of pairs (napari layers): images (H, W) or (C, H, W)
        for i, pair in enumerate(images):
            img, m = pair[0], pair[1]
            name = pair[2] if len(pair) > 2 else f"pair {i + 1}"
            src = ImageSource.from_array(np.asarray(img), name=name)
            x = _select(_read_image(src), channel, name)
            out.append(Sample(name, x, check_mask(m, x.shape[1:], f"of '{name}'", semantic=semantic)))
        if not out:
            raise InputError("No training images were given", "Add at least one image with its mask")
        return out
    imgs, msks = _files(Path(images), "images"), _files(Path(masks), "masks")
    missing = sorted(set(imgs) - set(msks))
    extra = sorted(set(msks) - set(imgs))
    if missing or extra:
        what = []
        if missing:
            what.append(f"{len(missing)} image(s) without a mask ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if extra:
            what.append(f"{len(extra)} mask(s) without an image ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
        raise InputError(f"Images in '{images}' and masks in '{masks}' do not pair up: " + "; ".join(what), "Give every image a mask with the same file name")
    for name in sorted(imgs):
        with open_image(imgs[name]) as src:
            x = _select(_read_image(src), channel, str(imgs[name]))
        with open_image(msks[name], channel_axis=None) as ms:
            m = _read_image(ms)
        out.append(Sample(name, x, check_mask(m, x.shape[1:], f"'{msks[name]}'", semantic=semantic)))
    return out


def _select(x: np.ndarray, channel: int | None, where: str) -> np.ndarray:
    if channel is None:
        return x
    if channel >= x.shape[0]:
        raise InputError(f"{where} has {x.shape[0]} channel(s); channel {channel} does not exist", f"Choose 0..{x.shape[0] - 1}")
    return x[channel : channel + 1]


def _read_csv(path: Path, columns: Sequence[str]):
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"Cannot read the CSV '{path}' ({type(exc).__name__}: {str(exc)[:120]})", "Save it as comma-separated text with a header row") from None
    df.columns = [c.strip().lower() for c in df.columns]
    lacking = [c for c in columns if c not in df.columns]
    if lacking:
        raise InputError(f"The CSV '{path}' lacks the column(s) {', '.join(lacking)} (it has {', '.join(df.columns)})", f"Give a header row with {','.join(columns)}")
    df = df[[*columns]].apply(lambda s: s.str.strip())
    df = df[df["class"] != ""]  # unassigned rows (napari: not annotated yet)
    if not len(df):
        raise InputError(f"The CSV '{path}' has no rows with a class", "Assign a class to some rows")
    return df


def classification_images(data: str | os.PathLike | Sequence, *, channel: int | None = None) -> list[Sample]:
    """Image-level samples from a folder per class (``DATA/<class>/*.tif``), a CSV ``path,class``
    (paths relative to the CSV's folder), or a list of ``(image array, class[, name])``."""
    out: list[Sample] = []
    if not isinstance(data, (str, os.PathLike)):
        for i, item in enumerate(data):
            name = item[2] if len(item) > 2 else f"image {i + 1}"
            src = ImageSource.from_array(np.asarray(item[0]), name=name)
            out.append(Sample(name, _select(_read_image(src), channel, name), cls=str(item[1])))
        return _check_classes(out, "the given images")
    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".csv":
        df = _read_csv(path, ["path", "class"])
        items = [((path.parent / p) if not Path(p).is_absolute() else Path(p), c) for p, c in zip(df["path"], df["class"])]
    elif path.is_dir():
        subdirs = [d for d in sorted(path.iterdir()) if d.is_dir() and not d.name.startswith(".") and not d.name.lower().endswith(".zarr")]
        if not subdirs:
            raise InputError(f"'{path}' has no class folders", "Put the images of each class in a folder named after the class (DATA/male/*.tif, DATA/female/*.tif), or give a CSV path,class")
        items = []
        for d in subdirs:
            files = [p for p in sorted(d.iterdir()) if not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)]
            if not files:
                raise InputError(f"The class folder '{d}' holds no images", "Add images of that class or remove the folder")
            items += [(p, d.name) for p in files]
    else:
        raise InputError(f"'{path}' is neither a folder of class folders nor a CSV file", "Give DATA/ with one folder per class, or a CSV with columns path,class")
    for p, c in items:
        with open_image(p) as src:
            out.append(Sample(f"{c}/{src.name}" if path.is_dir() else src.name, _select(_read_image(src), channel, str(p)), cls=c))
    return _check_classes(out, f"'{path}'")


def classification_objects(
    classes: str | os.PathLike | Sequence, images: str | os.PathLike | None = None, labels: str | os.PathLike | None = None, *, channel: int | None = None
) -> list[Sample]:
    """Object-level samples: a CSV ``image,label,class`` with folders of images and instance masks
    (matched by file name), or a list of ``(image, labels, {label: class}[, name])`` (napari layers)."""
    out: list[Sample] = []
    if not isinstance(classes, (str, os.PathLike)):
        for i, item in enumerate(classes):
            name = item[3] if len(item) > 3 else f"image {i + 1}"
            src = ImageSource.from_array(np.asarray(item[0]), name=name)
            x = _select(_read_image(src), channel, name)
            m = check_mask(item[1], x.shape[1:], f"of '{name}'")
            out.append(Sample(name, x, m, objects=_objects_present({int(k): str(v) for k, v in item[2].items() if str(v)}, m, name)))
        return _check_classes(out, "the given layers")
    if images is None or labels is None:
        raise InputError("Object classification from a CSV needs --images DIR and --labels DIR as well", "Give the folders of the images and of their label images")
    df = _read_csv(Path(classes), ["image", "label", "class"])
    imgs, labs = _files(Path(images), "images"), _files(Path(labels), "label images")
    for name, rows in df.groupby("image", sort=True):
        key = image_name(Path(name))
        if key not in imgs or key not in labs:
            where = "images" if key not in imgs else "label images"
            raise InputError(f"The CSV '{classes}' names image '{name}', which is not among the {where} in '{images if key not in imgs else labels}'", "Fix the name in the CSV or add the file")
        try:
            ids = [int(v) for v in rows["label"]]
        except ValueError:
            raise InputError(f"The CSV '{classes}' has a label that is not an integer for image '{name}'", "The label column holds object ids (1, 2, ...)") from None
        with open_image(imgs[key]) as src:
            x = _select(_read_image(src), channel, str(imgs[key]))
        with open_image(labs[key], channel_axis=None) as ls:
            m = check_mask(_read_image(ls), x.shape[1:], f"'{labs[key]}'")
        out.append(Sample(key, x, m, objects=_objects_present(dict(zip(ids, rows["class"])), m, f"'{labs[key]}'")))
    return _check_classes(out, f"'{classes}'")


def _objects_present(objects: dict[int, str], mask: np.ndarray, where: str) -> dict[int, str]:
    present = np.zeros(int(mask.max()) + 1, bool)
    present[np.unique(mask)] = True
    absent = [k for k in objects if k <= 0 or k >= present.size or not present[k]]
    if absent:
        raise InputError(f"{len(absent)} annotated label id(s) do not exist in the mask {where} (e.g. {absent[:3]})", "Annotate objects of this very label image")
    return objects


def class_counts(samples: list[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        for c in ([s.cls] if s.cls is not None else s.objects.values()):
            counts[c] = counts.get(c, 0) + 1
    return counts


def _check_classes(samples: list[Sample], where: str) -> list[Sample]:
    counts = class_counts(samples)
    if not samples or not counts:
        raise InputError(f"No annotated examples in {where}", "Give images (or objects) with their classes")
    if len(counts) < 2:
        raise InputError(f"Only one class ('{next(iter(counts))}') in {where}", "A classifier needs at least two classes: add examples of another class")
    shapes = {s.image.shape[0] for s in samples}
    if len(shapes) > 1:
        raise InputError(f"The images in {where} have different channel counts ({sorted(shapes)})", "Give images with the same channels, or pick one with --channel")
    return samples


def split_by_image(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out about ``fraction`` of the examples, whole images at a time (crops of one image never sit on
    both sides), with every class in the validation set and still in the training set; reproducible from ``seed``."""
    if len(samples) == 1 and samples[0].objects:
        return _split_one_image(samples[0], fraction)
    if len(samples) < 2:
        raise InputError("There is only one training image, so no image is left to validate on", "Add images, or give a validation set with --val DIR")
    rng = np.random.default_rng([seed, 0x5B1])
    order = list(rng.permutation(len(samples)))
    classes = set(class_counts(samples))
    weight = [max(1, len(s.objects)) if s.cls is None else 1 for s in samples]
    total = sum(weight)
    target = max(1.0, fraction * total)
    val: list[int] = []
    # first one image per class not yet seen in validation, then up to the target size
    for c in sorted(classes) if any(s.cls is not None or s.objects for s in samples) else []:
        if any(_has(samples[i], c) for i in val):
            continue
        for i in order:
            if i not in val and _has(samples[i], c):
                val.append(i)
                break
    for i in order:
        if sum(weight[j] for j in val) >= target:
            break
        if i not in val:
            val.append(i)
    train = [s for i, s in enumerate(samples) if i not in val]
    held = [samples[i] for i in sorted(val)]
    lacking = sorted(classes - set(class_counts(train))) if train else sorted(classes)
    if not train or lacking:
        raise InputError(
            f"Holding out one image per class leaves no training example of {', '.join(lacking) if lacking else 'any class'}",
            "Add images of every class (at least two images per class), or give a validation set with --val DIR",
        )
    return train, held


def _split_one_image(s: Sample, fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Objects of a single annotated image: the validation set is the band of objects furthest right (by
    centroid), grown until it holds ``fraction`` of them and every class, so neighbouring crops rarely
    sit on both sides (what annotating one image in napari gives)."""
    from scipy import ndimage

    ids = np.array(sorted(s.objects), np.int64)
    cx = np.array([c[1] for c in ndimage.center_of_mass(np.ones_like(s.mask), s.mask, ids)]) if ids.size else np.zeros(0)
    order = ids[np.argsort(-cx, kind="stable")]
    classes = set(s.objects.values())
    val: dict[int, str] = {}
    for i in order:
        if len(val) >= max(1, fraction * len(ids)) and set(val.values()) == classes:
            break
        val[int(i)] = s.objects[int(i)]
    train = {k: v for k, v in s.objects.items() if k not in val}
    lacking = sorted(classes - set(train.values()))
    if lacking:
        raise InputError(f"One annotated image cannot be split: no training example of {', '.join(lacking)} would be left", "Annotate more objects of every class, add images, or give --val DIR")
    return [Sample(s.name, s.image, s.mask, objects=train)], [Sample(s.name + " (validation objects)", s.image, s.mask, objects=val)]


def _has(s: Sample, c: str) -> bool:
    return s.cls == c if s.cls is not None else c in s.objects.values()
