"""open_image / ImageSource: every format round-trips, axes are right, reads stay lazy, bad input is an InputError."""

from __future__ import annotations

import json
import os
import tracemalloc
from collections import Counter

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from napari_impc_dl.errors import InputError
from napari_impc_dl.io import ImageSource, open_image

RNG = np.random.default_rng(0)


def rand(shape, dtype=np.uint16):
    return RNG.integers(0, 1000, size=shape).astype(dtype)


def full_window(src: ImageSource, plane=()):
    return src.read(plane, slice(None), slice(None))


# ---------------------------------------------------------------------------- formats round trip


def test_tiff_2d_round_trip(tmp_path):
    data = rand((40, 50))
    tifffile.imwrite(tmp_path / "Cells.TIF", data)
    with open_image(tmp_path / "Cells.TIF") as src:
        assert (src.name, src.axes, src.shape, src.dtype) == ("Cells", "YX", (40, 50), np.uint16)
        assert (src.n_channels, src.spatial_shape, src.stack_shape) == (1, (40, 50), ())
        assert list(src.planes()) == [()]
        window = src.read((), slice(5, 20), slice(10, 45))
        assert window.shape == (1, 15, 35) and window.flags.c_contiguous and window.flags.writeable
        np.testing.assert_array_equal(window[0], data[5:20, 10:45])
        np.testing.assert_array_equal(src.sample()[0], data.ravel())  # small image: every pixel


def test_ome_tiff_axes_from_metadata(tmp_path):
    data = rand((2, 3, 4, 32, 48))
    tifffile.imwrite(tmp_path / "cells.ome.tif", data, metadata={"axes": "TCZYX"})
    with open_image(tmp_path / "cells.ome.tif") as src:
        assert (src.name, src.axes, src.n_channels, src.stack_shape) == ("cells", "TCZYX", 3, (2, 4))
        assert len(list(src.planes())) == 8
        np.testing.assert_array_equal(src.read((1, 2), slice(0, 20), slice(8, 40)), data[1, :, 2, 0:20, 8:40])


def test_imagej_hyperstack(tmp_path):
    data = rand((5, 2, 32, 32))
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    with open_image(tmp_path / "ij.tif") as src:
        assert src.axes == "ZCYX" and src.stack_shape == (5,)
        np.testing.assert_array_equal(full_window(src, (3,)), data[3])


@pytest.mark.parametrize("planar", [False, True])
def test_rgb_tiff_samples_are_channels(tmp_path, planar):
    data = rand((32, 40, 3), np.uint8)
    stored = np.moveaxis(data, -1, 0) if planar else data
    tifffile.imwrite(tmp_path / "rgb.tif", stored, photometric="rgb", planarconfig="separate" if planar else None)
    with open_image(tmp_path / "rgb.tif") as src:
        assert src.axes == ("CYX" if planar else "YXC") and src.n_channels == 3
        np.testing.assert_array_equal(full_window(src), np.moveaxis(data, -1, 0))


def test_rgb_png_round_trip(tmp_path):
    data = rand((32, 40, 3), np.uint8)
    iio.imwrite(tmp_path / "photo.png", data)
    with open_image(tmp_path / "photo.png") as src:
        assert (src.name, src.axes, src.shape) == ("photo", "YXC", (32, 40, 3))
        np.testing.assert_array_equal(src.read((), slice(2, 10), slice(0, 8)), np.moveaxis(data[2:10, :8], -1, 0))


def test_png_opaque_alpha_is_dropped_but_real_alpha_kept(tmp_path):
    rgba = rand((32, 32, 4), np.uint8)
    rgba[..., 3] = 255
    iio.imwrite(tmp_path / "opaque.png", rgba)
    rgba[0, 0, 3] = 7
    iio.imwrite(tmp_path / "alpha.png", rgba)
    assert open_image(tmp_path / "opaque.png").n_channels == 3
    assert open_image(tmp_path / "alpha.png").n_channels == 4


def test_grey_png_and_bmp_and_jpeg(tmp_path):
    grey = rand((32, 48), np.uint8)
    for name in ("g.png", "g.bmp", "g.jpg"):
        iio.imwrite(tmp_path / name, grey)
        with open_image(tmp_path / name) as src:
            assert src.axes == "YX" and src.shape == (32, 48), name
    np.testing.assert_array_equal(full_window(open_image(tmp_path / "g.png"))[0], grey)


