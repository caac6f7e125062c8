"""The chromosomes and cells presets: names that work wherever a model does, and the tables they add."""

import pandas as pd
import pytest

from napari_impc_dl import api
from napari_impc_dl.cli import main
from napari_impc_dl.errors import InputError
from napari_impc_dl.presets import CHROMOSOME_WEIGHTS, PHASES, PRESETS, classifier_path, derived_counts, get, preset_path


def test_derived_counts_follow_the_class_names():
    row = {"image": "a", "n_objects": 50, "n_chromosome": 46, "n_nucleus": 1, "n_debris": 3}
    assert derived_counts(row, ["chromosome", "nucleus", "debris"])["count_is_46"] is True
    assert derived_counts({**row, "n_chromosome": 45}, ["chromosome", "nucleus", "debris"])["count_is_46"] is False
    # a merged pair holds two chromosomes, the smaller part of a cut one none: 43 + 2 x 1 + 0 x 2 = 45
    five = ["chromosome", "chromosome_pair", "chromosome_piece", "nucleus", "debris"]
    merged = derived_counts({**row, "n_chromosome": 43, "n_chromosome_pair": 1, "n_chromosome_piece": 2}, five)
    assert (merged["n_chromosome"], merged["count_is_46"], merged["n_chromosome_pair"], merged["n_chromosome_piece"]) == (45, False, 1, 2)
    assert derived_counts({**row, "n_chromosome": 44, "n_chromosome_pair": 1}, five)["count_is_46"] is True
    cells = {"image": "b", "n_objects": 20, **{f"n_{p}": 0 for p in PHASES}, "n_interphase": 15, "n_metaphase": 3, "n_apoptosis": 2}
    assert derived_counts(cells, PHASES)["mitotic_index"] == 0.15  # apoptotic cells are not mitotic
    assert derived_counts({"image": "c", "n_objects": 0}, PHASES)["mitotic_index"] == 0.0
    assert derived_counts({"n_objects": 3, "n_rod": 3}, ["rod", "debris"]) == {"n_objects": 3, "n_rod": 3}


def test_every_preset_is_installed_and_resolves():
    for name, p in PRESETS.items():
        assert p.installed, name
        assert get(name.upper()) is p and preset_path(name) == p.model_path
    assert classifier_path("chromosomes").name == "chromosomes_classes.safetensors"
    with pytest.raises(InputError, match="no classifier"):
        classifier_path("nuclei")
    with pytest.raises(InputError, match="Unknown preset"):
        preset_path("mitochondria")


FIVE = ["chromosome", "chromosome_pair", "chromosome_piece", "nucleus", "debris"]


@pytest.mark.parametrize("preset,classes,extra", [("chromosomes", FIVE, "count_is_46"), ("cells", list(PHASES), "mitotic_index")])
def test_segment_with_a_preset_classifies_and_writes_the_truth_columns(tmp_path, preset, classes, extra):
    data = tmp_path / "data"
    images = api.synth(preset, 2, data, size=384, seed=77)
    report = api.segment(images, tmp_path / "out", model=preset)
    counts = pd.read_csv(report.counts_csv)
    truth = pd.read_csv(data / "truth.csv")
    assert set(truth.columns) <= set(counts.columns)  # every truth column is a counts column, same name
    assert {f"n_{c}" for c in classes} | {extra, "classifier_name", "classifier_hash"} <= set(counts.columns)
    objects = pd.read_csv(report.objects_csv)
    assert set(objects["class"]) <= set(classes) and {f"p_{c}" for c in classes} <= set(objects.columns)
    per_class = objects.groupby(["image", "class"]).size().unstack(fill_value=0).reindex(columns=classes, fill_value=0).loc[counts["image"]]
    assert (counts["n_objects"].to_numpy() == per_class.sum(axis=1).to_numpy()).all()
    weights = CHROMOSOME_WEIGHTS if preset == "chromosomes" else {}  # chromosomes: n_chromosome counts chromosomes, a pair two
    for c in classes:
        want = per_class[c] if c != "chromosome" else sum(w * per_class[k] for k, w in weights.items())
        assert (counts[f"n_{c}"].to_numpy() == want.to_numpy()).all(), c
    # the starter is a real model: on fresh images its object count is near the truth
    assert (counts["n_objects"] - truth["n_objects"]).abs().max() <= 0.2 * truth["n_objects"].max()
    plain = api.segment(images, tmp_path / "plain", model=preset, classifier="none")
    assert "count_is_46" not in pd.read_csv(plain.counts_csv).columns and "class" not in pd.read_csv(plain.objects_csv).columns


def test_classify_with_a_preset_name_on_true_masks(tmp_path):
    data = tmp_path / "data"
    images = api.synth("chromosomes", 2, data, size=512, seed=78)
    rep = api.classify(images, tmp_path / "out", model="chromosomes", labels=data / "masks")
    got = pd.read_csv(tmp_path / "out" / "objects.csv").merge(pd.read_csv(data / "objects_truth.csv"), on=["image", "label"], suffixes=("", "_true"))
    assert (got["class"] == got["class_true"]).mean() >= 0.9
    assert "count_is_46" in pd.read_csv(tmp_path / "out" / "counts.csv").columns and rep.level == "object"


def test_cli_segment_preset_prints_the_flag(tmp_path, capsys):
    img = api.synth("chromosomes", 1, tmp_path / "d", size=384, seed=79)[0]
    assert main(["segment", str(img), "--out", str(tmp_path / "o"), "--preset", "chromosomes"]) == 0
    assert "count_is_46" in capsys.readouterr().out


def test_fine_tuning_from_a_preset_takes_its_classifier_for_classification():
    from napari_impc_dl.training.transfer import read_weights

    _, card, _ = read_weights("chromosomes", "classification")
    assert card.task == "classification" and card.classification.level == "object"
    assert set(card.classification.classes) == set(FIVE)
    _, card, _ = read_weights("chromosomes", "segmentation")
    assert card.task == "instance-segmentation"


def test_our_preset_exported_and_imported_back_gets_its_own_library_name(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")
    pkg = api.export_model("nuclei", tmp_path / "nuclei.zip")
    rep = api.import_model(getattr(pkg, "path", tmp_path / "nuclei.zip"))
    assert rep.name == "nuclei-zoo"
    with pytest.raises(InputError, match="bundled preset"):
        api.import_model(tmp_path / "nuclei.zip", name="nuclei")


def test_count_line_says_that_a_pair_counts_two():
    from napari_impc_dl.measure.summary import count_summary

    five = ["chromosome", "chromosome_pair", "chromosome_piece", "nucleus", "debris"]
    row = derived_counts({"image": "a", "n_objects": 60, "n_chromosome": 44, "n_chromosome_pair": 1, "n_chromosome_piece": 1, "n_nucleus": 1, "n_debris": 13}, five)
    text = count_summary(row)
    assert "46 chromosome (a pair counts two)" in text and "1 chromosome_pair" in text and text.endswith("· 46 chromosomes")
    assert "counts two" not in count_summary(derived_counts({"n_objects": 3, "n_chromosome": 3}, ["chromosome", "debris"]))
