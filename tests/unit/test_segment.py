"""`segment` end to end on the plumbing level (tiny random model): files, columns, stacks, the zarr path."""

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from csv_expect import fifteen_digits

from napari_impc_dl import api
from napari_impc_dl.cli import main


@pytest.fixture
def image_2d(tmp_path):
    from napari_impc_dl.synthetic import make_nuclei_image

    img, _ = make_nuclei_image((300, 260), seed=9)
    p = tmp_path / "cells.tif"
    tifffile.imwrite(p, img)
    return p


def test_outputs_and_provenance(tmp_path, capsys, image_2d, tiny_checkpoint):
    out = tmp_path / "res"
    assert main(["segment", str(image_2d), "--out", str(out), "--model", str(tiny_checkpoint), "--tile", "128", "--foreground-threshold", "0.3"]) == 0
    stdout = capsys.readouterr().out
    assert "objects" in stdout and str(out / "counts.csv") in stdout
    labels = tifffile.imread(out / "cells_labels.tif")
    assert labels.shape == (300, 260) and labels.dtype == np.uint16  # what Fiji and QuPath read as labels
    objects, counts = pd.read_csv(out / "objects.csv"), pd.read_csv(out / "counts.csv")
    assert len(counts) == 1 and counts.n_objects[0] == len(objects) == labels.max()
    for col in ["image", "label", "area", "centroid_y", "centroid_x", "bbox_min_y", "mean_intensity_c0", "max_intensity_c0", "eccentricity", "solidity", "model_name", "model_hash"]:
        assert col in objects.columns
    assert set(objects.model_name) == {"tiny-test"} and counts.model_hash[0] == objects.model_hash[0]
    assert counts.foreground_threshold[0] == 0.3 and counts.tile[0] == 128
    if len(objects):
        assert (objects.area.to_numpy() == np.bincount(labels.ravel())[objects.label.to_numpy()]).all()
    assert sorted(p.name for p in out.iterdir()) == ["cells_labels.tif", "counts.csv", "objects.csv"]  # nothing else left behind


def test_inputs_are_never_overwritten(tmp_path, capsys, tiny_checkpoint):
    img = (np.random.default_rng(0).random((64, 64)) * 1000).astype(np.uint16)
    src = tmp_path / "x_labels.tif"  # named like an output
    tifffile.imwrite(src, img)
    assert main(["segment", str(src), "--out", str(tmp_path), "--model", str(tiny_checkpoint)]) == 0
    assert np.array_equal(tifffile.imread(src), img)
    img2 = tmp_path / "y.tif"
    tifffile.imwrite(img2, img)
    lab = tmp_path / "y_labels.tif"
    # an input whose name is another input's output name is refused
    tifffile.imwrite(lab, img)
    rc = main(["segment", str(img2), str(lab), "--out", str(tmp_path), "--model", str(tiny_checkpoint)])
    assert rc == 2 and "overwrite an input" in capsys.readouterr().err
    assert np.array_equal(tifffile.imread(lab), img)


def test_stack_is_segmented_plane_by_plane(tmp_path, tiny_checkpoint):
    from napari_impc_dl.synthetic import make_nuclei_image

    stack = np.stack([make_nuclei_image((96, 96), seed=s)[0] for s in range(3)])
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, stack, metadata={"axes": "ZYX"})
    rep = api.segment([p], tmp_path / "o", model=tiny_checkpoint, foreground_threshold=0.3)
    labels = tifffile.imread(rep.label_files[0])
    objects = pd.read_csv(rep.objects_csv)
    assert labels.shape == (3, 96, 96)
    assert "z" in objects.columns and set(objects.z) <= {0, 1, 2}
    # ids are unique across the stack and each object lies in its own plane
    for _, row in objects.iterrows():
        assert (labels[int(row.z)] == row.label).sum() == row.area


def test_large_images_stream_to_zarr_with_the_same_result(tmp_path, image_2d, tiny_checkpoint):
    small = api.segment([image_2d], tmp_path / "a", model=tiny_checkpoint, foreground_threshold=0.3, block=256, block_halo=32)
    big = api.segment([image_2d], tmp_path / "b", model=tiny_checkpoint, foreground_threshold=0.3, block=256, block_halo=32, in_memory_limit_mpx=0.01)
    assert big.label_files[0].name == "cells_labels.zarr"
    z = zarr.open_array(str(big.label_files[0]), mode="r")
    assert np.array_equal(z[:], tifffile.imread(small.label_files[0]))
    assert pd.read_csv(big.objects_csv).drop(columns=[]).equals(pd.read_csv(small.objects_csv))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["cells_labels.zarr", "counts.csv", "objects.csv"]


def test_multichannel_image_with_channel_choice(tmp_path, tiny_checkpoint):
    from napari_impc_dl.synthetic import make_nuclei_image

    a, _ = make_nuclei_image((96, 96), seed=1)
    img = np.stack([np.zeros_like(a) + 7, a])  # CYX, channel 0 constant
    p = tmp_path / "two.tif"
    tifffile.imwrite(p, img, metadata={"axes": "CYX"})
    rep = api.segment([p], tmp_path / "o", model=tiny_checkpoint, channel=1, foreground_threshold=0.3)
    objects = pd.read_csv(rep.objects_csv)
    assert "mean_intensity_c1" in objects.columns and "mean_intensity_c0" not in objects.columns


def test_objects_csv_equals_the_tables_of_each_image_with_provenance(tmp_path):
    """The CLI's objects.csv is byte-identical to the per-image tables with provenance columns (what the napari
    Export writes; floats to 15 significant digits), across stacks, several images and postprocessing blocks that
    own no object."""
    from napari_impc_dl.io.export import with_provenance
    from napari_impc_dl.synthetic import make_nuclei_image

    stack = np.stack([make_nuclei_image((520, 300), seed=s)[0] for s in (1, 2)])
    stack[1, 330:] = stack[1].min()  # the lower of this plane's two blocks owns no object
    p = tmp_path / "zstack.tif"
    tifffile.imwrite(p, stack, metadata={"axes": "ZYX"})
    other = tmp_path / "single.tif"
    tifffile.imwrite(other, make_nuclei_image((200, 210), seed=4)[0])
    out = tmp_path / "res"
    report = api.segment([p, other], out, block=256, block_halo=64, device="cpu")
    text = (out / "objects.csv").read_text()
    assert report.n_objects > 100
    frames = []
    for src in (p, other):
        res = api.segment_image(src, "nuclei", api.SegmentConfig(block=256, block_halo=64, device="cpu"))
        frames.append(with_provenance(res.objects, res.name, res.model))
    from napari_impc_dl.io.outputs import _csv_chunks

    both = pd.concat(frames, ignore_index=True)
    assert text == b"".join(_csv_chunks(both)).decode()
    assert text == fifteen_digits(both).to_csv(index=False)
    table = pd.read_csv(out / "objects.csv")
    assert table["label"].dtype == np.int64 and table["area"].dtype == np.int64  # empty blocks kept ints as ints