def test_npy_is_memory_mapped_and_native_endian(tmp_path):
    data = np.arange(32 * 40, dtype=">u2").reshape(32, 40)
    np.save(tmp_path / "big.npy", data)
    with open_image(tmp_path / "big.npy") as src:
        assert isinstance(src.lazy_array, np.memmap)
        window = src.read((), slice(0, 4), slice(0, 4))
        assert window.dtype == np.dtype("=u2") and src.dtype.isnative
        np.testing.assert_array_equal(window[0], data[:4, :4])
        assert not isinstance(window, np.memmap)


def test_bool_reads_as_uint8(tmp_path):
    np.save(tmp_path / "mask.npy", np.eye(32, dtype=bool))
    src = open_image(tmp_path / "mask.npy")
    assert src.dtype == np.uint8 and full_window(src).dtype == np.uint8 and full_window(src).max() == 1


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "uint32", "float16", "float32", "float64"])
def test_numeric_dtypes(tmp_path, dtype):
    np.save(tmp_path / "d.npy", np.ones((20, 20), dtype))
    assert full_window(open_image(tmp_path / "d.npy")).dtype == np.dtype(dtype)


@pytest.mark.parametrize("fmt", [2, 3])
def test_plain_zarr_round_trip(tmp_path, fmt):
    data = rand((3, 64, 80))
    z = zarr.create_array(tmp_path / "img.zarr", shape=data.shape, chunks=(1, 32, 32), dtype="u2", zarr_format=fmt)
    z[:] = data
    with open_image(tmp_path / "img.zarr") as src:
        assert (src.name, src.axes, src.n_channels) == ("img", "CYX", 3)
        assert isinstance(src.lazy_array, zarr.Array) and src.lazy_array.read_only
        np.testing.assert_array_equal(src.read((), slice(10, 50), slice(30, 70)), data[:, 10:50, 30:70])


def test_zarr_group_with_one_array(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("image", shape=(64, 64), dtype="f4")[:] = 1.5
    with open_image(tmp_path / "g.zarr") as src:
        assert src.axes == "YX" and float(full_window(src).mean()) == 1.5


def _write_ome_zarr_v04(root, data, axes):
    """An OME-Zarr v0.4 image written by hand: zarr v2 group, two levels, multiscales attrs."""
    group = zarr.open_group(root, mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, chunks=(1,) * (data.ndim - 2) + (32, 32), dtype=data.dtype)[:] = data
    group.create_array("1", shape=data.shape[:-2] + (data.shape[-2] // 2, data.shape[-1] // 2), dtype=data.dtype)
    kinds = {"c": "channel", "t": "time"}
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": kinds.get(a, "space")} for a in axes],
            "datasets": [{"path": "0"}, {"path": "1"}],
        }
    ]


def test_ome_zarr_v04_full_resolution_and_axes(tmp_path):
    data = rand((2, 64, 96))
    _write_ome_zarr_v04(tmp_path / "nuclei.ome.zarr", data, "cyx")
    with open_image(tmp_path / "nuclei.ome.zarr") as src:
        assert (src.name, src.axes, src.shape) == ("nuclei", "CYX", (2, 64, 96))
        np.testing.assert_array_equal(src.read((), slice(0, 64), slice(40, 90)), data[:, :, 40:90])


def test_ome_zarr_v05_attributes_under_ome(tmp_path):
    data = rand((6, 32, 32))  # 6 planes the heuristics would call Z; metadata says they are channels
    group = zarr.open_group(tmp_path / "v05.zarr", mode="w", zarr_format=3)
    group.create_array("s0", shape=data.shape, dtype="u2")[:] = data
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [{"path": "s0"}]}]}
    with open_image(tmp_path / "v05.zarr") as src:
        assert src.axes == "CYX" and src.n_channels == 6


