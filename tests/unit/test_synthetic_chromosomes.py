"""The metaphase-spread generator: ground truth that is exact and self-consistent."""

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_impc_dl.errors import InputError
from napari_impc_dl.synthetic.chromosomes import CLASSES, make_spread, write_chromosomes_dataset


def test_deterministic_and_typed():
    a = make_spread((256, 256), seed=3)
    b = make_spread((256, 256), seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    img, lab, cls = a
    assert img.dtype == np.uint8 and img.shape == (256, 256) and lab.dtype == np.int32
    assert sorted(cls) == list(range(1, lab.max() + 1)) == sorted(np.unique(lab[lab > 0]).tolist())
    assert set(cls.values()) <= set(CLASSES)


def test_spreads_have_karyotype_counts_and_every_class():
    counts, seen = [], set()
    for s in range(8):
        _, lab, cls = make_spread((768, 768), seed=100 + s)
        counts.append(sum(v == "chromosome" for v in cls.values()))
        seen |= set(cls.values())
    assert seen == set(CLASSES)
    assert counts.count(46) >= 3, counts  # most spreads normal
    assert all(20 <= c <= 48 for c in counts), counts


def test_chromosomes_are_rods_darker_than_background_and_some_touch():
    img, lab, cls = make_spread((768, 768), seed=7)
    chrom = [k for k, v in cls.items() if v == "chromosome"]
    sl = ndi.find_objects(lab)
    elong = [max(s[0].stop - s[0].start, s[1].stop - s[1].start) / max(1, np.sqrt((lab[s] == k).sum())) for k, s in zip(range(1, lab.max() + 1), sl) if k in chrom]
    assert np.median(elong) > 1.5  # long thin objects
    assert img[lab > 0].mean() < img[lab == 0].mean() - 40  # Giemsa: dark on a bright field
    grown = ndi.grey_dilation(lab, size=3)
    touching = {int(k) for k in np.unique(lab[(grown != lab) & (lab > 0) & (grown > 0)])}
    assert len(touching) >= 2


def test_shift_and_rgb():
    img, lab, _ = make_spread((384, 384), seed=5, rgb=True)
    assert img.shape == (384, 384, 3) and img[..., 1][lab > 0].mean() < img[..., 0][lab > 0].mean()  # purple: green absorbed most
    def chromosome_area(lab, cls):
        areas = np.bincount(lab.ravel())
        return np.mean([areas[k] for k, v in cls.items() if v == "chromosome"])

    small = make_spread((768, 768), seed=9)
    big = make_spread((1024, 1024), seed=9, size=1.3)
    assert chromosome_area(*big[1:]) > 1.15 * chromosome_area(*small[1:])  # longer (widths are capped)
    faint = make_spread((512, 512), seed=9, contrast=0.5)[0]
    normal = make_spread((512, 512), seed=9)[0]
    assert faint.min() > normal.min() + 20


def test_dataset_tables_match_masks(tmp_path):
    paths = write_chromosomes_dataset(tmp_path, 3, size=256, seed=4)
    truth = pd.read_csv(tmp_path / "truth.csv")
    objects = pd.read_csv(tmp_path / "objects_truth.csv")
    assert list(truth.columns) == ["image", "n_objects", "n_chromosome", "n_nucleus", "n_debris", "count_is_46"]
    assert list(objects.columns) == ["image", "label", "class"]
    for p, row in zip(paths, truth.itertuples()):
        lab = tifffile.imread(tmp_path / "masks" / p.name)
        mine = objects[objects.image == p.stem]
        assert row.image == p.stem and row.n_objects == lab.max() == len(mine)
        assert row.n_chromosome == (mine["class"] == "chromosome").sum()
        assert row.count_is_46 == (row.n_chromosome == 46)
        assert tifffile.imread(p).shape == (256, 256)


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError):
        make_spread((64, 64))
    with pytest.raises(InputError):
        write_chromosomes_dataset(tmp_path, 0)
    with pytest.raises(InputError):
        make_spread((256, 256), density=0)
