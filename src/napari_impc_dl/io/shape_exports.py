"""Objects in the formats users open next: Fiji / ImageJ ROI sets, QuPath GeoJSON, run-length-encoded CSV.

* **ROI set** (``<name>_rois.zip``, written with ``roifile``): one ROI per object, named
  ``<label>`` or ``<label> <class>``, that Fiji's ROI Manager opens (*File > Open* or drag and
  drop). An object in one piece without holes is a sub-pixel polygon ROI; an object with holes or
  in several pieces is a composite (shape) ROI, as Fiji itself saves one, with every ring.
* **GeoJSON** (``<name>.geojson``): a FeatureCollection of detections as QuPath imports them
  (*File > Import objects from file* or drag and drop): each object a Polygon / MultiPolygon with
  ``properties.objectType = "detection"``, ``name`` (the label), ``classification`` (the class
  name and an ``[r, g, b]`` colour) when the objects are classified, and ``measurements`` (area,
  intensities, ... of ``objects.csv``).
* **Masks as CSV** (``masks.csv``): ``image,label,height,width,encoded_pixels``, the 2018 Data
  Science Bowl's run-length encoding (pixels numbered from 1 down each column, then the next
  column; ``start length`` pairs), so a results table can carry its own masks; ``evaluate`` reads it
  (:func:`decode_masks_csv`).

Coordinates are in the pixels of the full-resolution image (also for multiscale and tiled results:
outlines are cut from level 0, object by object; see :mod:`.outlines`). Every file is written to a
temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

SHAPE_FORMATS = ("roi", "geojson", "rle")
"""What ``--export`` / the Export widget accept beside tables and masks."""

#: class colours, in class order (the Classify widget colours layers with the same list)
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324"]


def class_colours(classes: Sequence[str]) -> dict[str, str]:
    """``{class: "#rrggbb"}`` in the palette's order."""
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}


def _rgb(hex_colour: str) -> list[int]:
    h = hex_colour.lstrip("#")
    return [int(h[i : i + 2], 16) for i in (0, 2, 4)]


def _classes_by_label(objects) -> dict[int, str]:
    if objects is None or "class" not in getattr(objects, "columns", ()):
        return {}
    return {int(l): str(c) for l, c in zip(objects["label"], objects["class"]) if isinstance(c, str) and c}


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


# ----------------------------------------------------------------------------- Fiji / ImageJ ROI sets


def _roi(outline, name: str):
    import roifile

    parts = list(outline.geometry.geoms) if hasattr(outline.geometry, "geoms") else [outline.geometry]
    if len(parts) == 1 and not parts[0].interiors:
        xy = np.asarray(parts[0].exterior.coords, np.float32)[:-1]
        roi = roifile.ImagejRoi.frompoints(xy, name=name)
        roi.roitype = roifile.ROI_TYPE.POLYGON
        return roi
    from shapely.geometry.polygon import orient

    path: list[float] = []
    for p in parts:  # every ring as MOVETO, LINETO..., CLOSE, absolute coordinates (as ImageJ's ShapeRoi stores them)
        p = orient(p, sign=1.0)  # holes wound against their exterior: a hole under both the even-odd and non-zero rules
        for ring in [p.exterior, *p.interiors]:
            xy = np.asarray(ring.coords, np.float32)[:-1]
            path += [0.0, float(xy[0, 0]), float(xy[0, 1])]
            for x, y in xy[1:]:
                path += [1.0, float(x), float(y)]
            path.append(4.0)
    x0, y0, x1, y1 = outline.geometry.bounds
    roi = roifile.ImagejRoi(
        roitype=roifile.ROI_TYPE.RECT, name=name, multi_coordinates=np.asarray(path, np.float32),
        left=int(np.floor(x0)), top=int(np.floor(y0)), right=int(np.ceil(x1)), bottom=int(np.ceil(y1)),
    )
    roi.shape_roi_size = len(path)
    return roi


def write_roi_zip(path: str | os.PathLike, outlines: Iterable, objects=None) -> tuple[Path, int]:
    """Write an ImageJ ROI set; returns ``(path, number of ROIs)``."""
    import roifile

    path = Path(path)
    classes = _classes_by_label(objects)
    tmp = _tmp(path)
    tmp.unlink(missing_ok=True)
    n = 0
    batch = []
    for o in outlines:
        name = f"{o.label:05d}" + (f" {classes[o.label]}" if o.label in classes else "")
        batch.append(_roi(o, name))
        n += 1
        if len(batch) == 1000:
            roifile.roiwrite(tmp, batch, mode="a")
            batch = []
    if batch or n == 0:
        roifile.roiwrite(tmp, batch, mode="a") if batch else tmp.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    os.replace(tmp, path)
    return path, n


