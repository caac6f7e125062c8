"""Synthetic two-channel cell fields: ground-truth invariants, phase content, style shifts and the writer."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_impc_dl.errors import InputError
from napari_impc_dl.synthetic.cells import MITOTIC, PHASES, make_cells_image, write_cells_dataset
from napari_impc_dl.synthetic.nuclei import dataset_image_seed


def _touching_ids(labels: np.ndarray) -> set[int]:
    ids: set[int] = set()
    for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
        m = (a != b) & (a > 0) & (b > 0)
        ids |= set(a[m].tolist()) | set(b[m].tolist())
    return ids


@pytest.fixture(scope="module")
def fields():
    """20 default 512 x 512 fields (about 3 s)."""
    return [make_cells_image((512, 512), s) for s in range(20)]


def test_deterministic_and_seed_dependent():
    a = make_cells_image((192, 256), 5)
    b = make_cells_image((192, 256), 5)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert a[3] == b[3]
    c = make_cells_image((192, 256), 6)
    assert not np.array_equal(a[1], c[1])


def test_shapes_dtypes_and_ground_truth_invariants(fields):
    for image, cells, nuclei, phases in fields[:8]:
        assert image.shape == (2, 512, 512) and image.dtype == np.uint16
        assert cells.shape == nuclei.shape == (512, 512)
        assert cells.dtype == np.int32 and nuclei.dtype == np.int32
        n = int(cells.max())
        np.testing.assert_array_equal(np.unique(cells), np.arange(n + 1))  # consecutive ids, background present
        assert sorted(phases) == list(range(1, n + 1)) and set(phases.values()) <= set(PHASES)
        for i, sl in enumerate(ndi.find_objects(cells), start=1):
            _, pieces = ndi.label(cells[sl] == i)  # 4-connectivity
            assert pieces == 1, f"cell {i} is split into {pieces} pieces"
        assert np.bincount(cells.ravel())[1:].min() >= 150
        fg = nuclei > 0
        np.testing.assert_array_equal(nuclei[fg], cells[fg])  # nucleus ids are their cell's, and inside it
        with_dna = np.unique(nuclei[fg])
        assert with_dna.size >= 0.95 * n
        # DNA light only where the nucleus mask is (background, blur and noise aside)
        bg = np.median(image[1][cells == 0])
        assert np.median(image[1][fg]) > bg + 3 * image[1][cells == 0].std()


def test_cell_count_size_and_touching(fields):
    counts = [len(f[3]) for f in fields]
    assert 20 <= min(counts) and max(counts) <= 80 and 30 <= np.mean(counts) <= 65
    areas = np.concatenate([np.bincount(f[1].ravel())[1:] for f in fields])
    diam = 2 * np.sqrt(areas / np.pi)
    assert 28 <= np.median(diam) <= 45
    touch = [len(_touching_ids(f[1])) / len(f[3]) for f in fields]
    assert np.mean(touch) >= 0.3
    assert np.mean(touch) <= 0.97  # some cells stay isolated
    cover = np.mean([(f[1] > 0).mean() for f in fields])
    assert 0.08 < cover < 0.5  # empty regions remain


def test_phase_frequencies(fields):
    phases = [p for f in fields for p in f[3].values()]
    freq = {p: phases.count(p) / len(phases) for p in PHASES}
    assert all(freq[p] > 0 for p in PHASES), freq
    assert 0.5 < freq["interphase"] < 0.75
    for p, target in zip(PHASES[1:], (0.07, 0.05, 0.08, 0.05, 0.06, 0.07)):
        assert abs(freq[p] - target) < 0.035, (p, freq[p])


def test_phases_look_different(fields):
    """DNA masses and brightness per phase: the classifier's cues are present."""
    pieces = {p: [] for p in PHASES}
    area = {p: [] for p in PHASES}
    bright = {p: [] for p in PHASES}
    for image, cells, nuclei, phases in fields:
        objs = ndi.find_objects(nuclei)
        bg = float(np.median(image[1][cells == 0]))
        for k, p in phases.items():
            if k > len(objs) or objs[k - 1] is None:
                continue
            m = nuclei[objs[k - 1]] == k
            pieces[p].append(ndi.label(m)[1])
            area[p].append(m.sum() / (cells == k).sum() if p == "interphase" else m.sum())
            bright[p].append(image[1][objs[k - 1]][m].mean() - bg)
    assert np.median(pieces["interphase"]) == 1 and np.median(pieces["metaphase"]) == 1
    assert np.mean(np.array(pieces["telophase"]) == 1) > 0.8  # telophase: two daughter cells, one compact nucleus each
    assert np.mean(np.array(pieces["anaphase"]) == 2) > 0.7
    assert np.mean(np.array(pieces["apoptosis"]) >= 2) > 0.4
    assert 0.12 < np.median(area["interphase"]) < 0.45  # nucleus ~45-60 % of the diameter
    for p in ("metaphase", "anaphase", "prometaphase", "apoptosis"):
        assert np.median(bright[p]) > 1.3 * np.median(bright["interphase"]), p


