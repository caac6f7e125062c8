"""The bundled models of the ``skeletal`` preset (files in ``napari_impc_dl/data``), by role.

    regions  semantic U-Net: a class of :data:`~napari_impc_dl.synthetic.xray_layout.CLASSES` per pixel
    bones    instance U-Net: a label per vertebra and rib
    view     image classifier on the head-up crop: dv, dv_mirrored, lateral, lateral_mirrored
    sex      image classifier on the standard view: female, male
    ribs     object classifier per rib: normal, misshapen, fused
    pelvis   object classifier of the pelvis: normal, asymmetric, malformed
"""

from __future__ import annotations

from pathlib import Path

ROLES = ("regions", "bones", "view", "sex", "ribs", "pelvis")
MODEL_FILES = {role: f"skeletal_{role}.safetensors" for role in ROLES}
DATA = Path(__file__).resolve().parents[1] / "data"


def model_path(role: str) -> Path:
    return DATA / MODEL_FILES[role]


def installed() -> bool:
    """Every model of the preset is in the installation."""
    return all(model_path(r).is_file() for r in ROLES)
