"""How a mouse X-ray's skeletal result looks in napari: two coloured Labels layers and a summary (GUI thread only).

The Segment widget runs :func:`napari_impc_dl.api.analyse_xray` in a worker when its model is the
``skeletal`` workflow; these functions turn the returned
:class:`~napari_impc_dl.skeletal.pipeline.SkeletalResult` into

* ``"<image> regions"``: the class map, one fixed colour per class (:data:`CLASS_COLOURS`, the
  background clear), each class's name in the layer's features (napari shows it under the cursor);
* ``"<image> bones"``: a label per vertebra and rib, each coloured by its spine region (a rib by the
  rib colour, the mouse's right ribs a darker shade), the bone table as the layer's features;
* a summary (:func:`summary_html`): view, rotation, mirroring, sex, every count with its confidence
  and a mark where it deviates from the strain's reference (the ``call`` of the IMPC rows), the
  abnormal score; or the flag alone, in red, when the picture could not be oriented.

Both layers keep the result itself in ``layer.metadata["skeletal"]``.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import numpy as np

META = "skeletal"
"""``layer.metadata`` key holding the :class:`~napari_impc_dl.skeletal.pipeline.SkeletalResult`."""

#: class of the regions map (``synthetic.xray_layout.CLASSES``, by value) -> colour; the background stays clear
CLASS_COLOURS: dict[str, str] = {
    "soft_tissue": "#8c8c8c",
    "skull": "#ffe119",
    "cervical": "#e6194b",
    "thoracic": "#3cb44b",
    "lumbar": "#4363d8",
    "sacral": "#f58231",
    "caudal": "#911eb4",
    "ribs": "#42d4f4",
    "pelvis": "#f032e6",
    "limbs": "#bfef45",
    "marker": "#ffffff",
}
SOFT_TISSUE_ALPHA = 0.12
"""Soft tissue is drawn faintly, so the bones over it stay readable."""
RIGHT_RIB = "#1a8fb0"
"""The mouse's right ribs on the bones layer: a darker shade of the rib colour (left ribs: the rib colour)."""
DEVIATION = "#ff8c69"
FLAG = "#ff4d4d"

#: IMPC parameter -> what the summary calls it, in the order it lists them
SHOWN = {
    "IMPC_XRY_009_001": "ribs left", "IMPC_XRY_008_001": "ribs right", "IMPC_XRY_013_001": "cervical",
    "IMPC_XRY_014_001": "thoracic", "IMPC_XRY_015_001": "lumbar", "IMPC_XRY_016_001": "sacral",
    "IMPC_XRY_017_001": "caudal", "IMPC_XRY_010_001": "rib shape", "IMPC_XRY_011_001": "rib fusion", "IMPC_XRY_012_001": "pelvis",
}
VIEWS = {"dv": "dorso-ventral", "lateral": "lateral"}


def _rgba(colour: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    h = colour.lstrip("#")
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, alpha)


def class_names() -> tuple[str, ...]:
    from ..synthetic.xray_layout import CLASSES

    return CLASSES


def regions_colours() -> dict:
    """Label value -> RGBA of the regions map (0, the background, and any unknown value: clear)."""
    out: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for value, name in enumerate(class_names()):
        if name in CLASS_COLOURS:
            out[value] = _rgba(CLASS_COLOURS[name], SOFT_TISSUE_ALPHA if name == "soft_tissue" else 1.0)
    return out


def bone_colour(kind: str, region: str, side: str = "") -> tuple[float, float, float, float]:
    """The colour of one bone: its spine region's, or the rib colour (darker for the mouse's right ribs)."""
    if kind == "rib":
        return _rgba(RIGHT_RIB if side == "right" else CLASS_COLOURS["ribs"])
    return _rgba(CLASS_COLOURS.get(region, "#cccccc"))


def bones_colours(table) -> dict:
    """Label value -> RGBA of the bones layer from the bone table (a bone not in the table: light grey)."""
    out: dict = {None: (0.8, 0.8, 0.8, 1.0), 0: (0.0, 0.0, 0.0, 0.0)}
    if table is None or not len(table):
        return out
    sides = table["side"] if "side" in table.columns else [""] * len(table)
    for label, kind, region, side in zip(table["label"], table["kind"], table["region"], sides):
        out[int(label)] = bone_colour(str(kind), str(region), str(side) if isinstance(side, str) else "")
    return out


def _colormap(colours: dict):
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=colours)


def pixel_size_mm(layer) -> float | None:
    """The layer's pixel size in mm when its units say so (e.g. a DICOM opened with its spacing), else None."""
    try:
        unit = layer.units[-1]
        if str(unit) in ("pixel", "dimensionless", ""):
            return None
        size = float((layer.scale[-1] * unit).to("millimeter").magnitude)
    except Exception:  # no units, or units that are not a length
        return None
    return size if 0 < size < 100 else None


def analyse_job(layer, device: str, models=None):
    """A ``job(progress, cancel)`` for :class:`._workers.Job`, made on the GUI thread (it reads the layer here, the
    worker never sees it): loads the skeletal models unless given, analyses the layer's picture, returns
    ``(models, result, seconds)``."""
    from ._layers import level0

    data, name, size = level0(layer), layer.name, pixel_size_mm(layer)

    def job(progress, cancel):
        from .. import api
        from . import preload_torch_libraries

        loaded = models
        if loaded is None:
            progress(0, 0, "loading models")
            preload_torch_libraries()  # keeps napari responsive while torch loads (first run only)
            loaded = api.load_skeletal_models(device)
        t0 = time.perf_counter()
        result = api.analyse_xray(np.asarray(data), loaded, name=name, pixel_size_mm=size, progress=progress, cancel=cancel)
        return loaded, result, time.perf_counter() - t0

    return job