def test_bioformats2raw_layout(tmp_path):
    data = rand((1, 32, 32))
    _write_ome_zarr_v04(tmp_path / "b2r.zarr" / "0", data, "zyx")
    zarr.open_group(tmp_path / "b2r.zarr", mode="a", zarr_format=2).attrs["bioformats2raw.layout"] = 3
    assert open_image(tmp_path / "b2r.zarr").axes == "ZYX"


def test_from_array_wraps_in_memory_data():
    src = ImageSource.from_array(rand((5, 32, 32)), name="layer")
    assert src.axes == "ZYX" and src.path is None and full_window(src, (2,)).shape == (1, 32, 32)


# ---------------------------------------------------------------------------- axes heuristics and override


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((32, 40), "YX"),
        ((32, 40, 3), "YXC"),
        ((32, 40, 4), "YXC"),
        ((3, 32, 40), "CYX"),
        ((10, 32, 40), "ZYX"),
        ((10, 3, 32, 40), "ZCYX"),
        ((5, 10, 32, 40), "TZYX"),
        ((10, 32, 40, 3), "ZYXC"),
        ((2, 3, 4, 32, 40), "TZCYX"),
    ],
)
def test_channel_heuristics(tmp_path, shape, axes):
    np.save(tmp_path / "a.npy", np.zeros(shape, np.uint8))
    src = open_image(tmp_path / "a.npy")
    assert src.axes == axes
    plane = next(iter(src.planes()))
    assert src.read(plane, slice(0, 8), slice(0, 8)).shape == (src.n_channels, 8, 8)


@pytest.mark.parametrize(
    ("shape", "channel_axis", "axes"),
    [
        ((10, 32, 40), 0, "CYX"),  # many channels
        ((3, 32, 40), None, "ZYX"),  # a 3-slice stack, not RGB
        ((32, 40, 3), None, "YXZ"),
        ((2, 5, 32, 40), -3, "ZCYX"),
        ((32, 40, 6), 2, "YXC"),
        ((2, 3, 4, 32, 40), 1, "TCZYX"),
    ],
)
def test_channel_axis_override(tmp_path, shape, channel_axis, axes):
    np.save(tmp_path / "a.npy", np.zeros(shape, np.uint8))
    assert open_image(tmp_path / "a.npy", channel_axis=channel_axis).axes == axes


def test_override_keeps_metadata_stack_names(tmp_path):
    tifffile.imwrite(tmp_path / "t.ome.tif", rand((3, 4, 32, 32)), metadata={"axes": "TZYX"})
    assert open_image(tmp_path / "t.ome.tif", channel_axis=1).axes == "TCYX"
    assert open_image(tmp_path / "t.ome.tif", channel_axis=None).axes == "TZYX"


def test_rgb_multichannel_tiff_needs_an_override(tmp_path):
    tifffile.imwrite(tmp_path / "m.ome.tif", rand((2, 32, 32, 3), np.uint8), photometric="rgb", metadata={"axes": "CYXS"})
    assert "cannot be read as one image" in _error(tmp_path / "m.ome.tif")
    assert open_image(tmp_path / "m.ome.tif", channel_axis=-1).axes == "ZYXC"


def test_sample_of_stack_spreads_over_planes():
    data = np.arange(20)[:, None, None] * np.ones((20, 32, 32), np.uint16)
    src = ImageSource.from_array(data, channel_axis=None)
    values = np.unique(src.sample(max_pixels=8 * 1024))
    assert len(values) == 8 and values.min() == 0 and values.max() == 19
    assert np.unique(src.sample((5,), max_pixels=100)).tolist() == [5]
    assert src.sample((5,), max_pixels=100).shape[1] <= 100


# ---------------------------------------------------------------------------- laziness


