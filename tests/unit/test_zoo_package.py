"""Opening packages safely: zip checks before anything is written, paths that stay inside, hashes, YAML errors."""

import hashlib
import os
import stat
import zipfile

import pytest

from napari_impc_dl.errors import InputError
from napari_impc_dl.zoo import package as pk


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "lib"))


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            if isinstance(data, zipfile.ZipInfo):
                z.writestr(data, b"target")
            else:
                z.writestr(name, data)
    return path


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "member, words",
    [("../evil.txt", "climbs out"), ("a/../../evil.txt", "climbs out"), ("/etc/evil.txt", "absolute"), ("C:/evil.txt", "absolute")],
)
def test_unsafe_member_names_are_refused_before_anything_is_written(tmp_path, member, words):
    work = tmp_path / "work"
    work.mkdir()
    z = _zip(work / "pkg.zip", [("rdf.yaml", "type: model\n"), (member, "pwned")])
    before = _files(work)
    with pytest.raises(InputError, match=words):
        pk.open_package(z, cache_dir=tmp_path / "lib" / "cache")
    assert _files(work) == before  # nothing next to the package
    cache = tmp_path / "lib" / "cache"
    assert not cache.exists() or not any(cache.iterdir())  # no partial extraction left in the library either
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_links_and_oversized_members_are_refused(tmp_path, monkeypatch):
    link = zipfile.ZipInfo("weights.pt")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _zip(tmp_path / "link.zip", [("rdf.yaml", "type: model\n"), ("weights.pt", link)])
    with pytest.raises(InputError, match="link"):
        pk.check_zip(z)
    big = _zip(tmp_path / "big.zip", [("rdf.yaml", "type: model\n"), ("weights.pt", b"\0" * 5000)])
    monkeypatch.setattr(pk, "MAX_MEMBER_BYTES", 4096)
    with pytest.raises(InputError, match="over the"):
        pk.open_package(big, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    monkeypatch.setattr(pk, "MAX_MEMBER_BYTES", 1 << 30)
    monkeypatch.setattr(pk, "MAX_TOTAL_BYTES", 4096)
    with pytest.raises(InputError, match="more than"):
        pk.check_zip(big)
    dup = _zip(tmp_path / "dup.zip", [("rdf.yaml", "a: 1\n"), ("RDF.yaml", "a: 2\n")])
    with pytest.raises(InputError, match="twice"):
        pk.check_zip(dup)
    with pytest.raises(InputError, match="not a readable zip"):
        pk.check_zip(_write(tmp_path / "fake.zip", b"PK\x03\x04 not really"))


def _write(p, data):
    p.write_bytes(data)
    return p


def test_zip_is_extracted_once_and_a_nested_folder_is_found(tmp_path):
    z = _zip(tmp_path / "pkg.zip", [("model/rdf.yaml", "type: model\nname: x\n"), ("model/w.pt", b"123")])
    a = pk.open_package(z, cache_dir=tmp_path / "cache")
    b = pk.open_package(z, cache_dir=tmp_path / "cache")
    assert a.root == b.root and a.rdf.name == "rdf.yaml" and (a.root / "w.pt").read_bytes() == b"123"
    assert a.zip_sha256 == hashlib.sha256(z.read_bytes()).hexdigest()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [a.zip_sha256[:24]]


def test_sources_must_stay_inside_the_package(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "rdf.yaml").write_text("type: model\n")
    (root / "w.pt").write_bytes(b"abc")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "link.pt")
    p = pk.open_package(root)
    assert p.local("w.pt", "weights") == root / "w.pt"
    assert p.local("https://zenodo.org/w.pt", "weights") is None  # remote: never fetched
    for bad in ("../secret.txt", "/etc/passwd", "sub/../../secret.txt"):
        with pytest.raises(InputError, match="outside the package"):
            p.local(bad, "weights")
    with pytest.raises(InputError, match="link that points outside"):
        p.local("link.pt", "weights")
    with pytest.raises(InputError, match="incomplete.*'missing.pt' is missing"):
        p.local("missing.pt", "weights")
    p.check_sha256(root / "w.pt", hashlib.sha256(b"abc").hexdigest(), "weights")
    with pytest.raises(InputError, match="does not match its sha256"):
        p.check_sha256(root / "w.pt", "0" * 64, "weights")


def test_malformed_yaml_names_the_line(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "rdf.yaml").write_text("type: model\nname: [unclosed\ninputs: {\n")
    with pytest.raises(InputError, match=r"not valid YAML .*line \d+"):
        pk.read_yaml(root / "rdf.yaml", "Package")
    (root / "rdf.yaml").write_text("- just\n- a list\n")
    with pytest.raises(InputError, match="does not hold a model description"):
        pk.read_yaml(root / "rdf.yaml", "Package")


def test_not_a_package(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no model description"):
        pk.open_package(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist.*never downloads"):
        pk.open_package(tmp_path / "nope.zip")
    assert pk.looks_like_package(_zip(tmp_path / "x.zip", [("a", "b")]))
    assert not pk.looks_like_package(_write(tmp_path / "m.safetensors", b"x"))
