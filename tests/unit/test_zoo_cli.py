"""`napari-impc-dl zoo import | test | list` and `segment --model NAME`; bad packages end in one clear line.

Every bad package: exit status 2, one line on stderr, nothing executed (the package's code writes a
marker file when it runs), nothing written anywhere but the model library.
"""

import shutil
import zipfile

import numpy as np
import pytest
import tifffile

pytest.importorskip("bioimageio.spec")  # the zoo extra

import zoo_packages as Z  # noqa: E402
from napari_impc_dl.cli import main


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-pkgs")
    ts, _ = Z.build_v05(d, kind="torchscript", name="nuclei-ts")
    af, _ = Z.build_v05(d, kind="arch_file", name="pkg-arch-file")
    return {"ts": ts, "af": af, "url": Z.build_url_state_dict(d), "tf": Z.build_tf_only(d), "v04": Z.build_v04(d).parent, "dir": d}


def _cli(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err.strip()


def _snapshot(root, skip):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if skip not in p.parents and p != skip)


def test_import_then_segment_by_name(tmp_path, capsys, built):
    rc, out, err = _cli(capsys, "zoo", "import", built["ts"])
    assert rc == 0, err
    for words in ("name:        nuclei-ts", "input:       raw (float32) axes batch=any, channel=1, y=16+k*8, x=16+k*8", "weights:     torchscript", "license:     MIT", "cite:        A test citation (doi:10.1234/test.5678)", "added to the model library as 'nuclei-ts'"):
        assert words in out
    rc, out, _ = _cli(capsys, "zoo", "import", built["ts"])  # the same package again: nothing to do
    assert rc == 0 and "already in the model library" in out
    rc, out, _ = _cli(capsys, "zoo", "list")
    assert rc == 0 and "nuclei-ts" in out and "1 model(s)" in out
    img = Z.test_image((1, 1, 100, 130), seed=3)[0, 0].astype(np.uint16)
    tifffile.imwrite(tmp_path / "cells.tif", img)
    rc, out, err = _cli(capsys, "segment", tmp_path / "cells.tif", "--out", tmp_path / "res", "--model", "nuclei-ts")
    assert rc == 0, err
    labels = tifffile.imread(tmp_path / "res" / "cells_labels.tif")
    assert labels.shape == (100, 130)
    import pandas as pd

    counts = pd.read_csv(tmp_path / "res" / "counts.csv", dtype={"model_hash": str})  # a hex hash such as 1234e5678901 reads as a float otherwise
    assert counts.model_name[0] == "nuclei-ts" and len(counts.model_hash[0]) == 12
    rc, _, err = _cli(capsys, "zoo", "import", built["v04"], "--name", "nuclei-ts")
    assert rc == 2 and "already holds a model called 'nuclei-ts'" in err and "--force" in err
    rc, _, err = _cli(capsys, "zoo", "import", built["v04"], "--name", "nuclei")
    assert rc == 2 and "bundled preset" in err


def test_zoo_test_prints_differences_and_exit_status(capsys, built):
    rc, out, _ = _cli(capsys, "zoo", "test", built["v04"] / "rdf.yaml")
    assert rc == 0 and "output 'output0': max abs difference" in out and "PASSED" in out
    rc, out, _ = _cli(capsys, "zoo", "test", built["url"])  # state dict only by URL, torchscript on disk: runs offline
    assert rc == 0 and "weights: torchscript" in out
    rc, _, err = _cli(capsys, "zoo", "test", built["url"], "--weights", "pytorch_state_dict")
    assert rc == 2 and "only by URL" in err and "never downloads" in err and "torchscript" in err
    # a package whose expected output is wrong fails with exit status 1
    d = built["dir"] / "wrong"
    shutil.unpack_archive(built["ts"], d)
    np.save(d / "out.npy", np.load(d / "out.npy") + 0.01)
    Z.edit_rdf(d, lambda c: c["outputs"][0]["test_tensor"].pop("sha256", None))
    rc, out, _ = _cli(capsys, "zoo", "test", d)
    assert rc == 1 and "FAIL" in out and "max abs difference 0.01" in out


