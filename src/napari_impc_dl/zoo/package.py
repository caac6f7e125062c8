"""Open a BioImage Model Zoo package safely: a zip, a folder, or its ``rdf.yaml`` / ``bioimageio.yaml``.

Never touches the network. A zip is checked member by member *before* anything is written:
absolute paths, ``..`` components, drive letters, links, encrypted or duplicate members, more than
:data:`MAX_MEMBERS` members, a member over :data:`MAX_MEMBER_BYTES` or a total over
:data:`MAX_TOTAL_BYTES` (checked on the declared sizes and again while decompressing, so a lying
header cannot blow up the disk) are refused. Extraction goes to a folder the caller names (inside
the model library) through a staging folder, so a refused package leaves nothing behind.

Files a description refers to are resolved with :meth:`Package.local`: a relative path that
stays inside the package folder (links resolved), or ``None`` for a URL (remote: we never
download). :meth:`Package.check_sha256` verifies a file against the hash the description gives.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InputError

MAX_MEMBER_BYTES = 4 * 2**30
"""Largest single file accepted in a package zip."""
MAX_TOTAL_BYTES = 16 * 2**30
"""Largest total uncompressed size of a package zip."""
MAX_MEMBERS = 20_000
MAX_RDF_BYTES = 4 * 2**20
"""A description file larger than this is refused before parsing."""

RDF_NAMES = ("bioimageio.yaml", "rdf.yaml")
_CHUNK = 1 << 20


def _is_url(source: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def find_rdf(folder: Path) -> Path | None:
    """The description file of a package folder: ``bioimageio.yaml``, ``rdf.yaml`` or one ``*.bioimageio.yaml``."""
    for name in RDF_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.bioimageio.yaml"))
    return found[0] if len(found) == 1 else None


def looks_like_package(path: str | os.PathLike) -> bool:
    """Cheap test (no parsing): a ``.zip``, a folder holding a description, or a description file."""
    p = Path(path)
    if p.is_dir():
        return find_rdf(p) is not None
    name = p.name.lower()
    return p.is_file() and (name.endswith(".zip") or name in RDF_NAMES or name.endswith(".bioimageio.yaml"))


@dataclass
class Package:
    """An opened package: its folder on disk and its description file (not yet validated)."""

    root: Path
    rdf: Path
    source: Path
    """What the user gave (zip, folder or yaml)."""
    zip_sha256: str | None = None

    @property
    def label(self) -> str:
        return f"'{self.source}'"

    def local(self, source: str | None, what: str) -> Path | None:
        """The file ``source`` (as written in the description) inside the package, ``None`` if it is a URL.

        Raises :class:`InputError` for a path that leaves the package or a file that is missing.
        """
        if source is None:
            return None
        source = str(source)
        if _is_url(source):
            return None
        rel = PurePosixPath(source.replace("\\", "/"))
        if rel.is_absolute() or re.match(r"^[a-zA-Z]:", source) or ".." in rel.parts:
            raise InputError(f"Package {self.label}: {what} '{source}' points outside the package", "Refusing to read it; ask the package's authors for a self-contained package")
        path = (self.root / Path(*rel.parts)) if rel.parts else self.root
        root = self.root.resolve()
        try:
            resolved = path.resolve()
        except OSError:
            resolved = path
        if resolved != root and root not in resolved.parents:
            raise InputError(f"Package {self.label}: {what} '{source}' is a link that points outside the package", "Refusing to read it")
        if not path.is_file():
            raise InputError(f"Package {self.label} is incomplete: {what} '{source}' is missing", "Re-download or re-export the package; its files must sit next to its rdf.yaml")
        return path

    def check_sha256(self, path: Path, expected: str | None, what: str) -> None:
        """Compare ``path``'s sha256 with ``expected`` (when given)."""
        if not expected:
            return
        got = sha256_file(path)
        if got.lower() != str(expected).lower():
            raise InputError(
                f"Package {self.label}: {what} '{path.name}' does not match its sha256 (expected {str(expected)[:12]}..., got {got[:12]}...): the file was altered or damaged",
                "Re-download the package from its source",
            )


def read_yaml(path: Path, label: str) -> dict:
    """Parse a description with a safe YAML loader (no object construction); a clear error when malformed."""
    if path.stat().st_size > MAX_RDF_BYTES:
        raise InputError(f"{label}: the description '{path.name}' is larger than {MAX_RDF_BYTES >> 20} MiB", "This is not a model description")
    text = path.read_bytes()
    try:
        from ruyaml import YAML

        content = YAML(typ="safe", pure=True).load(text)
    except ImportError:  # pragma: no cover - ruyaml comes with bioimageio.spec
        import yaml

        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{label}: '{path.name}' is not valid YAML ({_yaml_reason(exc)})", "Fix the file or re-export the package") from None
    except Exception as exc:  # ruyaml's errors
        raise InputError(f"{label}: '{path.name}' is not valid YAML ({_yaml_reason(exc)})", "Fix the file or re-export the package") from None
    if not isinstance(content, dict):
        raise InputError(f"{label}: '{path.name}' does not hold a model description (a YAML mapping)", "Point at a BioImage Model Zoo package (zip, folder or rdf.yaml)")
    return content