def read_roi_zip(path, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{ROI name: mask}`` of a ROI set, rasterised by pixel centres (polygons; composite ROIs even-odd)."""
    import roifile
    from shapely.geometry import Polygon

    from .outlines import rasterize

    out = {}
    for roi in roifile.roiread(path):
        if roi.multi_coordinates is not None and roi.composite:
            mask = np.zeros(shape, bool)
            for ring in roi.path2coords(roi.multi_coordinates):
                mask ^= rasterize(Polygon(ring), shape)
        else:
            mask = rasterize(Polygon(roi.coordinates()), shape)
        out[roi.name] = mask
    return out


# ----------------------------------------------------------------------------- QuPath GeoJSON


def write_geojson(path: str | os.PathLike, outlines: Iterable, objects=None, colours: dict[str, str] | None = None) -> tuple[Path, int]:
    """Write a QuPath-importable FeatureCollection of detections; returns ``(path, number of features)``."""
    from shapely.geometry import mapping

    path = Path(path)
    # measurements as one numpy column each and a label -> row lookup: no per-object dicts held (a slide has 10^6 objects)
    row_of: dict[int, int] = {}
    numeric: dict[str, np.ndarray] = {}
    if objects is not None and len(objects):
        row_of = {int(v): i for i, v in enumerate(objects["label"].to_numpy())}
        skip = {"label", "class", "image", "model_name", "model_hash", "classifier_name", "classifier_hash"}
        numeric = {c: objects[c].to_numpy(np.float64) for c in objects.columns if c not in skip and objects[c].dtype.kind in "iuf"}
    classes = _classes_by_label(objects)
    colours = colours or class_colours(sorted(set(classes.values())))
    tmp = _tmp(path)
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        f.write('{"type": "FeatureCollection", "features": [\n')
        for o in outlines:
            props = {"objectType": "detection", "name": str(o.label)}
            if o.label in classes:
                c = classes[o.label]
                props["classification"] = {"name": c, "color": _rgb(colours.get(c, PALETTE[0]))}
            i = row_of.get(o.label)
            if i is not None:
                props["measurements"] = {c: float(v[i]) for c, v in numeric.items() if np.isfinite(v[i])}
            feature = {"type": "Feature", "id": f"object-{o.label}", "geometry": mapping(o.geometry), "properties": props}
            f.write(("" if n == 0 else ",\n") + json.dumps(feature, separators=(",", ":")))
            n += 1
        f.write("\n]}\n")
    os.replace(tmp, path)
    return path, n


# ----------------------------------------------------------------------------- run-length encoding


def rle_encode(mask_crop: np.ndarray, offset: tuple[int, int], height: int) -> str:
    """DSB run-length encoding of a boolean crop placed at ``offset`` (row, col) in an image ``height`` rows tall."""
    m = np.asarray(mask_crop, bool)
    h, w = m.shape
    padded = np.zeros((h + 2, w), bool)
    padded[1:-1] = m
    d = np.diff(padded.astype(np.int8), axis=0)  # per column: +1 where a run starts, -1 after it ends
    sc, sr = np.nonzero(d.T == 1)  # (column, row) in column-major order
    ec, er = np.nonzero(d.T == -1)
    starts = (sc + offset[1]) * height + (sr + offset[0])  # 0-based, column-major in the whole image
    lengths = er - sr
    if len(starts) > 1:  # runs that continue into the next column (a crop as tall as the image) are one run
        out_s, out_l = [int(starts[0])], [int(lengths[0])]
        for s, l in zip(starts[1:], lengths[1:]):
            if s == out_s[-1] + out_l[-1]:
                out_l[-1] += int(l)
            else:
                out_s.append(int(s))
                out_l.append(int(l))
        starts, lengths = np.asarray(out_s), np.asarray(out_l)
    return " ".join(f"{s + 1} {l}" for s, l in zip(starts, lengths))


def rle_decode(encoded: str, shape: tuple[int, int]) -> np.ndarray:
    """The boolean mask of a DSB run-length encoding (column-major, 1-based ``start length`` pairs)."""
    h, w = shape
    flat = np.zeros(h * w, bool)
    nums = np.asarray(str(encoded).split(), np.int64) if isinstance(encoded, str) and encoded.strip() else np.zeros(0, np.int64)
    if nums.size % 2:
        raise ValueError("a run-length encoding needs start-length pairs")
    for s, l in zip(nums[0::2] - 1, nums[1::2]):
        flat[s : s + l] = True
    return flat.reshape(w, h).T


def rle_rows(image: str, labels, objects=None) -> list[list]:
    """``[image, label, height, width, encoded_pixels]`` rows of every object of a 2D label image."""
    H, W = labels.shape[-2:]
    return [[image, int(label), H, W, rle_encode(crop, offset, H)] for label, crop, offset in object_crops(labels, objects)]


def write_masks_csv(path: str | os.PathLike, rows: Iterable[list]) -> tuple[Path, int]:
    """Write ``image,label,height,width,encoded_pixels`` rows (from :func:`rle_rows`); returns ``(path, rows)``."""
    import csv

    path = Path(path)
    tmp = _tmp(path)
    n = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "height", "width", "encoded_pixels"])
        for row in rows:
            w.writerow(row)
            n += 1
    os.replace(tmp, path)
    return path, n


def write_image_shapes(formats: Sequence[str], name: str, labels, objects, path_for, *, colours=None, scale: float = 1.0, cancel=None) -> tuple[list[Path], list[list]]:
    """The ROI set and GeoJSON of one image (``path_for(file name)`` says where) and its masks CSV rows.

    ``scale``: full-resolution pixels per pixel of ``labels`` (a slide segmented at a coarser level), so
    that ROI and GeoJSON coordinates are those of the original image; the masks CSV stays at the labels' size.
    """
    from ..errors import InputError
    from .outlines import iter_outlines, scaled

    if len(labels.shape) != 2:
        raise InputError(f"{name} has {len(labels.shape) - 2} stack axis/axes: ROI sets, GeoJSON and masks CSV are written for 2D images", "Leave out --export (or the outline formats) for image stacks")
    stem = _safe(name)
    files, rows = [], []

    def outlines():
        return scaled(iter_outlines(labels, objects, cancel=cancel), scale)

    if "roi" in formats:
        files.append(write_roi_zip(path_for(stem + "_rois.zip"), outlines(), objects)[0])
    if "geojson" in formats:
        files.append(write_geojson(path_for(stem + ".geojson"), outlines(), objects, colours)[0])
    if "rle" in formats:
        rows = rle_rows(name, labels, objects)
    return files, rows


def _safe(name: str) -> str:
    from .export import safe_stem

    return safe_stem(name)


def decode_masks_csv(path) -> dict[str, np.ndarray]:
    """``{image: label image}`` from a masks CSV (``image,label,height,width,encoded_pixels``, or the DSB's
    ``ImageId,EncodedPixels`` with ``height,width`` columns): labels as in the file, or 1..n in row order."""
    import pandas as pd

    from ..errors import InputError

    t = pd.read_csv(path, dtype={"image": str, "ImageId": str})
    t = t.rename(columns={"ImageId": "image", "EncodedPixels": "encoded_pixels"})
    missing = {"image", "encoded_pixels", "height", "width"} - set(t.columns)
    if missing:
        raise InputError(f"{path} is not a masks CSV: it lacks {', '.join(sorted(missing))}", "Give the masks.csv that segment --export rle wrote (image,label,height,width,encoded_pixels)")
    out = {}
    for image, g in t.groupby("image", sort=False):
        H, W = int(g["height"].iloc[0]), int(g["width"].iloc[0])
        lab = np.zeros((H, W), np.int32)
        ids = g["label"].astype(int).tolist() if "label" in g.columns else list(range(1, len(g) + 1))
        for i, enc in zip(ids, g["encoded_pixels"]):
            lab[rle_decode(enc if isinstance(enc, str) else "", (H, W))] = i
        out[str(image)] = lab
    return out


def object_crops(labels, objects=None):
    """``(label, boolean crop, (row, col) offset)`` per object, cut from each object's bounding box."""
    from scipy import ndimage

    if objects is not None and len(objects) and {"bbox_min_y", "bbox_max_y"} <= set(objects.columns):
        for r in objects[["label", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x"]].itertuples(index=False):
            crop = np.asarray(labels[int(r.bbox_min_y) : int(r.bbox_max_y), int(r.bbox_min_x) : int(r.bbox_max_x)]) == int(r.label)
            yield int(r.label), crop, (int(r.bbox_min_y), int(r.bbox_min_x))
    else:
        arr = np.asarray(labels)
        for i, sl in enumerate(ndimage.find_objects(arr), start=1):
            if sl is not None:
                yield i, arr[sl] == i, (sl[0].start, sl[1].start)
