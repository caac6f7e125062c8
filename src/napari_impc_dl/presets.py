"""Named workflows (presets): a bundled segmentation model, optionally an object classifier, and the
tables they add. Everything ships inside the package (``napari_impc_dl/data``); nothing is downloaded.

* ``nuclei``: fluorescence nuclei as instances;
* ``chromosomes``: every object of a metaphase spread, then chromosome / nucleus / debris per
  object, then per spread ``n_chromosome``, ``n_nucleus``, ``n_debris`` and ``count_is_46``;
* ``cells``: two-channel cell instances, then a mitosis phase per cell, then counts per phase and
  the mitotic index;
* ``fibrosis``: a semantic model on RGB brightfield tissue: background / tissue / fibrosis per
  pixel, then per image the area of each class and the fibrotic share of the tissue
  (``fraction_fibrosis``, see :mod:`napari_impc_dl.measure.areas`).

A preset's name works wherever a model does: ``segment --model chromosomes`` segments *and*
classifies (its classifier is used unless ``--classifier`` names another), ``classify --model
chromosomes --labels DIR`` runs the preset's classifier on labels made elsewhere, ``train --from
chromosomes`` fine-tunes its U-Net (segmentation) or its classifier (classification).

The columns a preset adds to ``counts.csv`` are derived from the class counts by
:func:`derived_counts`, keyed on the class names, so a classifier fine-tuned from a starter (same
classes) gets the same table everywhere: ``segment``, ``classify`` and Export.

This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DATA = Path(__file__).parent / "data"

#: the mitosis phases (CellCognition's classes, apoptosis included) and which of them count as mitotic
PHASES = ("interphase", "prophase", "prometaphase", "metaphase", "anaphase", "telophase", "apoptosis")
MITOTIC = ("prophase", "prometaphase", "metaphase", "anaphase", "telophase")
NORMAL_CHROMOSOMES = 46
#: how many chromosomes one object of each chromosome class holds: the segmenter can merge two touching or
#: crossing chromosomes into one object (``chromosome_pair``) or cut one in two (the smaller part is a
#: ``chromosome_piece``, its larger part stays a ``chromosome``); the classifier names these, so the count
#: per spread stays right where the instances are not
CHROMOSOME_WEIGHTS = {"chromosome": 1, "chromosome_pair": 2, "chromosome_piece": 0}


@dataclass(frozen=True)
class Preset:
    """A named workflow: the files it needs in ``data/`` and one line for the menus."""

    name: str
    description: str
    model: str
    """Segmentation checkpoint in ``data/``."""
    classifier: str | None = None
    """Object classifier checkpoint in ``data/`` run on every object found (None: segmentation only)."""
    sample: str | None = None
    """Sample image in ``data/`` (its truth next to it: ``<stem>_labels.tif``, ``<stem>_truth.csv``, ``<stem>_objects_truth.csv``)."""

    @property
    def model_path(self) -> Path:
        return DATA / self.model

    @property
    def classifier_path(self) -> Path | None:
        return DATA / self.classifier if self.classifier else None

    @property
    def installed(self) -> bool:
        """All of its model files are in the installation."""
        return self.model_path.is_file() and (self.classifier_path is None or self.classifier_path.is_file())


PRESETS: dict[str, Preset] = {
    "nuclei": Preset("nuclei", "Fluorescence nuclei (DAPI/Hoechst-like), starter U-Net trained on synthetic images", "nuclei.safetensors", sample="sample_nuclei.tif"),
    "chromosomes": Preset(
        "chromosomes",
        "Metaphase spreads (brightfield, Giemsa-like): chromosomes, nuclei and debris segmented and classified, chromosomes counted per spread (count_is_46); starter models trained on synthetic spreads",
        "chromosomes.safetensors", "chromosomes_classes.safetensors", sample="sample_chromosomes.tif",
    ),
    "cells": Preset(
        "cells",
        "Cells in two-channel fluorescence (0: cytoplasm / membrane, 1: nuclei): cell instances, a mitosis phase per cell, counts per phase and the mitotic index; starter models trained on synthetic cells",
        "cells.safetensors", "cells_classes.safetensors", sample="sample_cells.tif",
    ),
    "fibrosis": Preset(
        "fibrosis",
        "Fibrosis on H&E-like brightfield tissue (RGB): a class per pixel (background, tissue, fibrosis) and per image the fibrotic share of the tissue (fraction_fibrosis); starter U-Net trained on synthetic tissue",
        "fibrosis.safetensors", sample="sample_fibrosis.tif",
    ),
}

#: the bundled sample image (and its ground truth) the demo and napari's sample menu use
SAMPLE_IMAGE = DATA / "sample_nuclei.tif"
SAMPLE_LABELS = DATA / "sample_nuclei_labels.tif"


def get(name) -> Preset | None:
    """The preset called ``name`` (any case), or None when ``name`` is not a preset's name."""
    return PRESETS.get(name.strip().lower()) if isinstance(name, str) else None


