"""Export (tables + masks), pyramids and the viewer-shaped facade (segment_layer / relabel_layer), without Qt."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from csv_expect import fifteen_digits

from napari_impc_dl import api
from napari_impc_dl.errors import CancelToken, Cancelled, InputError
from napari_impc_dl.io import export


@pytest.fixture(scope="module")
def small():
    from napari_impc_dl.synthetic import make_nuclei_image

    return make_nuclei_image((200, 240), seed=11, density=0.3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model):
    from napari_impc_dl.models.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(tiny_model.net, tiny_model.card, path)
    return path


def test_pyramid_shapes_and_nearest_levels():
    assert export.pyramid_shapes((3, 5000, 1000), 1024) == [(3, 5000, 1000), (3, 2500, 500), (3, 1250, 250), (3, 625, 125)]
    a = np.arange(37 * 53, dtype=np.int32).reshape(37, 53)
    levels = export.build_pyramid(a, lambda k, s: np.zeros(s, a.dtype), min_side=8, chunk=5)
    for k, lv in enumerate(levels):
        assert np.array_equal(lv, a[:: 2**k, :: 2**k])


def test_scratch_arrays_and_cleanup():
    s = export.Scratch()
    arr = s.array((2, 300, 400), np.int32, name="labels", chunk=128)
    assert arr.chunks == (1, 128, 128) and s.dir.exists()
    export.Scratch.remove([arr])
    assert not any(s.dir.iterdir())
    s.cleanup()
    s.cleanup()
    assert not s.dir.exists()


def test_streamed_tif_equals_whole(tmp_path, monkeypatch, small):
    lab = np.stack([small[1], small[1][::-1]])
    monkeypatch.setattr(export, "STREAM_PIXELS", 1000)
    z = zarr.create_array(str(tmp_path / "l.zarr"), shape=lab.shape, dtype=lab.dtype, chunks=(1, 64, 64))
    z[:] = lab
    export.write_labels_tif(tmp_path / "s.tif", z, tile=64)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert tif.pages[0].is_tiled and tif.series[0].axes == "ZYX"
        assert np.array_equal(tif.asarray(), lab)


def test_ome_zarr_labels_roundtrip_through_reader(tmp_path, small):
    from napari_impc_dl._reader import get_reader

    lab = small[1]
    export.write_labels_ome_zarr(tmp_path / "x_labels.ome.zarr", lab, name="x", min_side=64, chunk=64)
    root = zarr.open_group(str(tmp_path / "x_labels.ome.zarr"), mode="r")
    ome = root.attrs["ome"]
    assert ome["version"] == "0.5" and "image-label" in ome
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["0", "1", "2"]
    assert ome["multiscales"][0]["datasets"][2]["coordinateTransformations"][0]["scale"] == [4.0, 4.0]
    [(data, meta, kind)] = get_reader(str(tmp_path / "x_labels.ome.zarr"))(str(tmp_path / "x_labels.ome.zarr"))
    assert kind == "labels" and meta["multiscale"]
    assert np.array_equal(np.asarray(data[0][:]), lab) and np.array_equal(np.asarray(data[1][:]), lab[::2, ::2])


def test_export_columns_equal_the_cli(tmp_path, small, checkpoint):
    """The same image through the CLI's ``segment`` and through ``export``: identical columns and rows."""
    img_path = tmp_path / "cells.tif"
    tifffile.imwrite(img_path, small[0])
    cli = api.segment([img_path], tmp_path / "cli", model=checkpoint, device="cpu", foreground_threshold=0.3)
    res = api.segment_image(img_path, str(checkpoint), api.SegmentConfig(device="cpu", foreground_threshold=0.3))
    rep = api.export([res], tmp_path / "exp", masks="tif")
    for name in ("objects.csv", "counts.csv"):
        a, b = pd.read_csv(tmp_path / "cli" / name), pd.read_csv(tmp_path / "exp" / name)
        assert list(a.columns) == list(b.columns), name
        pd.testing.assert_frame_equal(a, b)
    assert np.array_equal(tifffile.imread(rep.masks[0]), tifffile.imread(cli.label_files[0]))
    assert rep.masks[0].name == "cells_labels.tif"


