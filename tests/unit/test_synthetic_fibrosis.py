"""The fibrosis generator: exact class maps, truth.csv equal to the preset's area columns, the
knobs moving what they name, classes that look different, and one clear error for bad arguments."""

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_impc_dl.errors import InputError
from napari_impc_dl.measure.areas import area_counts, class_areas
from napari_impc_dl.synthetic.fibrosis import BACKGROUND, CLASSES, make_fibrosis_image, write_fibrosis_dataset


def _fraction(c):
    return (c == 2).sum() / max(1, (c > 0).sum())


def test_deterministic_types_and_three_classes():
    a, ca = make_fibrosis_image((192, 160), seed=4)
    b, cb = make_fibrosis_image((192, 160), seed=4)
    assert np.array_equal(a, b) and np.array_equal(ca, cb)
    assert a.shape == (192, 160, 3) and a.dtype == np.uint8 and ca.shape == (192, 160) and ca.dtype == np.uint8
    assert set(np.unique(ca)) == {0, 1, 2}
    assert not np.array_equal(a, make_fibrosis_image((192, 160), seed=5)[0])
    assert CLASSES == ("background", "tissue", "fibrosis") and BACKGROUND == ("background",)


def test_dataset_truth_is_the_area_counts_of_its_masks(tmp_path):
    paths = write_fibrosis_dataset(tmp_path, 3, size=128, seed=9)
    truth = pd.read_csv(tmp_path / "truth.csv").set_index("image")
    assert [p.name for p in paths] == [f"fibrosis_9_{i:04d}.tif" for i in range(3)]
    assert list(truth.index) == [p.stem for p in paths]
    assert not (tmp_path / "objects_truth.csv").exists()
    for p in paths:
        img, mask = tifffile.imread(p), tifffile.imread(tmp_path / "masks" / p.name)
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1, 2}
        want = area_counts(class_areas(mask, 3), CLASSES, BACKGROUND)
        assert list(truth.columns) == list(want)
        assert truth.loc[p.stem].to_dict() == pytest.approx(want)


def test_fraction_and_density_move_the_fibrosis():
    lo = np.mean([_fraction(make_fibrosis_image((160, 160), s, fraction=0.1)[1]) for s in range(3)])
    hi = np.mean([_fraction(make_fibrosis_image((160, 160), s, fraction=0.5)[1]) for s in range(3)])
    assert hi - lo > 0.2 and abs(lo - 0.1) < 0.06 and abs(hi - 0.5) < 0.08
    assert _fraction(make_fibrosis_image((128, 128), 1, fraction=0.0)[1]) == 0
    base = np.mean([_fraction(make_fibrosis_image((128, 128), 20 + s)[1]) for s in range(8)])
    more = np.mean([_fraction(make_fibrosis_image((128, 128), 20 + s, density=1.6)[1]) for s in range(8)])
    assert more > base * 1.3


def test_tissue_covers_most_of_the_tile_with_glass_around():
    cover = [(make_fibrosis_image((128, 128), s)[1] > 0).mean() for s in range(6)]
    assert all(0.35 < c < 0.99 for c in cover), cover


def test_fibrosis_is_paler_and_less_nuclear_than_tissue_and_glass_is_white():
    img, c = make_fibrosis_image((256, 256), seed=3, fraction=0.4)
    grey = img.astype(float).mean(-1)
    assert grey[c == 2].mean() > grey[c == 1].mean() + 10  # collagen: pale, few nuclei
    nuclear = img[..., 2].astype(int) > img[..., 0].astype(int) + 15  # hematoxylin (blue-purple) over eosin (pink)
    assert nuclear[c == 2].mean() < 0.6 * nuclear[c == 1].mean()
    assert grey[c == 0].mean() > 220 and grey[c == 1].mean() < grey[c == 0].mean() - 30


def test_contrast_and_size_shift_the_look():
    pale = make_fibrosis_image((128, 128), 2, contrast=0.6)[0].astype(float).mean()
    dark = make_fibrosis_image((128, 128), 2, contrast=1.5)[0].astype(float).mean()
    assert dark < pale - 10


@pytest.mark.parametrize(
    "kw",
    [dict(shape=(32, 32)), dict(shape=(64, 48)), dict(shape="big"), dict(density=-1), dict(density=0), dict(contrast="x"),
     dict(contrast=float("nan")), dict(size=9), dict(fraction=1.5), dict(fraction=-0.1), dict(seed=-2)],
)
def test_bad_arguments_give_one_clear_error(kw):
    args = {"shape": (96, 96), **kw}
    with pytest.raises(InputError):
        make_fibrosis_image(**args)


@pytest.mark.parametrize("kw", [dict(n=0), dict(n=1, size=32), dict(n=1, scale=0), dict(n=1, seed=-1)])
def test_bad_dataset_arguments(tmp_path, kw):
    with pytest.raises(InputError):
        write_fibrosis_dataset(tmp_path, **kw)
