"""DICOM radiographs: MONOCHROME1 inverted, pixel spacing carried as microns, one clear line for bad files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_impc_dl.errors import InputError
from dicom_files import write_dicom
from napari_impc_dl.io.image import open_image


def _read(src):
    H, W = src.spatial_shape
    return src.read((), slice(0, H), slice(0, W))[0]


def test_monochrome2_reads_as_is_with_its_pixel_size(tmp_path):
    x = np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) * 100
    with open_image(write_dicom(tmp_path / "a.dcm", x, spacing=(0.1, 0.1))) as src:
        assert np.array_equal(_read(src), x)
        assert src.slide["pixel_size_um"] == pytest.approx(100.0)
        assert src.name == "a"


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    x = np.zeros((20, 20), np.uint16)
    x[2:4, 2:4] = 1000  # white = low signal in MONOCHROME1: these pixels are the dark ones
    with open_image(write_dicom(tmp_path / "b.dcm", x, photometric="MONOCHROME1", spacing=None, imager_spacing=(0.05, 0.05))) as src:
        y = _read(src)
        assert y[0, 0] > y[2, 2]
        assert int(y[0, 0]) - int(y[2, 2]) == 1000
        assert src.slide["pixel_size_um"] == pytest.approx(50.0)


def test_a_scanner_file_without_suffix_is_recognised(tmp_path):
    x = np.full((16, 16), 7, np.uint16)
    path = write_dicom(tmp_path / "IM0001", x)
    with open_image(path) as src:
        assert np.array_equal(_read(src), x)


def test_dicom_without_pixel_data_is_one_clear_line(tmp_path):
    with pytest.raises(InputError, match="without pixel data"):
        open_image(write_dicom(tmp_path / "report.dcm", with_pixels=False))


def test_damaged_dicom_is_one_clear_line(tmp_path):
    p = tmp_path / "broken.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI")
    with pytest.raises(InputError, match="DICOM"):
        open_image(p)


def test_no_spacing_means_no_pixel_size(tmp_path):
    with open_image(write_dicom(tmp_path / "c.dcm", np.ones((16, 16)), spacing=None)) as src:
        assert src.slide is None


def test_napari_opens_a_dicom_with_its_pixel_size(tmp_path):
    from napari_impc_dl._reader import get_reader

    x = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    p = str(write_dicom(tmp_path / "IM0002", x, spacing=(0.05, 0.05)))
    (data, meta, kind), = get_reader(p)(p)
    assert kind == "image" and np.array_equal(np.asarray(data), x)
    assert meta["scale"] == [0.05, 0.05] and meta["units"] == ["mm", "mm"] and meta["name"] == "IM0002"
