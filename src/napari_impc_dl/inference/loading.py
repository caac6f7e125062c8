"""From a model reference (preset name, checkpoint, Model Zoo package, library name) to a Runnable on a device.

:func:`load_model` is re-exported by :mod:`napari_impc_dl.api`, the door the CLI and the widgets use.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError


def load_model(model: str | os.PathLike | None = None, *, device: str = "auto", weights: str | None = None, trust_code: bool = False):
    """A runnable model on ``device`` from a preset name (``"nuclei"``), a checkpoint path, a BioImage Model Zoo
    package (zip, folder or rdf.yaml) or the name of a model imported into the library (``zoo import``).

    ``weights`` picks a package's weight format; ``trust_code`` lets a package's own Python code build its
    network. A Runnable passed in is returned as it is.
    """
    from .engine import resolve_device
    from .runnable import CheckpointModel
    from ..presets import PRESETS, preset_path

    if hasattr(model, "forward") and hasattr(model, "info"):
        return model
    ref = "nuclei" if model is None else model
    if isinstance(ref, str) and ref.strip().lower() == "skeletal" and not Path(ref).exists():
        raise InputError(
            "'skeletal' is a workflow of six models (mouse X-rays), not one segmentation model",
            "Run it with `napari-impc-dl segment XRAYS... --preset skeletal --out DIR`, api.skeletal(...), or the Segment widget's 'skeletal' entry",
        )
    if isinstance(ref, str) and ref.strip().lower() in PRESETS:
        path = preset_path(ref)
    else:
        from ..zoo import library
        from ..zoo.package import looks_like_package

        from ..classify.loading import checkpoint_path

        path = checkpoint_path(ref)
        if looks_like_package(path) or (not path.exists() and library.find(str(ref)) is not None):
            from ..zoo.adapter import load_package

            return load_package(ref, device=str(resolve_device(device)), weights=weights, trust_code=trust_code)
        if not path.exists():
            raise InputError(
                f"Model '{ref}' is neither a bundled preset, an existing file nor a model in the library",
                f"Use one of the presets ({', '.join(PRESETS)}), a checkpoint or package path, or a name from `napari-impc-dl zoo list`",
            )
    from ..models.checkpoint import read_card

    if read_card(path).task == "classification":
        raise InputError(f"'{ref}' is a classifier, not a segmentation model", "Use it with `classify --model` or `segment --classifier`")
    return CheckpointModel.load(path, device=str(resolve_device(device)))
