import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.draw import ellipse
from skimage.measure import regionprops

from napari_impc_dl.measure.regions import hull_areas, measure_objects


def _ellipses(n=60, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.zeros((400, 400), np.int32)
    k = 0
    for _ in range(n):
        r, c = rng.integers(15, 385, 2)
        rr, cc = ellipse(r, c, rng.integers(2, 14), rng.integers(2, 14), shape=lab.shape, rotation=rng.uniform(0, 3))
        if (lab[rr, cc] == 0).all():
            k += 1
            lab[rr, cc] = k
    return lab, k


def test_matches_regionprops():
    lab, k = _ellipses()
    img = np.random.default_rng(1).random((2, 400, 400)) * 1000
    cols = measure_objects(lab, 1, k, img, ["a", "b"], offset=(5, 7))
    for p in regionprops(lab, intensity_image=np.moveaxis(img, 0, -1)):
        i = p.label - 1
        assert cols["area"][i] == p.area
        assert np.allclose([cols["centroid_y"][i] - 5, cols["centroid_x"][i] - 7], p.centroid)
        assert [cols["bbox_min_y"][i] - 5, cols["bbox_min_x"][i] - 7, cols["bbox_max_y"][i] - 5, cols["bbox_max_x"][i] - 7] == list(p.bbox)
        assert np.isclose(cols["eccentricity"][i], p.eccentricity, atol=1e-9)
        assert np.isclose(cols["major_axis_length"][i], p.axis_major_length)
        assert np.isclose(cols["minor_axis_length"][i], p.axis_minor_length, atol=1e-6)
        assert np.allclose([cols["mean_intensity_a"][i], cols["mean_intensity_b"][i]], p.intensity_mean)
        assert np.allclose([cols["max_intensity_a"][i], cols["max_intensity_b"][i]], p.intensity_max)
        assert 0 < cols["solidity"][i] <= 1


def test_hull_area_is_close_to_qhull():
    lab, k = _ellipses(80, seed=3)
    ours = hull_areas(lab, k)
    for i in range(1, k + 1):
        yy, xx = np.nonzero(lab == i)
        pts = np.concatenate([np.stack([yy + dy, xx + dx], 1) for dy in (0, 1) for dx in (0, 1)])
        exact = ConvexHull(pts).volume
        assert exact - 1e-6 <= ours[i - 1] <= exact * 1.02


def test_only_requested_ids_are_measured():
    lab = np.zeros((50, 50), np.int32)
    lab[5:10, 5:10] = 3
    lab[20:30, 20:30] = 4
    lab[40:45, 40:45] = 9  # not in range: ignored
    cols = measure_objects(lab, 3, 4)
    assert list(cols["label"]) == [3, 4] and list(cols["area"]) == [25, 100]


@pytest.mark.parametrize("workers", [2, 3])
def test_block_tables_split_into_id_ranges_equal_one_worker(workers):
    """Measuring each block in id ranges on several workers gives the table of one worker, row for row."""
    import pandas as pd

    from napari_impc_dl.inference.instances import InstanceParams, labels_from_probabilities
    from napari_impc_dl.io.image import ImageSource
    from napari_impc_dl.measure.blocks import BlockTables
    from napari_impc_dl.synthetic import make_nuclei_image

    image, lab = make_nuclei_image((500, 500), seed=4, density=0.4)
    p = np.stack([(lab > 0).astype(np.uint8) * 255, (lab > 0).astype(np.uint8) * 200])
    p[1][ndimage.binary_erosion(lab > 0, iterations=3) == 0] = 60
    src = ImageSource.from_array(image, name="img")
    tables = {}
    for n, ahead in ((1, False), (workers, False), (workers, True)):
        out = np.zeros(lab.shape, np.int32)
        with BlockTables(src, (), None, ["c0"], "", workers=n) as measure:
            labels_from_probabilities(p, out, InstanceParams(block=160, halo=48), on_block=measure, on_start=measure.start if ahead else None)
            tables[n, ahead] = pd.concat(measure.collect(), ignore_index=True)
            assert not measure._reads  # every window read ahead was used
    one = tables[1, False]
    assert len(one) == out.max() > 20
    assert np.array_equal(one["label"], np.arange(1, len(one) + 1))
    pd.testing.assert_frame_equal(one, tables[workers, False])
    pd.testing.assert_frame_equal(one, tables[workers, True])  # image windows read while the labels are computed