def test_measure_labels_non_consecutive_ids_and_stacks(small):
    lab = small[1].copy()
    lab[lab == 3] = 0
    lab[lab == 5] = 500
    objects, n = export.measure_labels(lab, small[0])
    assert n == len(np.unique(lab)) - 1 == len(objects)
    assert 500 in set(objects["label"]) and 3 not in set(objects["label"])
    assert objects.loc[objects["label"] == 500, "area"].item() == int((lab == 500).sum())
    assert "mean_intensity_c0" in objects.columns
    stack, n2 = export.measure_labels(np.stack([lab, lab]), stack_axes="Z")
    assert n2 == 2 * n and list(stack["z"].unique()) == [0, 1]


def test_export_refuses_inputs_duplicates_and_leaves_nothing_on_cancel(tmp_path, small):
    res = api.measure_labels(small[1], name="a")
    src = tmp_path / "a_labels.tif"
    tifffile.imwrite(src, small[1])
    with pytest.raises(InputError, match="overwrite an input"):
        api.export([res], tmp_path, masks="tif", protect=[src])
    with pytest.raises(InputError, match="overwrite an input"):  # an output inside an input folder is refused too
        api.export([res], tmp_path / "in.zarr", protect=[tmp_path / "in.zarr"])
    with pytest.raises(InputError, match="share the name"):
        api.export([res, res], tmp_path / "o")
    with pytest.raises(InputError, match="mask format"):
        api.export([res], tmp_path / "o", masks="png")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        api.export([res], tmp_path / "c", masks="ome-zarr", cancel=token)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_labels.tif", "c"]
    assert not list((tmp_path / "c").iterdir())


def test_segment_layer_on_disk_with_pyramid_and_relabel(small, tiny_model):
    img = np.tile(small[0], (3, 3))  # 600 x 720
    cfg = api.SegmentConfig(device="cpu", foreground_threshold=0.3)
    mem = api.segment_layer(img, tiny_model, cfg, name="t")
    disk = api.segment_layer(img, tiny_model, cfg, name="t", memory_limit_mpx=0.1, pyramid_side=256)
    try:
        assert mem.scratch is None and len(mem.levels) == 1 and isinstance(mem.levels[0], np.ndarray)
        assert isinstance(disk.levels[0], zarr.Array) and len(disk.levels) == 1  # 720 <= 1024: pyramid_shapes stops
        assert np.array_equal(np.asarray(disk.levels[0][:]), mem.levels[0])
        again = api.relabel_layer(disk, img, cfg.model_copy(update={"foreground_threshold": 0.6}), pyramid_side=256)
        assert again.scratch is disk.scratch and again.levels[0] is not disk.levels[0]
        ref = api.relabel(mem.result, img, cfg.model_copy(update={"foreground_threshold": 0.6}))
        assert np.array_equal(np.asarray(again.levels[0][:]), ref.labels)
        assert again.result.n_objects == ref.n_objects
    finally:
        disk.scratch.cleanup()
    assert not disk.scratch.dir.exists()


def test_available_devices_lists_cpu_last():
    devs = api.available_devices(use_torch=False)
    assert devs[-1].id == "cpu" and all(d.id.startswith(("cuda:", "mps")) for d in devs[:-1])
    assert api.available_devices(use_torch=True)[-1].label == "cpu (CPU)"


def test_devices_from_the_driver_without_torch(monkeypatch, tmp_path):
    from napari_impc_dl import devices

    gpus = tmp_path / "gpus" / "0000:01:00.0"
    gpus.mkdir(parents=True)
    (gpus / "information").write_text("Model: \t\t NVIDIA H100 80GB HBM3\nIRQ: 42\n")
    real_path = devices.Path
    monkeypatch.setattr(devices, "Path", lambda p: tmp_path / "gpus" if p == "/proc/driver/nvidia/gpus" else real_path(p))
    found = devices.detect_devices(use_torch=False)
    assert [d.label for d in found] == ["cuda:0 (NVIDIA H100 80GB HBM3)", "cpu (CPU)"]
    assert not found[0].confirmed and found[1].confirmed


def test_intensity_columns_measure_the_chosen_channel(small, tiny_model):
    """With ``channel=2`` the ``*_c2`` columns hold channel 2 (was: channel 0's values under channel 2's name)."""
    img = small[0]
    stack = np.stack([np.full_like(img, 5), np.full_like(img, 7), img])
    cfg = api.SegmentConfig(device="cpu", channel=2, channel_axis=0, foreground_threshold=0.3)
    for res in (r := api.segment_image(stack, tiny_model, cfg)), api.relabel(r, stack, cfg):
        assert res.n_objects > 0
        assert "mean_intensity_c2" in res.objects.columns and not (res.objects["max_intensity_c2"] == 5).all()


