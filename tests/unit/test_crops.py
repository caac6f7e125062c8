"""Object crops and image-level resizing: the exact windows, padding rules, streaming from lazy arrays."""

import numpy as np
import pytest

from napari_impc_dl.classify.crops import crop_windows, iter_crop_batches, object_boxes
from napari_impc_dl.classify.resize import read_plane, resize_square
from napari_impc_dl.models.card import CropRule


def _labels():
    lab = np.zeros((100, 120), np.int32)
    lab[10:20, 30:50] = 1  # 10 x 20 box
    lab[60:90, 5:15] = 3  # id 2 absent: ids need not be consecutive
    lab[95:100, 110:120] = 4  # touches the bottom-right border
    return lab


def _all(read, lab, rule, size, **kw):
    out = list(iter_crop_batches(read, lab, lab.shape, rule, size, **kw))
    return np.concatenate([i for i, _ in out]), np.concatenate([c for _, c in out])


def test_boxes_streamed_in_bands_equal_whole():
    lab = _labels()
    a, b = object_boxes(lab), object_boxes(lab, band=7)
    assert list(a.labels) == [1, 3, 4]
    for k in ("y0", "y1", "x0", "x1"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    assert (a.y0[0], a.y1[0], a.x0[0], a.x1[0]) == (10, 20, 30, 50)


def test_fixed_crop_is_the_exact_window_and_mask_only_this_object():
    lab = _labels()
    img = np.arange(lab.size, dtype=np.float32).reshape(1, *lab.shape)
    rule = CropRule(mode="fixed", side=16, input="image+mask", padding="zero")
    ids, crops = _all(lambda ys, xs: img[:, ys, xs], lab, rule, 16)
    assert crops.shape == (3, 2, 16, 16)
    k = list(ids).index(1)  # centre (15, 40): window rows 7..23, cols 32..48
    assert np.array_equal(crops[k, 0], img[0, 7:23, 32:48])
    assert np.array_equal(crops[k, 1], (lab[7:23, 32:48] == 1).astype(np.float32))


@pytest.mark.parametrize("padding", ["zero", "reflect", "none"])
def test_border_padding_rules(padding):
    lab = _labels()
    img = np.full((1, *lab.shape), 5.0, np.float32)
    rule = CropRule(mode="fixed", side=20, input="image", padding=padding)
    wy, wx, side = crop_windows(object_boxes(lab), rule, lab.shape)
    ids, crops = _all(lambda ys, xs: img[:, ys, xs], lab, rule, 20)
    c = crops[list(ids).index(4), 0]
    if padding == "zero":
        assert c.min() == 0 and c.max() == 5  # outside the image: zero
    else:
        assert np.all(c == 5)  # mirrored, or shifted inside
    if padding == "none":
        assert wy.max() + 20 <= lab.shape[0] and wx.max() + 20 <= lab.shape[1]


def test_bbox_crop_scales_the_object_to_the_input():
    lab = np.zeros((200, 200), np.int32)
    lab[50:150, 50:150] = 1  # 100 px square; margin 0.25 -> 150 px window -> 30 px input
    rule = CropRule(mode="bbox", margin=0.25, input="mask")
    ids, crops = _all(None, lab, rule, 30)
    m = crops[0, 0]
    assert crops.shape == (1, 1, 30, 30)
    assert abs(m.mean() - (100 / 150) ** 2) < 0.02
    assert m[15, 15] == 1 and m[0, 0] == 0


def test_crops_from_zarr_equal_crops_from_numpy(tmp_path):
    import zarr

    from napari_impc_dl.synthetic.shapes import make_shapes_image

    img, lab, _ = make_shapes_image((256, 256), seed=5)
    zl = zarr.open_array(tmp_path / "l.zarr", mode="w", shape=lab.shape, dtype=lab.dtype, chunks=(64, 64))
    zl[:] = lab
    zi = zarr.open_array(tmp_path / "i.zarr", mode="w", shape=(1, *img.shape), dtype=img.dtype, chunks=(1, 64, 64))
    zi[:] = img[None]
    rule = CropRule()
    a = _all(lambda ys, xs: img[None, ys, xs].astype(np.float32), lab, rule, 32, batch=3)
    b = _all(lambda ys, xs: np.asarray(zi[:, ys, xs]).astype(np.float32), zl, rule, 32, batch=5, max_region=80)
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])


@pytest.mark.parametrize("mode,shape", [("pad", (1, 40, 80)), ("crop", (1, 40, 80)), ("stretch", (1, 40, 80))])
def test_resize_square(mode, shape):
    x = np.zeros(shape, np.float32)
    x[:, :, :40] = 1.0  # left half bright
    y = resize_square(x, 32, mode)
    assert y.shape == (1, 32, 32)
    if mode == "pad":  # 80 -> 32 wide, 40 -> 16 high, padded with edge rows: the left half stays bright
        assert np.allclose(y[0, :, :16].mean(), 1, atol=0.05) and y[0, :, 17:].max() < 0.05
    if mode == "crop":  # 40 -> 32 high, 80 -> 64 wide, centre 32 columns: the bright/dark edge is in the middle
        assert y[0, :, :14].min() > 0.9 and y[0, :, 18:].max() < 0.1


def test_large_plane_read_by_block_mean():
    from napari_impc_dl.io.image import ImageSource

    rng = np.random.default_rng(0)
    a = rng.integers(0, 1000, (1024, 2048)).astype(np.uint16)
    src = ImageSource.from_array(a, name="big")
    r = read_plane(src, (), None, target=64)  # factor 4
    assert r.shape == (1, 256, 512)
    assert np.allclose(r[0, 3, 5], a[12:16, 20:24].mean())