def _bad_missing_file(d, built):
    z = d / "missing.zip"
    with zipfile.ZipFile(built["ts"]) as src, zipfile.ZipFile(z, "w") as dst:
        for i in src.infolist():
            if not i.filename.endswith(".torchscript"):
                dst.writestr(i, src.read(i))
    return z, ["torchscript weights", "is missing"]


def _bad_sha256(d, built):
    import hashlib

    f = d / "sha"
    shutil.unpack_archive(built["ts"], f)
    w = next(f.glob("*.torchscript"))
    digest = hashlib.sha256(w.read_bytes()).hexdigest()
    Z.edit_rdf(f, lambda c: c["weights"]["torchscript"].update(sha256=digest))
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    w.write_bytes(bytes(data))
    return f, ["does not match its sha256", "altered or damaged"]


def _bad_zip_slip(d, built):
    z = d / "slip.zip"
    with zipfile.ZipFile(built["ts"]) as src, zipfile.ZipFile(z, "w") as dst:
        for i in src.infolist():
            dst.writestr(i, src.read(i))
        dst.writestr("../../escaped.txt", "pwned")
    return z, ["climbs out", "zip-slip"]


def _bad_yaml(d, built):
    f = d / "yaml"
    f.mkdir()
    (f / "rdf.yaml").write_text("type: model\nname: broken\ninputs: [{id: raw\n")
    return f, ["not valid YAML", "line"]


def _bad_invalid(d, built):
    f = d / "invalid"
    shutil.unpack_archive(built["ts"], f)
    Z.edit_rdf(f, lambda c: c.pop("inputs"))
    return f, ["not a valid BioImage Model Zoo model description", "inputs"]


@pytest.mark.parametrize(
    "make, command",
    [
        (_bad_missing_file, "import"), (_bad_sha256, "test"), (_bad_zip_slip, "import"), (_bad_yaml, "import"), (_bad_invalid, "test"),
        (lambda d, b: (b["tf"], ["TensorFlow/Keras", "keras_hdf5", "torchscript, pytorch_state_dict, onnx"]), "test"),
        (lambda d, b: (b["tf"], ["TensorFlow/Keras"]), "import"),
        (lambda d, b: (b["af"], ["smallnet.py", "--trust-code"]), "test"),
    ],
    ids=["missing-file", "sha256", "zip-slip", "malformed-yaml", "invalid-rdf", "tensorflow-only-test", "tensorflow-only-import", "untrusted-code"],
)
def test_bad_packages_fail_cleanly(tmp_path, capsys, monkeypatch, built, make, command):
    d = tmp_path / "bad"
    d.mkdir()
    pkg, words = make(d, built)
    mark = tmp_path / "executed.txt"
    monkeypatch.setenv("IMPC_ZOO_TEST_MARK", str(mark))
    lib = tmp_path / "lib"
    before = _snapshot(tmp_path, lib)
    rc, out, err = _cli(capsys, "zoo", command, pkg)
    assert rc == 2, (out, err)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    for w in words:
        assert w.lower() in err.lower(), err
    assert not mark.exists()  # no package code ran
    assert _snapshot(tmp_path, lib) == before  # nothing written outside the model library
    assert not (lib / "models").exists() or not any((lib / "models").iterdir())
    assert not any(p.name == "escaped.txt" for p in tmp_path.parent.rglob("escaped.txt"))


def test_trusted_code_runs_only_when_asked(tmp_path, capsys, monkeypatch, built):
    mark = tmp_path / "executed.txt"
    monkeypatch.setenv("IMPC_ZOO_TEST_MARK", str(mark))
    rc, out, _ = _cli(capsys, "zoo", "test", built["af"], "--trust-code")
    assert rc == 0 and "PASSED" in out and mark.exists()
