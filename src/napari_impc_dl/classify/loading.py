"""From a classifier reference (training folder, checkpoint, Model Zoo package, library name) to a Runnable."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError


def checkpoint_path(ref: str | os.PathLike) -> Path:
    """A training folder's ``model.safetensors`` (or ``last.safetensors`` when no epoch ended), or ``ref`` itself.
    A bare name that is no file is looked up among the trained models of the library (``training.library``)."""
    path = Path(ref).expanduser()
    if not path.exists() and isinstance(ref, str) and "/" not in ref and "\\" not in ref:
        from ..training.library import trained_dir

        if (trained_dir() / ref).is_dir():
            path = trained_dir() / ref
    if path.is_dir() and not (path / "rdf.yaml").exists() and not path.name.lower().endswith(".zarr"):
        for name in ("model.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
    return path


def load_classifier(ref, *, device: str = "auto", weights: str | None = None, trust_code: bool = False):
    """A classifier Runnable on ``device``: our checkpoint or training folder, or a Model Zoo classification package."""
    from ..inference.engine import resolve_device
    from ..zoo import library
    from ..zoo.package import looks_like_package
    from .runnable import ClassifierModel

    if hasattr(ref, "forward") and hasattr(ref, "spec"):
        return ref
    from ..presets import classifier_path, get

    dev = str(resolve_device(device))
    preset = get(ref)
    path = checkpoint_path(ref)
    if preset is not None and not (path.is_file() or looks_like_package(path)):
        path = classifier_path(preset.name)  # a preset's name, even where a data folder of that name exists (synth cells --out cells/)
    if looks_like_package(path) or (not path.exists() and library.find(str(ref)) is not None):
        from ..zoo.classifier import load_zoo_classifier

        return load_zoo_classifier(ref, device=dev, weights=weights, trust_code=trust_code)
    if not path.exists():
        raise InputError(f"Classifier '{ref}' does not exist", "Give a preset (chromosomes, cells), a training folder, a .safetensors checkpoint, a Model Zoo package or a name from `napari-impc-dl zoo list`")
    return ClassifierModel.load(path, device=dev)
