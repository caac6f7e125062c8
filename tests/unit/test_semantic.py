"""Semantic models (card ``task: semantic``): training on class maps, the class map and area
fractions at inference, tiled = whole, the card's checks, fine-tuning between the two kinds.

Toy data: a bright disc (``tissue``) holding a striped patch (``fibrosis``) on a dark field
(``background``); tiny U-Nets trained for seconds. The fibrosis preset's accuracy is measured
in benchmarks/eval_presets.py.
"""

import numpy as np
import pandas as pd
import pytest

from napari_impc_dl import api
from napari_impc_dl.config import SegmentConfig, SegmentationTrainConfig
from napari_impc_dl.errors import InputError
from napari_impc_dl.measure.areas import area_counts, class_areas

CLASSES = ["background", "tissue", "fibrosis"]
SEM = dict(arch="tiny", patch=64, batch=4, device="cpu", patience=0, classes=CLASSES)


def toy(seed: int, size: int = 96):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    (cy, cx), r = rng.uniform(0.4, 0.6, 2) * size, rng.uniform(0.3, 0.45) * size
    tissue = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    py, px = rng.uniform(cy - r / 2, cy + r / 3), rng.uniform(cx - r / 2, cx + r / 3)
    s = rng.uniform(0.2, 0.45) * r
    fib = tissue & (abs(yy - py) < s) & (abs(xx - px) < s)
    mask = tissue.astype(np.uint8) + fib
    img = np.where(tissue, 150.0, 20.0) + np.where(fib, 60 * (np.sin(xx * 1.3) > 0), 0) + rng.normal(0, 4, (size, size))
    return img.astype(np.float32), mask


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pairs = [(*toy(i), f"t{i}") for i in range(8)]
    out = tmp_path_factory.mktemp("sem") / "m"
    report = api.train_segmentation(out, images=pairs, epochs=6, lr=3e-3, **SEM)
    return report


def test_training_writes_a_semantic_card_and_class_metrics(trained):
    from napari_impc_dl.models.checkpoint import read_card

    card = read_card(trained.model)
    assert card.task == "semantic" and card.output_names == CLASSES and card.architecture.out_channels == 3
    assert card.semantic.classes == CLASSES and card.semantic.background == ["background"]
    assert {"val_miou", "val_accuracy", "val_iou_fibrosis", "val_fraction_error"} <= set(trained.history[-1])
    assert trained.metrics["miou"] > 0.6, trained.metrics  # a toy this easy is learnt in seconds


def test_segment_writes_class_map_and_area_fractions(trained, tmp_path):
    img, mask = toy(99)
    r = api.segment_image(img, api.load_model(trained.model, device="cpu"), SegmentConfig(device="cpu"))
    assert r.semantic is not None and r.n_objects == 0
    assert set(np.unique(r.labels)) <= {0, 1, 2}
    assert r.labels.dtype.kind == "i" and r.probabilities.shape == (3, 96, 96)
    row = r.counts_row()
    assert {"tissue_area_px", "area_background_px", "area_tissue_px", "area_fibrosis_px", "fraction_tissue", "fraction_fibrosis"} <= set(row)
    assert row["area_background_px"] + row["tissue_area_px"] == img.size
    assert row["fraction_tissue"] + row["fraction_fibrosis"] == pytest.approx(1.0, abs=1e-5)
    truth = area_counts(class_areas(mask, 3), CLASSES, ["background"])
    assert abs(row["fraction_fibrosis"] - truth["fraction_fibrosis"]) < 0.1
    assert list(r.objects["class"]) == CLASSES and r.objects["area"].sum() == img.size
    # the labels are the argmax of the stored probabilities, first class on a tie
    assert np.array_equal(r.labels, np.asarray(r.probabilities).argmax(0))
    assert api.relabel(r, img, SegmentConfig(foreground_threshold=0.3)) is r  # nothing to re-threshold


def test_tiled_class_map_equals_whole_image(trained):
    img = np.tile(toy(7, 96)[0], (3, 3))
    model = api.load_model(trained.model, device="cpu")
    whole = api.segment_image(img, model, SegmentConfig(device="cpu", tile=512, halo=48))
    tiled = api.segment_image(img, model, SegmentConfig(device="cpu", tile=192, halo=48))  # halo: the tiny net's reach
    assert tiled.timings["tiles"] > whole.timings["tiles"]
    assert np.mean(whole.labels == tiled.labels) > 0.999
    assert whole.counts_row()["fraction_fibrosis"] == pytest.approx(tiled.counts_row()["fraction_fibrosis"], abs=0.002)


