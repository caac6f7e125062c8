"""Whole-slide scans in: Aperio-SVS-like pyramidal TIFFs read lazily (levels, microns per pixel), a level chosen by
resolution, segmented, exported in full-resolution coordinates, shown by our napari reader as a pyramid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_impc_dl.errors import InputError
from napari_impc_dl.io.image import open_image


def write_svs(path, image: np.ndarray, mpp: float | None = 0.25, factors=(2, 4)):
    """An SVS-like file: tiled baseline with Aperio's description, a thumbnail page, then reduced tiled levels."""
    h, w = image.shape
    desc = f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=70|AppMag = 40" + (f"|MPP = {mpp}" if mpp else "")
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, tile=(256, 256), description=desc, photometric="minisblack")
        tw.write(image[::16, ::16], description="Aperio thumbnail", photometric="minisblack", subfiletype=1)
        for f in factors:
            level = image.reshape(h // f, f, w // f, f).mean(axis=(1, 3)).astype(image.dtype)
            tw.write(level, tile=(256, 256), description=desc.replace(f"{w}x{h} [", f"{w // f}x{h // f} ["), photometric="minisblack", subfiletype=1)
    return path


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    from napari_impc_dl.synthetic.nuclei import make_nuclei_image

    img, _ = make_nuclei_image((1024, 1024), seed=21, density=0.25, scale=2.0)  # nuclei twice the usual size at level 0
    return write_svs(tmp_path_factory.mktemp("slides") / "scan.svs", (img >> 4).astype(np.uint8) if img.dtype == np.uint16 else img)


def test_levels_and_microns_per_pixel_are_read_and_a_level_is_chosen_by_resolution(slide):
    with open_image(slide) as s:
        assert s.spatial_shape == (1024, 1024) and s.slide == {"level": 0, "n_levels": 3, "downsample": 1.0, "pixel_size_um": 0.25}
    with open_image(slide, pixel_size_um=0.5) as s:
        assert s.spatial_shape == (512, 512) and s.slide["level"] == 1 and s.slide["pixel_size_um"] == 0.5
    with open_image(slide, pixel_size_um=0.8) as s:  # the coarsest level no coarser than asked
        assert s.slide["level"] == 1
    with open_image(slide, level=2) as s:
        assert s.spatial_shape == (256, 256) and s.slide["downsample"] == 4.0
        tile = s.read((), slice(0, 64), slice(0, 64))
        assert tile.shape == (1, 64, 64)
    with pytest.raises(InputError, match="level 5 does not exist"):
        open_image(slide, level=5)


def test_no_pixel_size_in_the_file_asks_for_a_level(tmp_path):
    path = write_svs(tmp_path / "bare.svs", np.zeros((512, 512), np.uint8) + np.arange(512, dtype=np.uint8), mpp=None)
    with pytest.raises(InputError, match="does not say its pixel size"):
        open_image(path, pixel_size_um=1.0)
    with pytest.raises(InputError, match="not a pyramidal TIFF"):
        open_image(tmp_path / "x.npy" if np.save(tmp_path / "x.npy", np.zeros((8, 8))) is None else None, level=1)


def test_segment_a_level_and_export_in_full_resolution_coordinates(slide, tmp_path):
    from shapely.geometry import shape

    from napari_impc_dl.cli import main
    from napari_impc_dl.io.outlines import rasterize

    assert main(["segment", str(slide), "--out", str(tmp_path / "out"), "--pixel-size", "0.5", "--device", "cpu", "--export", "geojson", "roi"]) == 0
    import pandas as pd

    counts = pd.read_csv(tmp_path / "out" / "counts.csv")
    assert (counts.level[0], counts.downsample[0], counts.pixel_size_um[0]) == (1, 2.0, 0.5)
    labels = tifffile.imread(tmp_path / "out" / "scan_labels.tif")
    assert labels.shape == (512, 512) and counts.n_objects[0] > 10
    full = np.kron(labels, np.ones((2, 2), labels.dtype))  # the labels drawn on the full-resolution image
    features = json.loads((tmp_path / "out" / "scan.geojson").read_text())["features"]
    assert len(features) == counts.n_objects[0]
    for f in features[:40]:
        lab = int(f["properties"]["name"])
        m = rasterize(shape(f["geometry"]), (1024, 1024))
        assert (m & (full == lab)).sum() / (m | (full == lab)).sum() >= 0.98


def test_napari_reader_shows_the_pyramid(slide):
    from napari_impc_dl._reader import get_reader

    reader = get_reader(str(slide))
    assert reader is not None
    (data, meta, kind), = reader(str(slide))
    assert kind == "image" and meta.get("multiscale") and [d.shape for d in data] == [(1024, 1024), (512, 512), (256, 256)]
