"""Every CLI verb with relative paths from a working directory of its own, and nothing written outside its
outputs (or the model library): synth, train (both tasks), segment, batch, evaluate, classify, zoo export /
test / import, demo."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def test_every_verb_takes_relative_paths_and_writes_only_its_outputs(tmp_path, monkeypatch, capsys):
    from napari_impc_dl.cli import main

    work = tmp_path / "work"
    home = tmp_path / "library"
    (work / "in").mkdir(parents=True)
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(home))
    monkeypatch.chdir(work)
    tiny = ["--arch", "tiny", "--epochs", "1", "--device", "cpu", "--batch", "2"]
    runs = [  # (argv, the outputs it may write, relative to work)
        (["synth", "nuclei", "--n", "3", "--size", "96", "--out", "in/nuclei"], ["in/nuclei"]),
        (["synth", "shapes", "--n", "8", "--size", "128", "--out", "in/shapes"], ["in/shapes"]),
        (["train", "segmentation", "--images", "in/nuclei/images", "--masks", "in/nuclei/masks", "--out", "seg-model", "--patch", "64", *tiny], ["seg-model"]),
        (["segment", "{all:in/nuclei/images}", "--model", "seg-model", "--out", "seg", "--device", "cpu", "--diameter", "12"], ["seg"]),
        (["evaluate", "--pred", "seg", "--truth", "in/nuclei/masks", "--csv", "scores.csv"], ["scores.csv"]),
        (["batch", "in/list.csv", "--out", "batch", "--device", "cpu"], ["batch"]),
        (["train", "classification", "--level", "object", "--images", "in/shapes/images", "--labels", "in/shapes/labels", "--classes", "in/shapes/classes.csv", "--out", "cls-model", "--size", "32", *tiny], ["cls-model"]),
        (["classify", "{all:in/shapes/images}", "--model", "cls-model", "--labels", "in/shapes/labels", "--out", "cls", "--device", "cpu"], ["cls"]),
        (["zoo", "export", "nuclei", "--out", "nuclei.zip", "--authors", "Test Author"], ["nuclei.zip"]),
        (["zoo", "test", "nuclei.zip"], []),
        (["zoo", "import", "nuclei.zip", "--name", "nuclei-relative"], []),
        (["segment", "in/nuclei/images/" + "{first}", "--model", "nuclei-relative", "--out", "seg-zoo", "--device", "cpu"], ["seg-zoo"]),
        (["demo", "--out", "demo", "--device", "cpu"], ["demo"]),
    ]
    allowed: list[str] = []
    for argv, outputs in runs:
        if argv[:2] == ["batch", "in/list.csv"]:  # a CSV whose paths are relative to the CSV's own folder
            with open("in/list.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["path", "mouse"])
                for i, p in enumerate(sorted(os.listdir("in/nuclei/images"))):
                    w.writerow([f"nuclei/images/{p}", f"m{i}"])
            allowed.append("in/list.csv")
        first = sorted(os.listdir("in/nuclei/images"))[0] if Path("in/nuclei/images").is_dir() else ""
        argv = [b for a in argv for b in (sorted(f"{a[5:-1]}/{p}" for p in os.listdir(a[5:-1])) if a.startswith("{all:") else [a.replace("{first}", first)])]
        before = _files(work)
        rc = main(argv)
        out = capsys.readouterr()
        assert rc == 0, (argv, out.out[-2000:], out.err[-2000:])
        allowed += outputs
        stray = [p for p in _files(work) - before if not any(str(p) == a or str(p).startswith(a + "/") for a in allowed)]
        assert not stray, (argv, stray)
    assert (work / "seg" / "counts.csv").read_text().count("\n") == 4  # header + 3 images
    assert any((home).rglob("rdf.yaml")) or any(home.rglob("bioimageio.yaml"))  # the library got the package
    assert not any(p for p in tmp_path.iterdir() if p.name not in ("work", "library"))  # nothing beside work/

