"""The record of a batch: what each image was made from, and which images are finished.

``DIR/.batch/done.jsonl`` is an append-only log with one JSON line per finished image (done or
failed), written by the client alone (one writer, no races) *after* the image's outputs are in
place, each line flushed and fsync'd. A run killed at any point leaves at worst a torn last
line, which is ignored (that image is simply done again). ``DIR/manifest.csv`` is rebuilt from
the log at the end of every run (also an interrupted one): one row per input with its status.

An image is skipped on a rerun when its latest log line matches what it would be made from now:

* the input: path, size and modification time (``mtime_ns``), or size and sha256 with ``--hash``;
* the model's and the classifier's content hashes, and a hash of the parameters that change results
  (tiling, thresholds, channel, blocks; not the device or batch size, which change only speed);
* the CSV's extra columns for it and its output name;

and, for a finished image, when its outputs still exist. A failure on bad input (unreadable,
empty, not an image) is kept as it is until the file changes; any other error (a crash, a lost
worker three times) is tried again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

DONE = "done"
FAILED = "failed"
"""Bad input (an :class:`~napari_impc_dl.errors.InputError`): not retried until the file changes."""
ERROR = "error"
"""Anything else (a bug, a lost worker, out of memory): retried by the next run."""
PENDING = "pending"

#: SegmentConfig fields that do not change what is computed (only how fast, or where)
SPEED_ONLY = {"device", "batch"}


def batch_dir(out: Path) -> Path:
    return out / ".batch"


def fingerprint(path: Path, *, sha256: bool = False) -> dict:
    """``size`` and ``mtime_ns`` of a file (of all files of a ``.zarr`` folder: total size, newest mtime),
    and its ``sha256`` (content of every file, in path order) when asked; -1 when it cannot be read."""
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            stats = [p.stat() for p in files]
            size, mtime = sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=path.stat().st_mtime_ns)
        else:
            files = [path]
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        return {"size": -1, "mtime_ns": -1, "sha256": None}
    digest = None
    if sha256:
        h = hashlib.sha256()
        try:
            for f in files:
                if f != path:
                    h.update(str(f.relative_to(path)).encode() + b"\0")
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            digest = h.hexdigest()
        except OSError:
            digest = None
    return {"size": int(size), "mtime_ns": int(mtime), "sha256": digest}


def params_hash(config, extra: dict | None = None) -> str:
    """A short hash of the result-changing settings: SegmentConfig fields (less :data:`SPEED_ONLY`) and ``extra``."""
    fields = {k: v for k, v in config.model_dump().items() if k not in SPEED_ONLY}
    text = json.dumps({"config": fields, **(extra or {})}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def extra_hash(extra: dict) -> str:
    return hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:12] if extra else ""


@dataclass
class Identity:
    """What one image's result is made from (compared with the log to decide whether to skip it)."""

    input: str
    name: str
    size: int
    mtime_ns: int
    sha256: str | None
    model_hash: str
    classifier_hash: str
    params_hash: str
    extra_hash: str

    def matches(self, rec: dict, *, by_hash: bool) -> bool:
        same = all(rec.get(k) == getattr(self, k) for k in ("input", "name", "size", "model_hash", "classifier_hash", "params_hash", "extra_hash"))
        if not same:
            return False
        if by_hash:  # (an input that cannot be read has no hash: it matches while it stays unreadable)
            return rec.get("sha256") == self.sha256 and (self.sha256 is not None or self.size < 0)
        return rec.get("mtime_ns") == self.mtime_ns

    def record(self, status: str, *, seconds: float = 0.0, error: str = "", outputs: list[str] | None = None, n_objects: int | None = None) -> dict:
        return {
            "v": 1, **self.__dict__, "status": status, "seconds": round(float(seconds), 3), "error": error,
            "outputs": list(outputs or []), "n_objects": n_objects, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


class DoneLog:
    """``.batch/done.jsonl``: read the latest line per input; append lines (flushed and fsync'd)."""

    def __init__(self, out: Path) -> None:
        self.path = batch_dir(out) / "done.jsonl"
        self._fh = None

    def latest(self) -> dict[str, dict]:
        """The last intact record for each input path."""
        out: dict[str, dict] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn line (the run was killed while writing it)
                    if isinstance(rec, dict) and "input" in rec:
                        out[rec["input"]] = rec
        except FileNotFoundError:
            pass
        return out

    def append(self, record: dict) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a+b")
            self._fh.seek(0, os.SEEK_END)
            if self._fh.tell() > 0:  # a torn last line must not swallow the next record
                self._fh.seek(-1, os.SEEK_END)
                if self._fh.read(1) != b"\n":
                    self._fh.write(b"\n")
        self._fh.write((json.dumps(record, default=str) + "\n").encode())
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def outputs_exist(out: Path, rec: dict) -> bool:
    return all((out / rel).exists() for rel in rec.get("outputs", []))


MANIFEST_COLUMNS = ["image", "input", "size", "mtime_ns", "sha256", "model_hash", "classifier_hash", "params_hash", "status", "seconds", "n_objects", "error", "labels"]


def write_manifest(out: Path, items, identities: dict, records: dict[str, dict], *, by_hash: bool) -> Path:
    """``DIR/manifest.csv``: one row per input in input order (status ``pending`` for the unfinished ones), atomically."""
    import pandas as pd

    from ..io.outputs import write_csv_atomic

    rows = []
    for it in items:
        ident = identities[it.index]
        rec = records.get(ident.input)
        current = rec is not None and ident.matches(rec, by_hash=by_hash)
        labels = next((o for o in (rec or {}).get("outputs", []) if "_labels." in o), "") if current else ""
        rows.append({
            "image": it.name, "input": ident.input, "size": ident.size, "mtime_ns": ident.mtime_ns, "sha256": ident.sha256 or "",
            "model_hash": ident.model_hash, "classifier_hash": ident.classifier_hash, "params_hash": ident.params_hash,
            "status": rec["status"] if current else PENDING, "seconds": rec.get("seconds", 0.0) if current else 0.0,
            "n_objects": rec.get("n_objects") if current and rec.get("n_objects") is not None else "",
            "error": rec.get("error", "") if current else "", "labels": labels,
        })
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if not by_hash:
        frame = frame.drop(columns="sha256")
    path = out / "manifest.csv"
    write_csv_atomic(path, frame.astype({"n_objects": str}))
    return path