def test_segment_files_write_tables_with_fraction_columns(trained, tmp_path):
    import tifffile

    for i in range(2):
        tifffile.imwrite(tmp_path / f"s{i}.tif", toy(50 + i)[0])
    api.segment([tmp_path / "s0.tif", tmp_path / "s1.tif"], tmp_path / "out", model=str(trained.model), config=SegmentConfig(device="cpu"), export=["geojson"])
    counts = pd.read_csv(tmp_path / "out" / "counts.csv")
    objects = pd.read_csv(tmp_path / "out" / "objects.csv")
    assert len(counts) == 2 and "fraction_fibrosis" in counts and counts["fraction_fibrosis"].between(0, 1).all()
    assert len(objects) == 6 and set(objects["class"]) == set(CLASSES)
    labels = tifffile.imread(tmp_path / "out" / "s0_labels.tif")
    assert labels.max() <= 2
    import json

    # QuPath: one (multi)polygon per class region, named and coloured by class; the class map round-trips
    features = json.loads((tmp_path / "out" / "s0.geojson").read_text())["features"]
    names = {f["properties"]["classification"]["name"] for f in features}
    assert names <= {"tissue", "fibrosis", "background"} and "tissue" in names
    from shapely.geometry import shape

    tissue = next(f for f in features if f["properties"]["classification"]["name"] == "tissue")
    geom = shape(tissue["geometry"])
    assert abs(geom.area - int((labels == 1).sum())) <= 0.02 * (labels == 1).sum()


def test_fine_tune_keeps_semantic_head_and_instances_get_a_new_one(trained, tmp_path):
    from napari_impc_dl.models.checkpoint import read_card
    from napari_impc_dl.synthetic import make_nuclei_image

    pairs = [(*toy(20 + i), f"f{i}") for i in range(4)]
    r = api.train_segmentation(tmp_path / "ft", images=pairs, epochs=1, from_model=str(trained.model), **SEM)
    assert r.transfer["loaded"] == r.transfer["of"] and not r.transfer["skipped"]  # same classes: every tensor carries over
    inst = [(*make_nuclei_image((96, 96), seed=3 + i), f"n{i}") for i in range(4)]
    r2 = api.train_segmentation(tmp_path / "inst", images=inst, epochs=1, from_model=str(trained.model), **{k: v for k, v in SEM.items() if k != "classes"})
    card = read_card(r2.model)
    assert card.task == "instance-segmentation" and card.output_names == ["foreground", "distance"] and card.architecture.out_channels == 2


def test_bad_class_maps_and_configs_give_one_clear_error(tmp_path):
    img, mask = toy(1)
    with pytest.raises(InputError, match="holds the value 3"):
        api.train_segmentation(tmp_path / "bad", images=[(img, mask + (mask == 2)), (img, mask)], epochs=1, **SEM)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError):
        SegmentationTrainConfig(classes=["a", "a"])
    with pytest.raises(ValueError):
        SegmentationTrainConfig(classes=["a", "b"], background=["c"])
    with pytest.raises(ValueError):
        SegmentationTrainConfig(background=["a"])
    assert SegmentationTrainConfig(classes=["glass", "x"]).background_classes == ["glass"]


def test_semantic_card_checks_its_outputs():
    from napari_impc_dl.models import registry
    from napari_impc_dl.models.card import ModelCard, SemanticSpec

    spec = registry.architecture("tiny", in_channels=1, out_channels=3)
    ok = ModelCard(name="s", task="semantic", architecture=spec, output_names=CLASSES, semantic=SemanticSpec(classes=CLASSES, background=["background"]))
    assert ok.semantic.classes == CLASSES
    with pytest.raises(ValueError, match="one output"):
        ModelCard(name="s", task="semantic", architecture=registry.architecture("tiny", 1, 2), output_names=CLASSES, semantic=ok.semantic)
    with pytest.raises(ValueError, match="semantic"):
        ModelCard(name="s", task="semantic", architecture=spec, output_names=CLASSES)
    with pytest.raises(ValueError):
        SemanticSpec(classes=CLASSES, background=CLASSES)


def test_area_counts_columns_and_pixel_size():
    row = area_counts([10, 30, 10], CLASSES, ["background"], pixel_size_um=0.5)
    assert row["tissue_area_px"] == 40 and row["fraction_fibrosis"] == 0.25 and row["fraction_tissue"] == 0.75
    assert row["area_background_px"] == 10 and "fraction_background" not in row
    assert row["area_fibrosis_um2"] == 2.5 and row["tissue_area_um2"] == 10.0
    assert area_counts([5, 0, 0], CLASSES, ["background"])["fraction_fibrosis"] == 0.0
