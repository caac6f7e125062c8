"""The local model library: imported packages, chosen by name (``segment --model NAME``).

Location: ``$NAPARI_IMPC_DL_HOME`` when set (tests point it at a temporary folder), otherwise the
user data folder (``platformdirs.user_data_dir("napari-impc-dl")``, e.g.
``~/.local/share/napari-impc-dl`` on Linux). Layout::

    models/<name>/            one imported package, unpacked (rdf.yaml + its files)
    models/<name>/.napari-impc-dl.json   where it came from, when, its zip's sha256
    cache/<sha256>/           zips opened directly (zoo test, segment --model PKG.zip), unpacked once

Everything napari-impc-dl writes for the zoo goes under this folder; a refused package leaves
nothing behind (extraction is staged and moved into place only after every check passed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

ENV = "NAPARI_IMPC_DL_HOME"
META = ".napari-impc-dl.json"
_CACHE_KEEP = 8


def home() -> Path:
    """The library's root folder (created on demand by the functions that write)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_data_dir

        return Path(user_data_dir("napari-impc-dl", appauthor=False))
    except ImportError:  # pragma: no cover
        return Path.home() / ".local" / "share" / "napari-impc-dl"


def models_dir() -> Path:
    return home() / "models"


def cache_dir() -> Path:
    d = home() / "cache"
    d.mkdir(parents=True, exist_ok=True)
    _trim_cache(d)
    return d


def _trim_cache(d: Path) -> None:
    entries = sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[_CACHE_KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def slug(name: str) -> str:
    """A library name from a package name: lowercase letters, digits, ``-`` and ``_``."""
    s = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-_")
    return s[:64] or "model"


@dataclass
class Entry:
    name: str
    folder: Path
    meta: dict

    @property
    def package_name(self) -> str:
        return self.meta.get("package_name", self.name)


def entries() -> list[Entry]:
    """Every imported model, sorted by name."""
    d = models_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.iterdir()):
        if p.is_dir() and not p.name.startswith("."):
            try:
                meta = json.loads((p / META).read_text())
            except (OSError, ValueError):
                meta = {}
            out.append(Entry(p.name, p, meta))
    return out


def find(name: str) -> Entry | None:
    """The library entry called ``name`` (case-insensitive), if any."""
    if not name.strip() or "/" in name or "\\" in name:
        return None
    key = slug(name)
    folder = models_dir() / key
    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        meta = {}
    return Entry(key, folder, meta)


def add(package_root: Path, name: str, meta: dict, *, replace: bool = False, move: bool = False, files: list[Path] | None = None) -> Entry:
    """Put an opened package into the library as ``name``: move its folder (our own extraction of a zip), or copy
    ``files`` (paths relative to ``package_root``: the description and the files it refers to)."""
    from ..presets import PRESETS

    name = slug(name)
    if name in PRESETS:
        raise InputError(f"'{name}' is the name of a bundled preset", "Choose another name with --name")
    dest = models_dir() / name
    if dest.exists() and not replace:
        old = find(name)
        if old is not None and meta.get("content_sha256") and old.meta.get("content_sha256") == meta.get("content_sha256"):
            return old  # the same package again: nothing to do
        raise InputError(f"The model library already holds a model called '{name}' ({dest})", "Choose another name with --name, or replace it with --force")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
    try:
        target = staging / "pkg"
        if move:
            shutil.move(str(package_root), target)
        else:
            target.mkdir()
            for rel in files or []:
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(package_root / rel, target / rel, follow_symlinks=True)
        meta = dict(meta, name=name, imported=time.strftime("%Y-%m-%dT%H:%M:%S"))
        (target / META).write_text(json.dumps(meta, indent=1))
        if dest.exists():
            trash = Path(tempfile.mkdtemp(prefix=".old-", dir=dest.parent))
            os.replace(dest, trash / "old")
            os.replace(target, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(target, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Entry(name, dest, meta)


def referenced_files(root: Path, rdf: Path, content: dict) -> list[Path]:
    """The description and every file inside ``root`` it names (walking all its string values), plus any ``*.py``."""
    found = {rdf.relative_to(root)}
    root_r = root.resolve()

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and 0 < len(v) < 512 and "://" not in v and not v.startswith("/") and ".." not in v:
            for cand in (v, v.split(":", 1)[0]):  # 0.4 architecture "file.py:Class"
                p = root / cand
                try:
                    if p.is_file() and root_r in p.resolve().parents:
                        found.add(p.resolve().relative_to(root_r))
                except (OSError, ValueError):
                    pass

    walk(content)
    found.update(p.relative_to(root) for p in root.glob("*.py") if p.is_file())
    return sorted(found)


def remove(name: str) -> None:
    e = find(name)
    if e is None:
        raise InputError(f"The model library has no model called '{name}'", "See `napari-impc-dl zoo list`")
    shutil.rmtree(e.folder)
