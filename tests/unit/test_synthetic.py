"""Synthetic nuclei: ground-truth invariants, realism guards, reproducibility, and the writers."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_impc_dl.errors import InputError
from napari_impc_dl.synthetic import (
    dataset_image_seed,
    make_nuclei_image,
    write_large_nuclei_zarr,
    write_nuclei_dataset,
)
from napari_impc_dl.synthetic import nuclei as nuclei_mod


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs |= {(min(x, y), max(x, y)) for x, y in zip(a[m].tolist(), b[m].tolist())}
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_image_and_labels_types_and_ground_truth_invariants(seed):
    image, labels = make_nuclei_image((96, 160), seed)
    assert image.shape == labels.shape == (96, 160)
    assert image.dtype == np.uint16 and labels.dtype == np.int32
    n = int(labels.max())
    assert n > 0
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))  # consecutive, background present
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        _, n_pieces = ndi.label(labels[sl] == i)  # 4-connectivity
        assert n_pieces == 1, f"label {i} is split into {n_pieces} pieces"
    assert np.bincount(labels.ravel())[1:].min() >= 8  # tiny fragments removed


def test_same_seed_same_image_and_different_seeds_differ():
    a_img, a_lab = make_nuclei_image((64, 64), 3)
    b_img, b_lab = make_nuclei_image((64, 64), 3)
    c_img, _ = make_nuclei_image((64, 64), 4)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


def test_density_scale_and_sizes():
    _, sparse = make_nuclei_image((256, 256), 5, density=0.05, scale=1.0)
    _, dense = make_nuclei_image((256, 256), 5, density=0.45, scale=1.0)
    assert dense.max() > 4 * sparse.max()
    assert 0.3 < (dense > 0).mean() < 0.6
    # equivalent radius of nuclei away from the border stays within the advertised ~5-16 px at scale 1
    inner = np.setdiff1d(np.unique(dense), np.unique(np.r_[dense[0], dense[-1], dense[:, 0], dense[:, -1]]))
    radii = np.sqrt(np.bincount(dense.ravel())[inner] / np.pi)
    assert 7 < np.median(radii) < 12 and radii.max() < 19
    _, small = make_nuclei_image((256, 256), 5, density=0.3, scale=0.6)
    _, big = make_nuclei_image((256, 256), 5, density=0.3, scale=1.5)
    area = lambda lab: np.median(np.bincount(lab.ravel())[1:])  # noqa: E731
    assert area(big) > 3 * area(small)


def test_dense_images_have_touching_nuclei_and_sparse_mostly_not():
    _, dense = make_nuclei_image((256, 256), 2, density=0.45)
    assert len(_touching_pairs(dense)) >= 20
    _, sparse = make_nuclei_image((256, 256), 2, density=0.05)
    assert len(_touching_pairs(sparse)) <= sparse.max()


@pytest.mark.parametrize("seed", range(6))
def test_every_nucleus_is_visible_above_background(seed):
    image, labels = make_nuclei_image((256, 256), seed)
    img = image.astype(float)
    far = ~ndi.binary_dilation(labels > 0, iterations=6)
    bg = img[far]
    bg_hi = np.percentile(bg, 50) + 3 * bg.std()
    means = ndi.mean(img, labels, np.arange(1, labels.max() + 1))
    assert np.all(means > bg_hi), f"{np.sum(means <= bg_hi)} nuclei hardly above background"
    assert img[labels > 0].mean() > 2 * np.median(bg) - img.min()  # nuclei clearly brighter than background


def test_image_has_noise_blur_and_offset():
    image, labels = make_nuclei_image((128, 128), 11)
    assert image.min() > 50  # camera offset
    flat = image[40:60, 40:60].astype(float)
    assert np.diff(flat, axis=1).std() > 0  # noisy, not a clean rendering
    # blur: intensity does not jump from background to full brightness in one pixel at every edge
    assert len(np.unique(image)) > 100


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="density"):
        make_nuclei_image((64, 64), density=0.9)
    with pytest.raises(InputError, match="too small"):
        make_nuclei_image((8, 64))
    with pytest.raises(InputError, match="scale"):
        make_nuclei_image((64, 64), scale=10)


def test_empty_density_gives_empty_labels():
    image, labels = make_nuclei_image((64, 64), 0, density=0.0)
    assert labels.max() == 0 and image.dtype == np.uint16


def test_dataset_seeds_are_distinct():
    seeds = {dataset_image_seed(s, i) for s in range(20) for i in range(50)}
    assert len(seeds) == 1000


def test_write_nuclei_dataset_names_content_and_reproducibility(tmp_path):
    paths = write_nuclei_dataset(tmp_path / "ds", 3, size=64, seed=9)
    assert [p.name for p in paths] == [f"nuclei_9_{i:04d}.tif" for i in range(3)]
    for i, p in enumerate(paths):
        mask = tifffile.imread(tmp_path / "ds" / "masks" / p.name)
        img = tifffile.imread(p)
        ref_img, ref_lab = make_nuclei_image((64, 64), dataset_image_seed(9, i))
        np.testing.assert_array_equal(img, ref_img)
        np.testing.assert_array_equal(mask, ref_lab)
    assert sorted(x.name for x in (tmp_path / "ds" / "images").iterdir()) == [p.name for p in paths]  # no temp files
    again = write_nuclei_dataset(tmp_path / "again", 3, size=64, seed=9)
    other = write_nuclei_dataset(tmp_path / "other", 3, size=64, seed=10)
    for p, q, r in zip(paths, again, other):
        np.testing.assert_array_equal(tifffile.imread(p), tifffile.imread(q))
        assert not np.array_equal(tifffile.imread(p), tifffile.imread(r))
    # images within one dataset differ too
    assert not np.array_equal(tifffile.imread(paths[0]), tifffile.imread(paths[1]))


def test_write_nuclei_dataset_unwritable_folder_is_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write"):
        write_nuclei_dataset(blocker / "ds", 1, size=32)


def test_large_zarr_is_zarr3_blockwise_seamless_and_reproducible(tmp_path, monkeypatch):
    import zarr

    windows = []
    real = nuclei_mod._rasterize

    def spy(nuc, y0, x0, h, w):
        windows.append((h, w))
        return real(nuc, y0, x0, h, w)

    monkeypatch.setattr(nuclei_mod, "_rasterize", spy)
    path = write_large_nuclei_zarr(tmp_path / "big.zarr", 384, chunk=128, seed=2)
    arr = zarr.open_array(str(path), mode="r")
    assert arr.metadata.zarr_format == 3
    assert arr.shape == (384, 384) and arr.dtype == np.uint16 and arr.chunks == (128, 128)
    assert len(windows) == 9 and max(max(w) for w in windows) < 384  # rendered block by block
    assert [p.name for p in tmp_path.iterdir()] == ["big.zarr"]  # temporary folder renamed away
    x = arr[:].astype(float)
    assert x.std() > 0 and (x > np.percentile(x, 99)).any()
    # seams: the jump across a block border is like the jump between any two neighbouring columns
    col_jump = np.abs(np.diff(x, axis=1)).mean(axis=0)
    row_jump = np.abs(np.diff(x, axis=0)).mean(axis=1)
    for jumps in (col_jump, row_jump):
        typical = np.median(jumps)
        assert jumps[127] < 1.6 * typical and jumps[255] < 1.6 * typical
    with pytest.raises(InputError, match="already exists"):
        write_large_nuclei_zarr(path, 384, chunk=128, seed=2)
    write_large_nuclei_zarr(path, 384, chunk=128, seed=2, overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[:], x.astype(np.uint16))


def test_large_zarr_rejects_tiny_chunks(tmp_path):
    with pytest.raises(InputError, match="chunk"):
        write_large_nuclei_zarr(tmp_path / "x.zarr", 256, chunk=32)


def test_dataset_progress_and_cancel_leave_no_partial_dataset(tmp_path):
    from napari_impc_dl.errors import Cancelled, CancelToken

    token = CancelToken()
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if done == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        write_nuclei_dataset(tmp_path / "ds", 4, size=32, progress=progress, cancel=token)
    assert seen == [(1, 4), (2, 4)]
    assert list((tmp_path / "ds" / "images").iterdir()) == list((tmp_path / "ds" / "masks").iterdir()) == []


def test_large_zarr_cancel_removes_temporary_folder(tmp_path):
    from napari_impc_dl.errors import Cancelled, CancelToken

    token = CancelToken()
    with pytest.raises(Cancelled):
        write_large_nuclei_zarr(
            tmp_path / "big.zarr", 256, chunk=128, progress=lambda d, t: token.cancel(), cancel=token
        )
    assert list(tmp_path.iterdir()) == []
