"""``batch`` in this process: failures recorded and the run goes on, resume, interrupt + rerun, CSV columns, exit codes.

Small synthetic nuclei images (64 x 64) and the bundled ``nuclei`` model, loaded once per session.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_impc_dl import api
from napari_impc_dl.cli import main
from napari_impc_dl.errors import CancelToken


def write_images(folder: Path, n: int, size: int = 64, seed: int = 0, sub: bool = True) -> list[Path]:
    """``n`` small nuclei images, every third one in a subfolder."""
    from napari_impc_dl.synthetic import make_nuclei_image

    paths = []
    for i in range(n):
        img, _ = make_nuclei_image((size, size), seed=seed + i)
        p = folder / ("sub" if sub and i % 3 == 2 else "") / f"img{i:02d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(p, img)
        paths.append(p)
    return paths


def corrupt(path: Path) -> Path:
    """A TIFF whose image data is cut off half way (a copy that did not finish)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def tables(out: Path) -> dict[str, pd.DataFrame]:
    return {n: pd.read_csv(out / f"{n}.csv") for n in ("objects", "counts") if (out / f"{n}.csv").exists()}


def sorted_rows(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame.astype(str).to_numpy()))


@pytest.fixture(scope="module")
def folder12(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch12")
    paths = write_images(root / "in", 12)
    corrupt(paths[5])
    return root / "in", paths


def test_folder_with_a_corrupt_file_completes_and_records_it(tmp_path, folder12, starter):
    folder, paths = folder12
    seen = []
    r = api.batch(folder, tmp_path / "out", model=starter, progress=lambda d, t, s: seen.append((d, t, s)))
    out = tmp_path / "out"
    assert r.n_inputs == 12 and len(r.computed) == 12 and r.n_failed == 1
    fails = pd.read_csv(out / "failures.csv")
    assert list(fails.columns) == ["path", "reason"] and fails.path.tolist() == [str(paths[5])]
    assert "truncated" in fails.reason[0] and "\n" not in fails.reason[0]
    t = tables(out)
    assert len(t["counts"]) == 11 and "img05" not in set(t["counts"].image)
    assert t["counts"].n_objects.sum() == len(t["objects"]) == r.n_objects > 0
    assert not t["objects"].duplicated(["image", "label"]).any()
    assert t["counts"].image.tolist() == [p.stem for i, p in enumerate(sorted(paths)) if p != paths[5]]  # input order
    for name in t["counts"].image:
        labels = tifffile.imread(out / f"{name}_labels.tif")
        assert labels.max() == int(t["counts"].set_index("image").n_objects[name])
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 12 and manifest.status.value_counts().to_dict() == {"done": 11, "failed": 1}
    assert seen[-1][:2] == (12, 12) and "1 failed" in seen[-1][2]
    assert not any(p.name.endswith(".part") for p in out.rglob("*")) and not any((out / ".batch" / "tmp").glob("*"))  # nothing half-written
    assert not [t for t in threading.enumerate() if t.name.startswith("impc-")]  # no writer thread outlives the run


def test_tables_equal_those_of_segment(tmp_path, starter):
    paths = write_images(tmp_path / "in", 4, sub=False)
    api.segment(paths, tmp_path / "seg", model=starter)
    api.batch(tmp_path / "in", tmp_path / "bat", model=starter)
    for name in ("objects.csv", "counts.csv"):
        assert (tmp_path / "seg" / name).read_bytes() == (tmp_path / "bat" / name).read_bytes(), name
    for p in paths:
        assert np.array_equal(tifffile.imread(tmp_path / "seg" / f"{p.stem}_labels.tif"), tifffile.imread(tmp_path / "bat" / f"{p.stem}_labels.tif"))


def test_four_kinds_of_bad_file_four_lines_in_failures(tmp_path, starter):
    folder = tmp_path / "in"
    write_images(folder, 3, sub=False)
    unreadable = folder / "unreadable.tif"
    if os.geteuid() != 0:
        shutil.copy(folder / "img00.tif", unreadable)
        unreadable.chmod(0)
    else:  # root reads any file: a link to nowhere is the unreadable file there
        unreadable.symlink_to(folder / "gone.tif")
    (folder / "empty.tif").write_bytes(b"")
    (folder / "notes.png").write_text("not an image, just a text file\n")
    tifffile.imwrite(folder / "six_d.tif", np.zeros((2, 2, 2, 2, 16, 16), np.uint16))
    r = api.batch(folder, tmp_path / "out", model=starter)
    fails = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert len(fails) == 4 and r.n_failed == 4
    assert sorted(Path(p).name for p in fails.path) == ["empty.tif", "notes.png", "six_d.tif", "unreadable.tif"]
    assert fails.set_index(fails.path.map(lambda p: Path(p).name)).reason["six_d.tif"].count("6D") == 1
    assert len(pd.read_csv(tmp_path / "out" / "counts.csv")) == 3
    assert main(["batch", str(folder), "--out", str(tmp_path / "out"), "--model", "nuclei", "--device", "cpu"]) == 1  # something failed


def test_resume_skips_finished_images_and_redoes_changed_ones(tmp_path, starter):
    paths = write_images(tmp_path / "in", 5)
    out = tmp_path / "out"
    first = api.batch(tmp_path / "in", out, model=starter)
    before = {n: (out / n).read_bytes() for n in ("objects.csv", "counts.csv")}
    again = api.batch(tmp_path / "in", out, model=starter)
    assert again.computed == [] and len(again.skipped) == 5
    assert {n: (out / n).read_bytes() for n in before} == before
    img = tifffile.imread(paths[1])
    tifffile.imwrite(paths[1], np.ascontiguousarray(img[:, ::-1]))  # new content (and mtime)
    (out / f"{paths[3].stem}_labels.tif").unlink()  # an output gone missing
    third = api.batch(tmp_path / "in", out, model=starter)
    assert sorted(third.computed) == sorted([paths[1].stem, paths[3].stem])
    assert api.batch(tmp_path / "in", out, model=starter, force=True).computed == first.computed
    assert len(api.batch(tmp_path / "in", out, model=starter, foreground_threshold=0.6).computed) == 5  # new parameters
    assert len(pd.read_csv(out / "counts.csv")) == 5 and (pd.read_csv(out / "counts.csv").foreground_threshold == 0.6).all()


def test_interrupted_run_resumes_with_the_same_tables_and_no_duplicates(tmp_path, folder12, starter):
    folder, _ = folder12
    ref = tmp_path / "ref"
    api.batch(folder, ref, model=starter)
    out = tmp_path / "out"
    token = CancelToken()

    def stop_after_five(done, total, stage):
        if done >= 5:
            token.cancel()

    from napari_impc_dl.errors import Cancelled

    with pytest.raises(Cancelled):
        api.batch(folder, out, model=starter, progress=stop_after_five, cancel=token)
    manifest = pd.read_csv(out / "manifest.csv")
    finished = set(manifest.image[manifest.status != "pending"])
    assert len(finished) == 5
    second = api.batch(folder, out, model=starter)
    assert set(second.computed) == set(manifest.image) - finished  # only the unfinished ones
    for name, frame in tables(ref).items():
        got = tables(out)[name]
        assert sorted_rows(got) == sorted_rows(frame) and not got.duplicated().any(), name
    assert (ref / "failures.csv").read_bytes() == (out / "failures.csv").read_bytes()


def test_csv_columns_are_carried_into_the_tables(tmp_path, starter):
    paths = write_images(tmp_path / "imgs", 2, sub=False)
    csv = tmp_path / "plate.csv"
    csv.write_text(f"path,well,treatment\nimgs/{paths[0].name},A01,dmso\n{paths[1]},A02,drug\n")
    out = tmp_path / "out"
    api.batch(csv, out, model=starter)
    counts, objects = pd.read_csv(out / "counts.csv"), pd.read_csv(out / "objects.csv")
    assert list(counts.columns[:3]) == ["image", "well", "treatment"] and counts.well.tolist() == ["A01", "A02"]
    assert list(objects.columns[:3]) == ["image", "well", "treatment"]
    assert set(objects[objects.image == paths[1].stem].treatment) == {"drug"}


def test_inputs_are_never_overwritten(tmp_path, starter):
    paths = write_images(tmp_path / "in", 2, sub=False)
    clash = tmp_path / "in" / f"{paths[0].stem}_labels.tif"
    shutil.copy(paths[1], clash)
    before = clash.read_bytes()
    csv = tmp_path / "list.csv"
    csv.write_text(f"path\n{paths[0]}\n{clash}\n")
    with pytest.raises(Exception, match="overwrite"):
        api.batch(csv, tmp_path / "in", model=starter)
    assert clash.read_bytes() == before


def test_cli_exit_codes_and_summary(tmp_path, capsys):
    write_images(tmp_path / "in", 2, sub=False)
    assert main(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--preset", "nuclei", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 image(s) done" in out and "objects:" in out and "manifest:" in out
    assert main(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--cluster", "slurm:4"]) == 2
    assert "--cluster must be local:N" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "nothing"), "--out", str(tmp_path / "out2")]) == 2  # a bad argument: nothing run
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_exports_per_image_and_one_merged_masks_csv_that_survives_resume(tmp_path, starter):
    """--export roi geojson rle: a ROI set and a GeoJSON per image, one masks.csv over all (merged like the tables,
    no duplicates after a resume), equal to the label files; adding --export later redoes the images."""
    import roifile

    from napari_impc_dl.io.shape_exports import decode_masks_csv

    write_images(tmp_path / "in", 4, sub=False)
    out = tmp_path / "out"
    api.batch(tmp_path / "in", out, model=starter)
    assert not (out / "masks.csv").exists()
    rep = api.batch(tmp_path / "in", out, model=starter, export=["roi", "geojson", "rle"])
    assert len(rep.computed) == 4  # the export is part of what a finished image is: asked for later, redone
    again = api.batch(tmp_path / "in", out, model=starter, export=["rle", "geojson", "roi"])
    assert again.computed == [] and len(again.skipped) == 4
    masks = decode_masks_csv(out / "masks.csv")
    counts = pd.read_csv(out / "counts.csv")
    assert sorted(masks) == [f"img{i:02d}" for i in range(4)] and len(pd.read_csv(out / "masks.csv")) == counts.n_objects.sum()
    for name, n in zip(counts.image, counts.n_objects):
        assert np.array_equal(masks[name], tifffile.imread(out / f"{name}_labels.tif"))
        assert len(roifile.roiread(out / f"{name}_rois.zip")) == n and (out / f"{name}.geojson").exists()
