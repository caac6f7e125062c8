"""The napari reader, writers and sample data as plain functions (they import no napari / Qt)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from napari_impc_dl import _reader, _sample_data, _writer


def _read(path):
    reader = _reader.get_reader(str(path))
    assert reader is not None
    return reader(str(path))


def test_get_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    assert _reader.get_reader(str(tmp_path / "a.png")) is None
    assert _reader.get_reader(str(tmp_path / "missing.tif")) is None
    assert _reader.get_reader([str(tmp_path / "x.zarr"), str(tmp_path / "y.zarr")]) is None


def test_plain_zarr_is_lazy_and_labels_by_name(tmp_path):
    img = zarr.create_array(str(tmp_path / "img.zarr"), shape=(300, 200), dtype="uint16", chunks=(100, 100))
    img[:] = 7
    [(data, meta, kind)] = _read(tmp_path / "img.zarr")
    assert kind == "image" and isinstance(data, zarr.Array) and meta["name"] == "img"
    zarr.create_array(str(tmp_path / "img_labels.zarr"), shape=(300, 200), dtype="int32", chunks=(100, 100))
    [(data, meta, kind)] = _read(tmp_path / "img_labels.zarr")
    assert kind == "labels" and meta["name"] == "img_labels"


def test_large_plane_gets_strided_levels_without_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(_reader, "PYRAMID_SIDE", 1000)
    z = zarr.create_array(str(tmp_path / "big.zarr"), shape=(2, 3000, 2000), dtype="uint8", chunks=(1, 500, 500))
    [(data, meta, kind)] = _read(tmp_path / "big.zarr")
    assert meta["multiscale"] and data[0] is not None and isinstance(data[0], zarr.Array)
    assert [d.shape for d in data][:3] == [(2, 3000, 2000), (2, 1500, 1000), (2, 750, 500)]
    assert max(data[-1].shape[-2:]) <= 512
    assert z.nchunks_initialized == 0  # nothing was read or written


def test_ome_zarr_with_levels_channels_and_labels(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="w")
    a0 = root.create_array("0", shape=(2, 64, 64), dtype="uint16", chunks=(1, 32, 32))
    root.create_array("1", shape=(2, 32, 32), dtype="uint16", chunks=(1, 32, 32))
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    ds = [{"path": p, "coordinateTransformations": [{"type": "scale", "scale": [1.0, s, s]}]} for p, s in (("0", 0.5), ("1", 1.0))]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": ds}]}
    labels = root.create_group("labels")
    labels.attrs["ome"] = {"version": "0.5", "labels": ["cells"]}
    cells = labels.create_group("cells")
    cells.create_array("0", shape=(64, 64), dtype="int32", chunks=(32, 32))
    cells.attrs["ome"] = {
        "version": "0.5",
        "image-label": {},
        "multiscales": [{"axes": axes[1:], "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.5, 0.5]}]}]}],
    }
    (img, imeta, ikind), (lab, lmeta, lkind) = _read(tmp_path / "s.ome.zarr")
    assert ikind == "image" and imeta["multiscale"] and imeta["channel_axis"] == 0 and imeta["scale"] == [0.5, 0.5]
    assert img[0] is a0 or img[0].shape == a0.shape
    assert lkind == "labels" and lmeta["name"] == "s cells" and lmeta["scale"] == [0.5, 0.5]


def test_tiff_is_lazy_pyramids_and_labels(tmp_path):
    data = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)
    tifffile.imwrite(tmp_path / "raw.tif", data)
    [(arr, meta, kind)] = _read(tmp_path / "raw.tif")
    assert isinstance(arr, np.memmap) and kind == "image"
    with tifffile.TiffWriter(tmp_path / "pyr.ome.tif") as tif:
        tif.write(data, subifds=1, tile=(64, 64), compression="zlib")
        tif.write(data[::2, ::2], subfiletype=1, tile=(64, 64), compression="zlib")
    [(levels, meta, kind)] = _read(tmp_path / "pyr.ome.tif")
    assert meta["multiscale"] and [lv.shape for lv in levels] == [(256, 256), (128, 128)]
    assert np.array_equal(np.asarray(levels[1][:]), data[::2, ::2])
    tifffile.imwrite(tmp_path / "x_labels.tif", (data % 5).astype(np.int32), compression="zlib")
    [(arr, meta, kind)] = _read(tmp_path / "x_labels.tif")
    assert kind == "labels" and not isinstance(arr, np.ndarray)


def test_writers(tmp_path):
    lab = np.zeros((40, 50), np.int32)
    lab[5:15, 5:15], lab[20:30, 30:45] = 1, 2
    meta = {"name": "L", "metadata": {}, "features": pd.DataFrame()}
    [p] = _writer.write_labels_tif(str(tmp_path / "a"), lab, meta)
    assert p.endswith("a.tif") and np.array_equal(tifffile.imread(p), lab)
    [p] = _writer.write_labels_zarr(str(tmp_path / "b.zarr"), [lab, lab[::2, ::2]], dict(meta, multiscale=True))
    assert np.array_equal(np.asarray(_read(p)[0][0]), lab)
    [p] = _writer.write_features_csv(str(tmp_path / "t.csv"), lab, meta)  # no table yet: measured
    table = pd.read_csv(p)
    assert list(table["label"]) == [1, 2] and list(table["area"]) == [100, 150]
    assert table.columns[0] == "image" and set(table["image"]) == {"L"}
    rec = {"napari_impc_dl": {"image": "img", "model": {"name": "m", "hash": "abc"}}}
    feats = pd.DataFrame({"label": [1, 2], "area": [100, 150], "index": [1, 2]})
    [p] = _writer.write_features_csv(str(tmp_path / "u.csv"), lab, {"name": "L", "metadata": rec, "features": feats})
    table = pd.read_csv(p)
    assert list(table.columns) == ["image", "label", "area", "model_name", "model_hash"] and set(table["model_hash"]) == {"abc"}
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]


def test_sample_data():
    [(img, meta, kind), (lab, lmeta, lkind)] = _sample_data.nuclei()
    assert kind == "image" and lkind == "labels" and img.shape == lab.shape == (1024, 1024)
    assert lmeta["visible"] is False and lab.max() > 100
    [(coins, meta, kind)] = _sample_data.coins()
    assert coins.ndim == 2 and meta["name"] == "coins"
    [(cell, meta, kind)] = _sample_data.cell()
    assert cell.ndim == 2


@pytest.mark.slow
def test_large_sample_is_a_lazy_zarr():
    [(arr, meta, kind)] = _sample_data.large_nuclei(size=512)
    assert isinstance(arr, zarr.Array) and arr.shape == (512, 512) and kind == "image"


def test_reader_writer_samples_export_import_without_qt_or_torch():
    """They run in napari's process at discovery / file open: no Qt, no napari, no torch."""
    import subprocess
    import sys

    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'superqt', 'vispy', 'torch'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import napari_impc_dl._reader, napari_impc_dl._writer, napari_impc_dl._sample_data, napari_impc_dl.io.export, napari_impc_dl.devices\n"
        "from napari_impc_dl import api\n"
        "assert api.available_devices()[-1].id == 'cpu'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
