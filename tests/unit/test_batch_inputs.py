"""Batch plumbing without a model: what INPUT means, unique names, the log and its fingerprints (fast, no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_impc_dl.distributed.inputs import collect_inputs, unique_names
from napari_impc_dl.distributed.manifest import DoneLog, Identity, fingerprint
from napari_impc_dl.errors import InputError


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_is_searched_recursively_by_suffix(tmp_path):
    root = tmp_path / "plates"
    for rel in ["a.tif", "sub/b.TIFF", "sub/deeper/c.png", "d.jpg", "e.jpeg", "f.npy", "g.ome.tif", "notes.txt", "table.csv", ".hidden.tif", ".cache/x.tif"]:
        _touch(root / rel)
    (root / "big.zarr" / "0").mkdir(parents=True)
    _touch(root / "big.zarr" / "0" / "inner.tif")  # never searched inside an image
    (root / "folder.tif").mkdir()  # a folder named like an image is no image
    items = collect_inputs(root)
    got = sorted(str(it.path.relative_to(root)) for it in items)
    assert got == ["a.tif", "big.zarr", "d.jpg", "e.jpeg", "f.npy", "g.ome.tif", "sub/b.TIFF", "sub/deeper/c.png"]
    assert [it.index for it in items] == list(range(len(items)))
    assert {it.name for it in items} == {"a", "b", "c", "d", "e", "f", "g", "big"}


def test_output_folder_inside_the_input_is_skipped_and_the_input_itself_refused(tmp_path):
    _touch(tmp_path / "in" / "a.tif")
    _touch(tmp_path / "in" / "results" / "a_labels.tif")
    assert [it.name for it in collect_inputs(tmp_path / "in", tmp_path / "in" / "results")] == ["a"]
    with pytest.raises(InputError, match="output folder is the input folder"):
        collect_inputs(tmp_path / "in", tmp_path / "in")


def test_glob_and_files_and_duplicates(tmp_path):
    for rel in ["p1/A01.tif", "p1/A02.tif", "p2/A01.tif", "p2/readme.md"]:
        _touch(tmp_path / rel)
    items = collect_inputs([str(tmp_path / "**" / "*.tif"), tmp_path / "p1" / "A01.tif"])
    assert [it.path.relative_to(tmp_path).as_posix() for it in items] == ["p1/A01.tif", "p1/A02.tif", "p2/A01.tif"]  # A01 once
    assert [it.name for it in items] == ["p1_A01", "A02", "p2_A01"]
    with pytest.raises(InputError, match="matches no image"):
        collect_inputs(str(tmp_path / "*.png"))
    (tmp_path / "p2" / "empty").mkdir()
    with pytest.raises(InputError, match="No images found"):
        collect_inputs(tmp_path / "p2" / "empty")


def test_csv_paths_relative_to_the_csv_and_extra_columns(tmp_path):
    _touch(tmp_path / "data" / "imgs" / "m1.tif")
    _touch(tmp_path / "elsewhere" / "m2.png")
    csv = tmp_path / "data" / "mice.csv"
    csv.write_text(f"path,mouse,view\nimgs/m1.tif,M001,dorsal\n{tmp_path / 'elsewhere' / 'm2.png'},M002,lateral\n")
    items = collect_inputs(csv)
    assert [it.path for it in items] == [tmp_path / "data" / "imgs" / "m1.tif", tmp_path / "elsewhere" / "m2.png"]
    assert [it.extra for it in items] == [{"mouse": "M001", "view": "dorsal"}, {"mouse": "M002", "view": "lateral"}]
    (tmp_path / "no_path.csv").write_text("file\nx.tif\n")
    with pytest.raises(InputError, match="no 'path' column"):
        collect_inputs(tmp_path / "no_path.csv")
    (tmp_path / "clash.csv").write_text("path,n_objects\nx.tif,3\n")
    with pytest.raises(InputError, match="columns the tables already use"):
        collect_inputs(tmp_path / "clash.csv")


def test_unique_names_put_parent_folders_then_the_suffix_in_front():
    paths = [Path("/d/p1/A01.tif"), Path("/d/p2/A01.tif"), Path("/d/x/B.tif"), Path("/d/x/B.png"), Path("/d/solo.ome.tif")]
    names = unique_names(paths)
    assert len(set(names)) == len(names)
    assert names[0] == "p1_A01" and names[1] == "p2_A01" and names[-1] == "solo"
    assert names[2].endswith("B_tif") and names[3].endswith("B_png")


def test_log_skips_a_torn_line_and_the_next_record_survives_it(tmp_path):
    log = DoneLog(tmp_path)
    log.append({"input": "/a.tif", "status": "done"})
    log.close()
    with open(log.path, "ab") as f:
        f.write(b'{"input": "/b.tif", "sta')  # killed while writing
    log.append({"input": "/c.tif", "status": "done"})
    log.append({"input": "/a.tif", "status": "failed"})  # the latest line per input wins
    log.close()
    latest = DoneLog(tmp_path).latest()
    assert set(latest) == {"/a.tif", "/c.tif"} and latest["/a.tif"]["status"] == "failed"
    assert all(json.loads(line) for line in log.path.read_text().splitlines()[2:])


def test_fingerprint_and_identity(tmp_path):
    f = _touch(tmp_path / "a.tif", b"abc")
    fp = fingerprint(f, sha256=True)
    assert fp["size"] == 3 and fp["sha256"].startswith("ba7816bf")
    ident = Identity(str(f), "a", fp["size"], fp["mtime_ns"], fp["sha256"], "m", "", "p", "")
    rec = ident.record("done")
    assert ident.matches(rec, by_hash=False) and ident.matches(rec, by_hash=True)
    time.sleep(0.01)
    os.utime(f, ns=(fp["mtime_ns"] + 10**9, fp["mtime_ns"] + 10**9))  # touched, same content
    fp2 = fingerprint(f, sha256=True)
    touched = Identity(str(f), "a", fp2["size"], fp2["mtime_ns"], fp2["sha256"], "m", "", "p", "")
    assert not touched.matches(rec, by_hash=False) and touched.matches(rec, by_hash=True)
    other_model = Identity(**{**ident.__dict__, "model_hash": "m2"})
    assert not other_model.matches(rec, by_hash=False)
    z = tmp_path / "img.zarr"
    _touch(z / "c" / "0", b"1234")
    _touch(z / "zarr.json", b"{}")
    assert fingerprint(z)["size"] == 6
    assert fingerprint(tmp_path / "missing.tif")["size"] == -1


def test_batch_modules_import_without_torch_dask_or_qt():
    mods = ["inputs", "manifest", "tables", "image_task", "worker", "blocks", "executors", "progress", "run"]
    code = "import sys\n" + "".join(f"import napari_impc_dl.distributed.{m}\n" for m in mods) + "print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not {m for m in out if m.split(".")[0] in {"torch", "distributed", "napari", "PyQt5", "qtpy"}}
