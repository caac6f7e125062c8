"""Named, bundled models (presets) and where their files are.

Presets ship inside the package (``napari_impc_dl/data``); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

DATA = Path(__file__).parent / "data"

#: preset name -> (checkpoint file in data/, one-line description)
PRESETS: dict[str, tuple[str, str]] = {
    "nuclei": ("nuclei.safetensors", "Fluorescence nuclei (DAPI/Hoechst-like), starter U-Net trained on synthetic images"),
}

#: the bundled sample image (and its ground truth) the demo and napari's sample menu use
SAMPLE_IMAGE = DATA / "sample_nuclei.tif"
SAMPLE_LABELS = DATA / "sample_nuclei_labels.tif"


def preset_path(name: str) -> Path:
    """Checkpoint path of a bundled preset; an unknown name lists the known ones."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise InputError(f"Unknown preset '{name}'", f"Choose one of: {', '.join(sorted(PRESETS))}, or pass --model PATH")
    path = DATA / PRESETS[key][0]
    if not path.is_file():
        raise InputError(f"The bundled '{key}' model is missing from the installation ({path})", "Reinstall napari-impc-dl")
    return path