def save_tables(results: list, folder) -> dict:
    """:func:`napari_impc_dl.api.save_skeletal_tables` of ``results`` with a ``message`` saying where it wrote (or why it
    could not: shown as a napari error too, ``files`` then empty)."""
    from napari.utils.notifications import show_error

    from .. import api
    from ..errors import InputError

    try:
        out = api.save_skeletal_tables(results, folder)
    except (InputError, OSError) as exc:
        show_error(str(exc))
        return {"files": {}, "message": str(exc)}
    names = ", ".join(Path(p).name for p in out["files"].values())
    return {**out, "message": f"Saved the tables of {len(results)} X-ray(s) to {folder}: {names}"}


def _put_labels(viewer, name: str, data, *, colours: dict, features, meta: dict, image: dict, opacity: float):
    """Replace the data of our earlier layer ``name`` (same shape), or add a new Labels layer."""
    layer = viewer.layers[name] if name in viewer.layers else None
    if layer is not None and (layer.__class__.__name__ != "Labels" or tuple(layer.data.shape) != tuple(data.shape) or META not in (layer.metadata or {})):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        nd = data.ndim
        layer = viewer.add_labels(data, name=name, opacity=opacity, scale=image["scale"][-nd:], translate=image["translate"][-nd:],
                                  features=features, metadata=meta, colormap=_colormap(colours))
    else:
        layer.data = data
        layer.features = features
        layer.metadata = {**layer.metadata, **meta}
        layer.colormap = _colormap(colours)
    return layer


def show_result(viewer, result, image: dict) -> tuple[Any, Any]:
    """Add (or replace) ``"<image> regions"`` and ``"<image> bones"`` for ``result``; returns both layers.

    ``image``: ``scale`` and ``translate`` of the image layer it came from."""
    import pandas as pd

    classes = class_names()
    regions_features = pd.DataFrame({"index": np.arange(len(classes)), "class": list(classes)})
    regions = _put_labels(viewer, f"{result.name} regions", np.asarray(result.regions), colours=regions_colours(),
                          features=regions_features, meta={META: result}, image=image, opacity=0.45)
    table = result.table if result.table is not None else pd.DataFrame(columns=["label", "kind", "region"])
    features = table.copy()
    features["index"] = features["label"].astype("int64")
    bones = _put_labels(viewer, f"{result.name} bones", np.asarray(result.bones), colours=bones_colours(result.table),
                        features=features, meta={META: result}, image=image, opacity=0.8)
    return regions, bones


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def summary_html(result) -> str:
    """The result in a few lines of rich text (see the module docstring)."""
    if result.flag:
        return f"<span style='color:{FLAG}'>⚠ {html.escape(result.name)}: {html.escape(result.flag.rstrip('.'))}. No counts: check that it is a whole mouse X-ray</span>"
    lines = []
    view = VIEWS.get(result.view or "", result.view or "?")
    pose = result.pose
    if pose is not None:
        lines.append(f"{view} view · rotated {pose.rotation_deg:.0f}° · mirrored: {'yes' if pose.mirrored else 'no'}")
    else:
        lines.append(f"{view} view")
    if result.p_male is not None:
        lines.append(f"sex: {result.sex} (p_male {result.p_male:.2f})")
    rows = {r["parameter_stable_id"]: r for r in result.impc_rows()}
    cells = []
    for pid, label in SHOWN.items():
        r = rows.get(pid)
        if r is None:
            continue
        deviates = r["call"] != "normal"
        ref = f" (ref {html.escape(str(r['reference']))})" if str(r["reference"]) != "normal" else ""
        mark = f"▲ {html.escape(str(r['call']))}{ref}" if deviates else ""
        style = f" style='color:{DEVIATION}'" if deviates else ""
        cells.append(f"<tr{style}><td>{label}&nbsp;&nbsp;</td><td align='right'>&nbsp;{html.escape(_fmt(r['value']))}</td>"
                     f"<td style='color:gray'>&nbsp;({r['confidence']:.2f})</td><td>&nbsp;{mark}</td></tr>")
    if "IMPC_XRY_008_001" not in rows and result.view == "lateral":
        cells.insert(0, "<tr><td colspan='4' style='color:gray'>ribs per side: not on a lateral view (both sides overlap)</td></tr>")
    text = "<br>".join(html.escape(line) for line in lines)
    text += "<table cellspacing='0' cellpadding='0'>" + "".join(cells) + "</table>"
    if result.abnormal_score is not None:
        colour = f" style='color:{DEVIATION}'" if result.abnormal_score >= 0.5 else ""
        text += f"<span{colour}>abnormal score {result.abnormal_score:.2f}</span> <span style='color:gray'>(confidence in brackets; ▲ differs from C57BL/6N)</span>"
    return text


def failure_html(name: str, exc: BaseException) -> str:
    """Why the core refused a picture (an :class:`~napari_impc_dl.errors.InputError`: red, like a flag); nothing for a cancel."""
    from ..errors import InputError

    if not isinstance(exc, InputError):
        return ""
    return f"<span style='color:{FLAG}'>⚠ {html.escape(name)}: {html.escape(str(exc))}</span>"


def details(result, seconds: float | None = None) -> str:
    """One plain line under the summary: the models' hashes, the device-independent timing."""
    hashes = ", ".join(f"{role} {m.get('hash', '')[:8]}" for role, m in (result.models or {}).items())
    out = f"skeletal models: {hashes}" if hashes else "skeletal models"
    if result.pixel_size_mm:
        out += f"\npixel {result.pixel_size_mm:g} mm" + (f" · skull to pelvis {result.length_mm:g} mm" if result.length_mm else "")
    if seconds is not None:
        out += f"\n{seconds:.1f} s"
    return out
