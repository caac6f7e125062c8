"""What a batch runs over: INPUT (a folder, a glob, a CSV with a ``path`` column, or image files) -> BatchItems.

* A **folder** is searched recursively for files ending in an image suffix (``.tif``, ``.tiff``,
  ``.ome.tif``, ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.npy``) and for ``.zarr`` folders (not
  searched inside), in sorted path order. Hidden files and folders are skipped, and so is the
  output folder when it lies inside the folder searched.
* A **glob** (``"plates/**/*.tif"``, quoted so the shell leaves it alone) is expanded recursively.
* A **CSV** file with a ``path`` column lists the images in its order; relative paths are
  relative to the CSV's folder, and every other column is carried into ``counts.csv`` and
  ``objects.csv`` (after ``image``).

Every item gets a unique output **name**: the image's stem (``cells`` for ``cells.ome.tif``);
when two inputs share a stem, their parent folders are put in front (``plate1_A01``,
``plate2_A01``), as many as it takes, then the suffix (``A01_png``).
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io._formats import SUFFIXES

#: file suffixes a folder search picks up (``.zarr`` folders are picked up as folders)
FILE_SUFFIXES = tuple(s for s in SUFFIXES if not s.endswith(".zarr"))

#: columns the tables already have: a CSV may not carry columns of these names
RESERVED = {"image", "label", "path", "n_objects", "model_name", "model_hash", "classifier_name", "classifier_hash"}


@dataclass
class BatchItem:
    """One image of a batch: where it is, the unique name its outputs get, the CSV's other columns."""

    path: Path
    name: str
    index: int
    extra: dict[str, str] = field(default_factory=dict)


def collect_inputs(inputs, out_dir: str | os.PathLike | None = None) -> list[BatchItem]:
    """The images ``inputs`` (one INPUT or a list of them) name, in order, each once, with unique names."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise InputError("No input was given", "Pass a folder, a glob, a CSV with a 'path' column, or image files")
    out = Path(out_dir).resolve() if out_dir is not None else None
    found: list[tuple[Path, dict[str, str]]] = []
    for ref in inputs:
        found += _expand(str(ref), out)
    seen: set[Path] = set()
    unique = []
    for path, extra in found:
        key = Path(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            unique.append((key, extra))
    if not unique:
        raise InputError(f"No images found in {', '.join(repr(str(r)) for r in inputs)}", f"Give a folder holding images ({', '.join(FILE_SUFFIXES)}, .zarr), a glob or a CSV with a 'path' column")
    names = unique_names([p for p, _ in unique])
    return [BatchItem(p, n, i, e) for i, ((p, e), n) in enumerate(zip(unique, names))]


def _expand(ref: str, out: Path | None) -> list[tuple[Path, dict[str, str]]]:
    path = Path(ref).expanduser()
    if path.is_dir() and not _is_zarr(path):
        return [(p, {}) for p in scan_folder(path, out)]
    if path.suffix.lower() == ".csv" and path.is_file():
        return read_csv(path)
    if glob.has_magic(ref):
        matches = sorted(glob.glob(os.path.expanduser(ref), recursive=True))
        picked = [Path(m) for m in matches if _is_image(Path(m)) and not _inside(Path(m), out)]
        if not picked:
            raise InputError(f"The pattern '{ref}' matches no image files", "Check the pattern (quote it so the shell leaves it to us), e.g. 'plates/**/*.tif'")
        return [(p, {}) for p in picked]
    if not os.path.lexists(path):
        raise InputError(f"'{ref}' does not exist", "Give a folder, a quoted glob, a CSV with a 'path' column, or image files")
    return [(path, {})]  # a file (an unreadable one is recorded as a failure, and the run goes on)


def _is_zarr(path: Path) -> bool:
    return path.name.lower().endswith(".zarr")


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    if _is_zarr(path):
        return path.is_dir()
    return name.endswith(FILE_SUFFIXES) and not path.is_dir()


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        Path(os.path.abspath(path)).relative_to(folder)
        return True
    except ValueError:
        return False


def scan_folder(folder: Path, out: Path | None = None) -> list[Path]:
    """Image files and ``.zarr`` folders under ``folder`` (recursive, sorted; hidden entries and ``out`` skipped)."""
    root = Path(os.path.abspath(folder))
    if out is not None and out == root.resolve():
        raise InputError(
            f"The output folder is the input folder '{folder}': its results would become inputs of the next run",
            "Choose an --out folder outside it (or a subfolder of it)",
        )
    picked: list[Path] = []
    for here, dirs, files in os.walk(root, followlinks=True):
        here_p = Path(here)
        keep = []
        for d in sorted(dirs):
            p = here_p / d
            if d.startswith(".") or (out is not None and Path(os.path.realpath(p)) == out):
                continue
            if _is_zarr(p):
                picked.append(p)
            else:
                keep.append(d)
        dirs[:] = keep  # never search inside a .zarr image, hidden folders or the output folder
        picked += [here_p / f for f in files if not f.startswith(".") and f.lower().endswith(FILE_SUFFIXES)]
    return sorted(picked)


def read_csv(path: Path) -> list[tuple[Path, dict[str, str]]]:
    """The images of a CSV with a ``path`` column (relative to the CSV's folder) and each row's other columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = list(rows[0].keys()) if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"Cannot read the CSV '{path}' ({exc})", "Give a UTF-8 CSV file with a 'path' column") from None
    if "path" not in columns:
        raise InputError(f"The CSV '{path}' has no 'path' column (columns: {', '.join(c or '?' for c in columns) or 'none'})", "Add a 'path' column with one image per row")
    clash = sorted(c for c in columns if c != "path" and (c in RESERVED or not c))
    if clash:
        raise InputError(f"The CSV '{path}' has columns the tables already use: {', '.join(repr(c) for c in clash)}", "Rename them")
    base = path.parent
    items = []
    for i, row in enumerate(rows, start=2):
        ref = (row.get("path") or "").strip()
        if not ref:
            raise InputError(f"Row {i} of '{path}' has an empty path", "Fill in or remove the row")
        p = Path(ref).expanduser()
        items.append((p if p.is_absolute() else base / p, {k: (v or "") for k, v in row.items() if k != "path" and k is not None}))
    return items


def unique_names(paths: list[Path]) -> list[str]:
    """One output name per path: the stem, with parent folders (then the suffix) in front where stems clash."""
    from ..io.image import image_name

    stems = [image_name(p) for p in paths]
    names = list(stems)
    depth = 0
    while True:
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n, []).append(i)
        clashing = [i for ix in groups.values() if len(ix) > 1 for i in ix]
        if not clashing:
            return names
        depth += 1
        for i in clashing:
            names[i] = _candidate(paths[i], stems[i], depth, i)


def _candidate(path: Path, stem: str, depth: int, index: int) -> str:
    """``stem`` with ``depth`` parent folders in front; past the last folder, the suffix, then the input's position."""
    folders = [q.name for q in path.parents if q.name]
    parts = folders[:depth][::-1] + [stem]
    if depth > len(folders):
        parts.append(path.name[len(stem):].lstrip(".").replace(".", "_") or "file")
    if depth > len(folders) + 1:
        parts.append(str(index))
    return "_".join(parts)