def test_tiled_tiff_reads_only_touched_tiles(tmp_path, monkeypatch):
    from tifffile.zarr import ZarrTiffStore

    data = rand((2048, 2048))
    tifffile.imwrite(tmp_path / "big.tif", data, tile=(256, 256), compression="zlib")
    keys: list[str] = []
    original_get = ZarrTiffStore.get

    async def counting_get(self, key, *args, **kwargs):
        if not key.rsplit("/", 1)[-1].startswith("."):
            keys.append(key)
        return await original_get(self, key, *args, **kwargs)

    def no_full_read(*args, **kwargs):
        raise AssertionError("whole image read")

    monkeypatch.setattr(ZarrTiffStore, "get", counting_get)
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_full_read)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_full_read)
    with open_image(tmp_path / "big.tif") as src:
        np.testing.assert_array_equal(src.read((), slice(300, 500), slice(600, 700))[0], data[300:500, 600:700])
        assert len(keys) == 1  # one 256 x 256 tile
        keys.clear()
        sample = src.sample(max_pixels=2**16)
        assert sample.shape[1] <= 2**16 and len(set(keys)) <= 16  # of 64 tiles
        assert set(np.unique(sample)) <= set(np.unique(data))


def test_big_zarr_sample_touches_few_chunks(tmp_path, monkeypatch):
    from zarr.storage import LocalStore

    shape = (8192, 8192)  # 64 MiB uint8, 1024 chunks; only a few are ever written
    z = zarr.create_array(tmp_path / "huge.zarr", shape=shape, chunks=(256, 256), dtype="u1", fill_value=0)
    z[4096:4352, 4096:4352] = 9
    touched: Counter[str] = Counter()
    original_get = LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        if "/c/" in f"/{key}":
            touched[key] += 1
        return await original_get(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    tracemalloc.start()
    with open_image(tmp_path / "huge.zarr") as src:
        window = src.read((), slice(4000, 4200), slice(4000, 4200))
        assert len(touched) == 4 and window[0, -1, -1] == 9 and window[0, 0, 0] == 0
        touched.clear()
        sample = src.sample()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sample.shape == (1, 2**20)
    assert len(touched) <= 32  # under 3 % of the 1024 chunks
    assert peak < 16 * 2**20  # far below the 64 MiB image


def test_chunk_cache_reads_equal_direct_reads_and_decode_each_chunk_once(tmp_path):
    """Windows read through the decoded-chunk cache equal zarr's own reads (stacks, channels, borders); each
    chunk is decoded once while the budget holds the image, and the budget bounds what is kept."""
    import threading

    from napari_impc_dl.io._chunks import ChunkCache

    rng = np.random.default_rng(3)
    data = rng.integers(0, 65535, (3, 2, 700, 900), dtype=np.uint16)  # Z, C, Y, X
    z = zarr.create_array(tmp_path / "s.zarr", shape=data.shape, chunks=(1, 2, 256, 320), dtype="u2")
    z[:] = data
    cache = ChunkCache(z, z.chunks, max_bytes=2**30)
    for _ in range(60):
        y0, x0 = rng.integers(0, 700), rng.integers(0, 900)
        sel = (int(rng.integers(0, 3)), slice(None), slice(y0, y0 + int(rng.integers(0, 400))), slice(x0, None))
        np.testing.assert_array_equal(cache.read(sel), data[sel])
    np.testing.assert_array_equal(cache.read((slice(None), 1, slice(690, 2000), slice(-5, None))), data[:, 1, 690:, -5:])
    assert cache.decoded <= 3 * 3 * 3  # every chunk at most once
    small = ChunkCache(z, z.chunks, max_bytes=3 * 2 * 256 * 320 * 2)  # three chunks
    threads = [threading.Thread(target=lambda k=k: small.read((k, slice(None), slice(None), slice(None)))) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert small._bytes <= small.max_bytes and 3 <= len(small._lru) < 9  # border chunks are smaller
    np.testing.assert_array_equal(small.read((2, 0, slice(None), slice(None))), data[2, 0])
    with open_image(tmp_path / "s.zarr") as src:
        assert src._cache is not None
        np.testing.assert_array_equal(src.read((1,), slice(10, 600), slice(300, 310)), data[1, :, 10:600, 300:310])
        src.sample((1,))
        before = src._cache.decoded
        src.read((1,), slice(None), slice(None))
        assert src._cache.decoded - before <= 9 - 1  # the sample's chunks were reused
    assert not src._cache._lru  # closing frees them
    assert ImageSource.from_array(z, axes="ZCYX")._cache is None  # in-memory / layer data is never cached
    assert ChunkCache.for_array(z, plane_bytes=2**30) is None  # planes bigger than the budget are read directly


# ---------------------------------------------------------------------------- errors


def _error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        open_image(path, **kwargs)
    return str(info.value)


def test_missing_file(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.tif")


def test_unsupported_extension_lists_supported(tmp_path):
    (tmp_path / "x.czi").write_bytes(b"abc")
    message = _error(tmp_path / "x.czi")
    assert "x.czi" in message and ".ome.tif" in message and ".zarr" in message


def test_folder_that_is_not_zarr(tmp_path):
    (tmp_path / "images").mkdir()
    assert "is a folder" in _error(tmp_path / "images")


def test_garbage_tif(tmp_path):
    (tmp_path / "bad.tif").write_bytes(os.urandom(2000))
    message = _error(tmp_path / "bad.tif")
    assert "bad.tif" in message and "not a valid TIFF" in message and "re-copy" in message


@pytest.mark.parametrize("layout", ["contiguous", "tiled", "pages"])
def test_truncated_tif(tmp_path, layout):
    data = rand((4, 256, 256)) if layout == "pages" else rand((256, 256))
    kwargs = {
        "contiguous": {},
        "tiled": {"tile": (64, 64), "compression": "zlib"},
        "pages": {"compression": "zlib", "photometric": "minisblack"},
    }[layout]
    tifffile.imwrite(tmp_path / "full.tif", data, **kwargs)
    blob = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(blob[: len(blob) * 2 // 3])
    message = _error(tmp_path / "cut.tif")
    assert "cut.tif" in message and "truncated" in message


def test_invalid_zarr_folder(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    assert "not a valid zarr" in _error(tmp_path / "empty.zarr")
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "zarr.json").write_text("{not json")
    assert "broken.zarr" in _error(tmp_path / "broken.zarr")


def test_zarr_group_with_many_arrays(tmp_path):
    group = zarr.open_group(tmp_path / "many.zarr", mode="w")
    group.create_array("a", shape=(32, 32), dtype="u1")
    group.create_array("b", shape=(32, 32), dtype="u1")
    assert "2 arrays" in _error(tmp_path / "many.zarr")


def test_truncated_png(tmp_path):
    iio.imwrite(tmp_path / "p.png", rand((64, 64, 3), np.uint8))
    blob = (tmp_path / "p.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(blob[: len(blob) // 2])
    assert "cut.png" in _error(tmp_path / "cut.png")


@pytest.mark.parametrize(
    ("shape", "expect"),
    [
        ((64,), "1D"),
        ((1, 1, 1, 1, 20, 20), "6D"),
        ((2, 3, 10, 32, 32), "more than two stack axes"),
        ((64, 8), "smaller than 16"),
        ((0, 64), "empty"),
    ],
)
def test_unsupported_dimensions(tmp_path, shape, expect):
    np.save(tmp_path / "a.npy", np.zeros(shape, np.uint8))
    message = _error(tmp_path / "a.npy")
    assert expect in message and "a.npy" in message


@pytest.mark.parametrize("dtype", [np.complex64, np.dtype([("a", "u1"), ("b", "f4")])])
def test_unsupported_dtypes(tmp_path, dtype):
    np.save(tmp_path / "c.npy", np.zeros((32, 32), dtype))
    assert "cannot be segmented" in _error(tmp_path / "c.npy")


@pytest.mark.parametrize("channel_axis", [3, -4, True, "c"])
def test_bad_channel_axis(tmp_path, channel_axis):
    np.save(tmp_path / "a.npy", np.zeros((3, 32, 32), np.uint8))
    assert "channel_axis" in _error(tmp_path / "a.npy", channel_axis=channel_axis)


def test_bad_plane_is_a_programming_error(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((5, 32, 32), np.uint8))
    src = open_image(tmp_path / "a.npy")
    with pytest.raises(IndexError):
        src.read((), slice(0, 4), slice(0, 4))
    with pytest.raises(IndexError):
        src.read((5,), slice(0, 4), slice(0, 4))
    src.close()
    src.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        src.read((0,), slice(0, 4), slice(0, 4))


def test_errors_are_one_line(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + os.urandom(200))
    message = _error(tmp_path / "bad.tif")
    assert "\n" not in message and len(message) < 400, json.dumps(message)
