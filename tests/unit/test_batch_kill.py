"""Kill ``napari-impc-dl batch`` (SIGKILL) at a random point three times, rerun: the tables equal an uninterrupted run's."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import tifffile

from napari_impc_dl import api

pytestmark = pytest.mark.slow  # four CLI processes, each importing torch and loading the model


def _write_images(folder: Path, n: int) -> None:
    from napari_impc_dl.synthetic import make_nuclei_image

    for i in range(n):
        img, _ = make_nuclei_image((64, 64), seed=100 + i)
        p = folder / ("sub" if i % 4 == 3 else "") / f"k{i:02d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(p, img)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # torn by the kill
            pass
    return out


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame.astype(str).to_numpy()))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_three_times_then_rerun_equals_an_uninterrupted_run(tmp_path, starter):
    folder = tmp_path / "in"
    _write_images(folder, 12)
    api.batch(folder, tmp_path / "ref", model=starter)
    out = tmp_path / "out"
    log = out / ".batch" / "done.jsonl"
    cmd = [sys.executable, "-m", "napari_impc_dl.cli", "batch", str(folder), "--out", str(out), "--preset", "nuclei", "--device", "cpu"]
    rng = random.Random(15)
    killed = 0
    for _ in range(3):
        before = _lines(log)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        want = before + rng.randint(1, 3)
        deadline = time.monotonic() + 300
        while _lines(log) < want and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside the next image (or its writes)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
    assert killed >= 2  # the runs really were cut short
    assert not (out / "manifest.csv").exists()  # never got to the end (a killed run writes nothing more)
    finished = {r["name"] for r in _records(log) if r["status"] == "done"}
    assert 0 < len(finished) < 12
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"({12 - len(finished)} computed now, {len(finished)} finished before)" in done.stdout  # only the unfinished ones
    for name in ("objects", "counts"):
        ref, got = pd.read_csv(tmp_path / "ref" / f"{name}.csv"), pd.read_csv(out / f"{name}.csv")
        assert _rows(got) == _rows(ref) and not got.duplicated().any(), name
    assert not (out / "failures.csv").exists()
    assert not any(p.name.endswith(".part") for p in out.rglob("*"))
