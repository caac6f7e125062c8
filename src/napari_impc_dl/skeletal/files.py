"""Files in, files out for the skeletal workflow (``segment --preset skeletal``, :func:`napari_impc_dl.api.skeletal`).

For a centre's folder of radiographs (DICOM, TIFF, PNG, ...; one or two views per mouse) it writes to ``out``:

* ``<stem>_regions.tif`` (uint8 class map, values as ``classes.csv``) and ``<stem>_bones.tif`` (uint16, a
  label per vertebra and rib) on the input's own pixels;
* ``objects.csv``: one row per vertebra and rib (image, label, kind, region, side, spine index, area,
  centroid, class probabilities, rib shape; ``area_mm2`` when the pixel size is known);
* ``counts.csv``: one row per picture (view, pose, sex, each count and call with its confidence, the
  abnormal score, ``flag`` for a picture that could not be read, the models' hashes);
* ``impc_parameters.csv`` (long: one row per specimen, picture and parameter, see :mod:`.impc`) and
  ``impc_summary.csv`` (one row per mouse: the most confident value of each parameter, sex, abnormal
  score, and the metadata's columns).

``metadata``: an optional CSV joined by file name (a column ``file``, ``image`` or ``path``: the file
name, with or without its folder and suffix) whose ``specimen`` column groups views of one mouse; its
other columns (sex, genotype, ...) are carried into the summary. Without it, a file's specimen is its
name less a trailing ``_dv`` / ``_lateral`` (the names ``synth xray`` writes).
Every table is written atomically; an input is never overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.outputs import ensure_writable_dir

_VIEW_SUFFIX = re.compile(r"[_-](dv|lateral|lat|ventral|dorsoventral)$", re.IGNORECASE)


def specimen_of(stem: str) -> str:
    return _VIEW_SUFFIX.sub("", stem)


def read_metadata(path) -> dict[str, dict]:
    """File key (name without folder and suffix) -> its metadata row; one clear error for a CSV without a file column."""
    import pandas as pd

    from ..io.image import image_name

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"Cannot read the metadata CSV '{path}' ({type(exc).__name__})", "Save it as comma-separated text with a header row") from None
    df.columns = [c.strip().lower() for c in df.columns]
    key = next((c for c in ("file", "image", "path", "filename") if c in df.columns), None)
    if key is None:
        raise InputError(f"The metadata CSV '{path}' has no file column (it has {', '.join(df.columns)})", "Add a column 'file' with each picture's file name")
    return {image_name(Path(v)): row for v, row in zip(df[key], df.to_dict("records")) if v}


def run(inputs, out_dir, *, models, metadata=None, strain: str = "C57BL/6N", pixel_size_mm: float | None = None, progress=None, cancel=None) -> dict:
    """Analyse every input and write the label images and tables (see the module docstring); returns
    ``{"files": {...}, "counts": [rows], "summary": DataFrame}``."""
    from ..io.image import image_name
    from ..io.outputs import label_dtype, write_tif_atomic
    from .impc import REFERENCES
    from .pipeline import analyse_xray

    if strain not in REFERENCES:
        raise InputError(f"Unknown reference strain '{strain}'", f"Choose one of: {', '.join(REFERENCES)}")
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise InputError(f"'{p}' does not exist", "Check the path and the spelling of the file name")
    out = ensure_writable_dir(out_dir)
    if any(p.resolve().parent == out.resolve() and p.stem.endswith(("_regions", "_bones")) for p in paths):
        raise InputError("An input is an output of an earlier skeletal run in the same folder", "Give another --out folder")
    meta = read_metadata(metadata) if metadata else {}
    results, metas = [], []
    for i, p in enumerate(paths):
        if cancel is not None:
            cancel.raise_if_cancelled()
        key = image_name(p)
        m = {k: v for k, v in meta.get(key, {}).items() if k not in ("file", "image", "path", "filename")}
        res = analyse_xray(p, models, specimen=m.pop("specimen", "") or specimen_of(key), pixel_size_mm=pixel_size_mm, cancel=cancel)
        write_tif_atomic(out / f"{key}_regions.tif", res.regions)
        write_tif_atomic(out / f"{key}_bones.tif", res.bones, dtype=label_dtype(int(res.bones.max(initial=0))))
        results.append(res)
        metas.append(m)
        if progress is not None:
            progress(i + 1, len(paths), "x-rays")
    return write_tables(results, out, strain=strain, metadata=metas)


def write_tables(results, out_dir, *, strain: str = "C57BL/6N", metadata=None) -> dict:
    """``objects.csv``, ``counts.csv``, ``impc_parameters.csv``, ``impc_summary.csv`` and ``classes.csv`` of
    :class:`~.pipeline.SkeletalResult` s (e.g. the pictures analysed in napari); ``metadata``: a dict per result
    (its columns go into counts and summary as ``meta_<column>``)."""
    import pandas as pd

    from ..io.outputs import write_csv_atomic
    from ..synthetic.xray_layout import CLASSES
    from .impc import LONG_COLUMNS, wide_table

    out = ensure_writable_dir(out_dir)
    metadata = metadata or [{} for _ in results]
    objects, counts, long, extra = [], [], [], {}
    for res, m in zip(results, metadata):
        mcols = {f"meta_{k}": v for k, v in m.items()}
        if res.table is not None and len(res.table):
            objects.append(res.table.assign(image=res.name)[["image", *res.table.columns]])
        counts.append({**res.counts_row(), **mcols})
        long += res.impc_rows(strain)
        e = extra.setdefault(res.specimen, {"specimen": res.specimen, "images": [], "p_male": [], "abnormal_score": [], "flags": [], **mcols})
        e["images"].append(res.name)
        if res.p_male is not None:
            e["p_male"].append(res.p_male)
            e["abnormal_score"].append(res.abnormal_score)
        if res.flag:
            e["flags"].append(f"{res.name}: {res.flag}")
    ex = pd.DataFrame([{**{k: v for k, v in e.items() if k not in ("images", "p_male", "abnormal_score", "flags")},
                        "images": ";".join(e["images"]), "sex": ("male" if np.mean(e["p_male"]) >= 0.5 else "female") if e["p_male"] else "",
                        "p_male": round(float(np.mean(e["p_male"])), 4) if e["p_male"] else np.nan,
                        "abnormal_score": round(float(np.max(e["abnormal_score"])), 4) if e["abnormal_score"] else np.nan,
                        "flag": " | ".join(e["flags"])} for e in extra.values()])
    long_df = pd.DataFrame(long, columns=list(LONG_COLUMNS))
    wide = wide_table(long_df, ex) if len(long_df) else ex
    files = {"objects": out / "objects.csv", "counts": out / "counts.csv", "impc": out / "impc_parameters.csv", "summary": out / "impc_summary.csv",
             "classes": out / "classes.csv"}
    write_csv_atomic(files["objects"], pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=["image", "label"]))
    write_csv_atomic(files["counts"], pd.DataFrame(counts))
    write_csv_atomic(files["impc"], long_df)
    write_csv_atomic(files["summary"], wide)
    write_csv_atomic(files["classes"], pd.DataFrame({"value": range(len(CLASSES)), "name": list(CLASSES)}))
    return {"files": files, "counts": counts, "summary": wide}