def _yaml_reason(exc: BaseException) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)[:200]


# ----------------------------------------------------------------------------- zip


def _member_path(info: zipfile.ZipInfo, label: str) -> PurePosixPath | None:
    name = info.filename.replace("\\", "/")
    if info.flag_bits & 0x1:
        raise InputError(f"{label} contains an encrypted member '{info.filename}'", "Packages must not be encrypted")
    p = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[a-zA-Z]:", name) or p.is_absolute():
        raise InputError(f"{label} contains a member with an absolute path ('{info.filename}')", "Refusing to extract it: a package's files must be relative")
    if ".." in p.parts:
        raise InputError(f"{label} contains a member that climbs out of the package ('{info.filename}')", "Refusing to extract it (zip-slip); the package is malformed or malicious")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise InputError(f"{label} contains a link ('{info.filename}')", "Refusing to extract links from packages")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{label} contains a special file ('{info.filename}')", "Refusing to extract it")
    parts = [q for q in p.parts if q not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def check_zip(path: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every member of a package zip with its safe relative path; :class:`InputError` for anything unsafe."""
    label = f"'{path}'"
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{label} is not a readable zip file ({exc})", "Re-download the package") from None
    with zf:
        infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise InputError(f"{label} has {len(infos)} members (more than {MAX_MEMBERS})", "This is not a model package")
    seen, members, total = set(), [], 0
    for info in infos:
        rel = _member_path(info, label)
        if rel is None or info.is_dir():
            continue
        key = str(rel).lower()
        if key in seen:
            raise InputError(f"{label} contains the member '{rel}' twice", "The package is malformed; re-export it")
        seen.add(key)
        if info.file_size > MAX_MEMBER_BYTES:
            raise InputError(f"{label}: member '{rel}' is {info.file_size / 2**30:.1f} GiB (over the {MAX_MEMBER_BYTES / 2**30:.1f} GiB limit)", "Refusing to extract it")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise InputError(f"{label} unpacks to more than {MAX_TOTAL_BYTES / 2**30:.1f} GiB", "Refusing to extract it")
        members.append((info, rel))
    return members


def extract_zip(path: Path, dest: Path) -> None:
    """Check and extract a package zip into ``dest`` (which must not exist), via a staging folder next to it."""
    members = check_zip(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
    try:
        with zipfile.ZipFile(path) as zf:
            for info, rel in members:
                target = staging.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, open(target, "xb") as out:
                    for chunk in iter(lambda: src.read(_CHUNK), b""):
                        written += len(chunk)
                        if written > info.file_size or written > MAX_MEMBER_BYTES:
                            raise InputError(f"'{path}': member '{rel}' decompresses to more than its declared size", "Refusing to extract it; the package is malformed or malicious")
                        out.write(chunk)
        os.replace(staging, dest)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"'{path}' is damaged ({exc})", "Re-download the package") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _package_root(folder: Path, label: str) -> tuple[Path, Path]:
    rdf = find_rdf(folder)
    if rdf is None:
        subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        files = [p for p in folder.iterdir() if p.is_file()]
        if len(subs) == 1 and not files:  # a zip of a folder
            rdf = find_rdf(subs[0])
            if rdf is not None:
                return subs[0], rdf
        raise InputError(f"{label} holds no model description (bioimageio.yaml or rdf.yaml)", "Point at a BioImage Model Zoo package: a zip, its folder, or its rdf.yaml")
    return folder, rdf


def open_package(path: str | os.PathLike, *, cache_dir: Path | None = None) -> Package:
    """Open a package from a zip (extracted, once, under ``cache_dir``), a folder or a description file.

    ``cache_dir`` defaults to the model library's cache (:func:`napari_impc_dl.zoo.library.cache_dir`).
    """
    src = Path(path).expanduser()
    label = f"'{src}'"
    if not src.exists():
        raise InputError(f"{label} does not exist", "Check the path; napari-impc-dl never downloads packages (download the zip first)")
    if src.is_dir():
        root, rdf = _package_root(src, label)
        return Package(root=root, rdf=rdf, source=src)
    name = src.name.lower()
    if name in RDF_NAMES or name.endswith(".bioimageio.yaml") or name.endswith((".yaml", ".yml")):
        return Package(root=src.parent, rdf=src, source=src)
    if not zipfile.is_zipfile(src):
        raise InputError(f"{label} is neither a package zip, a package folder nor a description (rdf.yaml)", "Give a BioImage Model Zoo package")
    digest = sha256_file(src)
    if cache_dir is None:
        from .library import cache_dir as _cache

        cache_dir = _cache()
    dest = cache_dir / digest[:24]
    if not (dest.is_dir() and find_rdf(dest) is not None or dest.is_dir() and _try_root(dest)):
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        extract_zip(src, dest)
    root, rdf = _package_root(dest, label)
    return Package(root=root, rdf=rdf, source=src, zip_sha256=digest)


def _try_root(folder: Path) -> bool:
    try:
        _package_root(folder, "")
        return True
    except InputError:
        return False
