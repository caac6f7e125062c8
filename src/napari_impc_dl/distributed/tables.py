"""The batch's tables, rebuilt from the per-image parts at the end of every run that got through its inputs.

* ``objects.csv``: the ``.batch/parts/<name>.objects.csv`` of every finished image, in input
  order (the parts are copied byte for byte under one header when their headers agree, so the
  rows read exactly as ``segment`` writes them; otherwise aligned on their columns);
* any other ``<name>.<table>.csv`` part a workflow writes (``predictions.csv``, ...): the same way;
* ``counts.csv``: one row per finished image from its ``<name>.counts.json``, in input order;
* ``failures.csv``: ``path``, ``reason`` of every input that failed (removed when none did).

Each is written atomically and built only from the parts of the current inputs, so no number of
resumes can duplicate a row.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def _table_kind(rel: str, name: str) -> str | None:
    base = os.path.basename(rel)
    if base.startswith(name + ".") and base.endswith(".csv"):
        return base[len(name) + 1 : -len(".csv")]
    return None


def merge_tables(out: Path, done: list[tuple[str, list[str]]]) -> list[Path]:
    """Write the merged tables for ``done`` = ``[(name, outputs relative to out), ...]`` in input order."""
    import pandas as pd

    from ..io.outputs import write_csv_atomic

    written = []
    kinds: dict[str, list[Path]] = {}
    rows = []
    for name, outputs in done:
        for rel in outputs:
            kind = _table_kind(rel, name)
            if kind is not None:
                kinds.setdefault(kind, []).append(out / rel)
            elif rel.endswith(".counts.json"):
                with open(out / rel, encoding="utf-8") as f:
                    rows.append(json.load(f))
    for kind, parts in kinds.items():
        path = out / f"{kind}.csv"
        concat_csv(parts, path)
        written.append(path)
    if rows:
        columns: dict[str, None] = {}
        for r in rows:
            columns.update(dict.fromkeys(r))
        write_csv_atomic(out / "counts.csv", pd.DataFrame(rows, columns=list(columns)))
        written.append(out / "counts.csv")
    return written


def concat_csv(parts: list[Path], path: Path) -> None:
    """One CSV from ``parts`` (same header: bytes copied under one header; else aligned with pandas), atomically."""
    headers = []
    for p in parts:
        with open(p, "rb") as f:
            headers.append(f.readline())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        if len(set(headers)) == 1:
            with open(tmp, "wb") as dst:
                dst.write(headers[0])
                for p in parts:
                    with open(p, "rb") as src:
                        src.readline()
                        shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
        else:
            import pandas as pd

            from ..io.outputs import write_csv_atomic

            frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in parts]
            write_csv_atomic(tmp, pd.concat(frames, ignore_index=True))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_failures(out: Path, failures: list[tuple[str, str]]) -> Path | None:
    """``failures.csv`` (path, reason), or remove an earlier one when nothing failed."""
    import pandas as pd

    from ..io.outputs import write_csv_atomic

    path = out / "failures.csv"
    if not failures:
        if path.exists():
            path.unlink()
        return None
    write_csv_atomic(path, pd.DataFrame(failures, columns=["path", "reason"]))
    return path