def classifier_for(model, classifier):
    """The object classifier a ``segment`` / ``batch`` run uses: the one given, none (``"none"``), or the model
    preset's own (chromosomes, cells)."""
    if isinstance(classifier, str) and classifier.strip().lower() in ("none", "no", ""):
        return None
    preset = get(model)
    if classifier is None and preset is not None and preset.classifier:
        return preset.name
    return classifier


def _require(name: str) -> Preset:
    preset = get(name)
    if preset is None:
        raise InputError(f"Unknown preset '{name}'", f"Choose one of: {', '.join(sorted(PRESETS))}, or pass --model PATH")
    return preset


def preset_path(name: str) -> Path:
    """Segmentation checkpoint of a bundled preset; an unknown name lists the known ones."""
    preset = _require(name)
    if not preset.model_path.is_file():
        raise InputError(f"The bundled '{preset.name}' model is missing from the installation ({preset.model_path})", "Reinstall napari-impc-dl")
    return preset.model_path


def classifier_path(name: str) -> Path:
    """Object classifier checkpoint of a bundled preset (an error for presets without one)."""
    preset = _require(name)
    if preset.classifier_path is None:
        with_cls = ", ".join(p.name for p in PRESETS.values() if p.classifier)
        raise InputError(f"The '{preset.name}' preset has no classifier", f"Presets with a classifier: {with_cls}")
    if not preset.classifier_path.is_file():
        raise InputError(f"The bundled '{preset.name}' classifier is missing from the installation ({preset.classifier_path})", "Reinstall napari-impc-dl")
    return preset.classifier_path


def derived_counts(row: dict, classes) -> dict:
    """``row`` (a ``counts.csv`` row with ``n_<class>`` columns) with the columns the class vocabulary implies:

    * a ``chromosome`` class: ``n_chromosome`` becomes the number of *chromosomes* (with the classes
      ``chromosome_pair`` and ``chromosome_piece``: singles + 2 x pairs, pieces not counted, see
      :data:`CHROMOSOME_WEIGHTS`; ``n_chromosome_pair`` / ``n_chromosome_piece`` stay object counts) and
      ``count_is_46`` (True when the spread holds exactly 46 chromosomes);
    * the mitosis phases: ``mitotic_index`` = objects in prophase..telophase / all objects (0 without objects).
    """
    classes = list(classes)
    out = dict(row)
    if "chromosome" in classes:
        out["n_chromosome"] = sum(w * int(row.get(f"n_{c}", 0)) for c, w in CHROMOSOME_WEIGHTS.items() if c in classes)
        out["count_is_46"] = out["n_chromosome"] == NORMAL_CHROMOSOMES
    if any(c in classes for c in MITOTIC):
        n = int(row.get("n_objects", 0))
        mitotic = sum(int(row.get(f"n_{c}", 0)) for c in MITOTIC)
        out["mitotic_index"] = round(mitotic / n, 4) if n else 0.0
    return out