def test_fast_csv_writer_is_pandas_with_floats_to_fifteen_digits(tmp_path):
    """Ints and text exactly as pandas writes them; floats as pandas writes them once rounded to 15 significant
    digits (correctly rounded, ties included); NaN empty; infinities, tiny and huge values as Python's repr."""
    import pandas as pd

    from napari_impc_dl.io.outputs import _csv_chunks, _fast_csv_ok, write_csv_atomic

    rng = np.random.default_rng(0)
    n = 3000
    k = rng.integers(0, 12, n)
    frame = pd.DataFrame({
        "image": ["a,b", 'say "hi"', "plain", None, "x", "\u00e9"] * (n // 6),
        "label": np.arange(n, dtype=np.int64),
        "u": np.arange(n, dtype=np.uint16),
        "i": rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64),
        "value": rng.normal(size=n) * 10.0 ** rng.integers(-8, 18, n),
        "decimal": np.round(rng.normal(size=n) * 1000 * 10.0**k) / 10.0**k,  # short decimals stay as typed
        "dyadic": rng.integers(0, 2**40, n) / 2.0 ** rng.integers(0, 30, n),  # exact ties at the 15th digit
        "model_hash": pd.array(["918158e0f37b"] * n, dtype="string"),
    })
    frame.loc[[1, 7], "value"] = [np.nan, np.inf]
    frame.loc[[2, 8, 9, 10, 11], "value"] = [-np.inf, -0.0, 1e16, 99999999999999.9, 0.0001]
    frame.loc[0, "i"] = np.iinfo(np.int64).min
    expected = fifteen_digits(frame)
    for f, e in ((frame, expected), (frame.iloc[:0], expected.iloc[:0]), (frame[["label"]], expected[["label"]])):
        assert _fast_csv_ok(f)
        assert b"".join(_csv_chunks(f, rows=7)).decode() == e.to_csv(index=False)  # in pieces of 7 rows
    text = b"".join(_csv_chunks(frame)).decode()
    assert "\n2607.0," not in text and ",0.0001," in text and ",-0.0," in text and ",inf," in text
    write_csv_atomic(tmp_path / "t.csv", frame)
    assert (tmp_path / "t.csv").read_text(encoding="utf-8") == expected.to_csv(index=False)
    back = pd.read_csv(tmp_path / "t.csv")
    assert np.allclose(back["value"], frame["value"], rtol=1e-14, atol=0, equal_nan=True)  # 15 digits: within 5e-15
    odd = pd.DataFrame({"flag": [True, False], "f32": np.float32([0.1, 2.5]), "nul": ["a\0b", "c"]})
    for col in odd.columns:
        assert not _fast_csv_ok(odd[[col]])  # left to pandas
    write_csv_atomic(tmp_path / "o.csv", odd)
    assert (tmp_path / "o.csv").read_text() == odd.to_csv(index=False)


def test_csv_floats_read_back_as_what_they_were_to_fifteen_digits():
    """The spreadsheet sees what pandas would write: 2607.0, 0.5, 1e-05; a typical measurement keeps 15 digits."""
    from napari_impc_dl.io._csv import csv_bytes

    v = np.array([2607.0, 0.5, 1e-05, 3.9298245614035086, -181.01754385964912, 0.0, 1e15, 123456789012345.0])
    lines = csv_bytes([("v", v)], "\n").decode().splitlines()
    assert lines == ["v", "2607.0", "0.5", "1e-05", "3.92982456140351", "-181.017543859649", "0.0", "1000000000000000.0", "123456789012345.0"]


def test_label_tiffs_use_the_smallest_unsigned_type(tmp_path):
    """uint16 up to 65,535 objects (what Fiji and QuPath read as labels), uint32 beyond; ids are kept exactly."""
    import tifffile

    from napari_impc_dl.io.outputs import label_dtype, write_tif_atomic

    assert label_dtype(0) == np.uint16 and label_dtype(65535) == np.uint16 and label_dtype(65536) == np.uint32
    many = np.arange(300 * 300, dtype=np.int32).reshape(300, 300)  # 89,999 ids
    write_tif_atomic(tmp_path / "many.tif", many, label_dtype(int(many.max())))
    few = many % 1000
    write_tif_atomic(tmp_path / "few.tif", few, label_dtype(int(few.max())))
    back_many, back_few = tifffile.imread(tmp_path / "many.tif"), tifffile.imread(tmp_path / "few.tif")
    assert back_many.dtype == np.uint32 and np.array_equal(back_many, many)
    assert back_few.dtype == np.uint16 and np.array_equal(back_few, few)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.tif", "many.tif"]