def test_phase_weights_override():
    _, _, _, phases = make_cells_image((256, 256), 3, phase_weights={p: 0 for p in PHASES if p != "metaphase"})
    assert phases and set(phases.values()) == {"metaphase"}
    with pytest.raises(InputError):
        make_cells_image((128, 128), 0, phase_weights={"mitosis": 1})
    with pytest.raises(InputError):
        make_cells_image((128, 128), 0, phase_weights={p: 0 for p in PHASES})
    with pytest.raises(InputError):
        make_cells_image((128, 128), 0, phase_weights={"metaphase": -1})


def test_style_shifts():
    seeds = range(4)
    base = [make_cells_image((384, 384), s) for s in seeds]
    dense = [make_cells_image((384, 384), s, density=1.4) for s in seeds]
    big = [make_cells_image((384, 384), s, size=1.2) for s in seeds]
    dim = [make_cells_image((384, 384), s, contrast=0.6) for s in seeds]
    n = lambda fs: np.mean([len(f[3]) for f in fs])  # noqa: E731
    mean_area = lambda fs: np.mean([(f[1] > 0).sum() / max(len(f[3]), 1) for f in fs])  # noqa: E731
    assert n(dense) > 1.2 * n(base)
    assert mean_area(big) > 1.25 * mean_area(base)
    for ch, mask in ((1, 2), (0, 1)):
        for b, d in zip(base, dim):
            np.testing.assert_array_equal(b[1], d[1])  # contrast changes only the signal
            sig = lambda f: f[0][ch][f[mask] > 0].mean() - f[0][ch][f[1] == 0].mean()  # noqa: E731
            assert 0.5 < sig(d) / sig(b) < 0.7


def test_write_cells_dataset(tmp_path):
    out = tmp_path / "ds"
    paths = write_cells_dataset(out, 3, size=128, seed=4)
    names = [f"cells_4_{i:04d}.tif" for i in range(3)]
    assert [p.name for p in paths] == names
    with open(out / "truth.csv", newline="") as fh:
        truth = list(csv.DictReader(fh))
    with open(out / "objects_truth.csv", newline="") as fh:
        objects = list(csv.DictReader(fh))
    assert list(truth[0]) == ["image", "n_objects"] + [f"n_{p}" for p in PHASES] + ["mitotic_index"]
    assert list(objects[0]) == ["image", "label", "class"]
    assert [r["image"] for r in truth] == [n[:-4] for n in names]
    for name, row in zip(names, truth):
        stem = name[:-4]
        with tifffile.TiffFile(out / "images" / name) as tf:
            img = tf.asarray()
            assert tf.shaped_metadata[0]["axes"] == "CYX"
        cells = tifffile.imread(out / "masks" / name)
        nuc = tifffile.imread(out / "nuclei" / name)
        assert img.shape == (2, 128, 128) and img.dtype == np.uint16 and cells.shape == nuc.shape == (128, 128)
        ref = make_cells_image((128, 128), dataset_image_seed(4, paths.index(out / "images" / name)) % 2**63)
        np.testing.assert_array_equal(img, ref[0])
        np.testing.assert_array_equal(cells, ref[1])
        np.testing.assert_array_equal(nuc, ref[2])
        rows = [r for r in objects if r["image"] == stem]
        assert int(row["n_objects"]) == len(rows) == int(cells.max())
        assert [int(r["label"]) for r in rows] == list(range(1, len(rows) + 1))
        for p in PHASES:
            assert int(row[f"n_{p}"]) == sum(r["class"] == p for r in rows)
        n_mit = sum(r["class"] in MITOTIC for r in rows)
        assert float(row["mitotic_index"]) == pytest.approx(round(n_mit / len(rows), 4) if rows else 0.0)
    assert not list(out.glob(".*tmp"))


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError):
        write_cells_dataset(tmp_path / "a", 0)
    with pytest.raises(InputError):
        write_cells_dataset(tmp_path / "b", 1, size=63)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError):
        write_cells_dataset(blocker / "sub", 1, size=64)
    for kwargs in ({"shape": (32, 512)}, {"shape": "big"}, {"density": 0}, {"size": 0.1}, {"contrast": -1}, {"seed": -1}):
        with pytest.raises(InputError):
            make_cells_image(**kwargs)
