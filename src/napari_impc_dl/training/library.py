"""Trained models in the user's model library, so every widget and the CLI can offer them by name.

    trained_dir()         <library home>/trained   (``$NAPARI_IMPC_DL_HOME`` or the user data folder)
    default_out(name)     a new folder there for a training run named ``name``
    trained_models()      every training folder there with a model: name, folder, task, level, classes

Listing reads only each model's card (no torch), so it is cheap enough for a widget's menu.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..zoo.library import home


@dataclass
class TrainedModel:
    name: str
    folder: Path
    task: str
    """``instance-segmentation`` or ``classification``."""
    level: str = ""
    """Classifiers: ``image`` or ``object``."""
    classes: list[str] = field(default_factory=list)
    description: str = ""


def trained_dir() -> Path:
    return home() / "trained"


def default_out(name: str) -> Path:
    """A folder for a new run: ``trained/<name>``, or ``<name>-2``, ``-3``... when taken."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.") or "model"
    d, k = trained_dir() / base, 2
    while d.exists():
        d, k = trained_dir() / f"{base}-{k}", k + 1
    return d


def trained_models() -> list[TrainedModel]:
    from ..errors import InputError
    from ..models.checkpoint import read_card

    root = trained_dir()
    found = []
    if not root.is_dir():
        return found
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        path = d / "model.safetensors"
        if not path.is_file():
            continue
        try:
            card = read_card(path)
        except InputError:
            continue
        spec = card.classification
        found.append(TrainedModel(d.name, d, card.task, spec.level if spec else "", list(spec.classes) if spec else [], card.description))
    return found
