"""The model card: everything needed to rebuild, run and trace a model, stored as JSON.

The card travels inside the checkpoint (safetensors metadata) so weights and description can
never be separated. It is a strict pydantic model: an unknown or malformed field is an error,
not a silent default. This module imports no torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_FORMAT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ArchitectureSpec(_Strict):
    """How to rebuild the network with segmentation-models-pytorch."""

    arch: Literal["Unet"] = "Unet"
    """smp architecture class."""
    encoder: str
    """Registry encoder key, e.g. ``resnet18`` or ``mobilenetv3-small`` (see ``models.registry.ENCODERS``)."""
    in_channels: int = Field(ge=1, le=64)
    """Number of input channels the network takes."""
    out_channels: int = Field(ge=1, le=64)
    """Number of output maps (heads)."""
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    """Decoder widths, one per stage, deepest first."""
    encoder_depth: int = Field(default=5, ge=3, le=5)
    """Number of encoder stages; input sides must be multiples of ``2**encoder_depth``."""


class Normalization(_Strict):
    """Per-image, per-channel percentile normalisation: ``(x - p_low) / (p_high - p_low)``."""

    kind: Literal["percentile"] = "percentile"
    low: float = Field(default=1.0, ge=0.0, le=50.0)
    """Lower percentile mapped to 0."""
    high: float = Field(default=99.8, ge=50.0, le=100.0)
    """Upper percentile mapped to 1."""


class TilingSpec(_Strict):
    """Tile constraints and defaults for the tiled engine."""

    tile: int = Field(default=1024, ge=64, le=8192)
    """Default tile side in pixels (fitted per image, see ``inference.tiling``)."""
    halo: int = Field(default=16, ge=0, le=512)
    """Context discarded on each inner tile side."""
    step: int = Field(default=32, ge=1)
    """Tile sides must be multiples of this (``2**encoder_depth`` for a U-Net)."""
    min_tile: int = Field(default=64, ge=1)
    """Smallest tile side the network accepts."""


class InstanceDefaults(_Strict):
    """Default postprocessing parameters (probabilities -> instance labels)."""

    foreground_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    seed_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    min_size: int = Field(default=12, ge=0)


class Provenance(_Strict):
    """Where the weights came from, in words a reviewer can check."""

    trained_on: str = ""
    """Honest description of the training data."""
    script: str = ""
    """Command or script that produced the weights."""
    seed: int | None = None
    epochs: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    """Validation figures measured at the end of training (e.g. ``f1_at_0.5``)."""
    created: str = ""
    """ISO date-time of creation."""
    software: dict[str, str] = Field(default_factory=dict)
    """Versions of torch / smp / this package used."""


class ModelCard(_Strict):
    """The JSON card of a checkpoint."""

    format_version: int = CARD_FORMAT_VERSION
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    task: Literal["instance-segmentation"] = "instance-segmentation"
    architecture: ArchitectureSpec
    channel_names: list[str] = Field(default_factory=lambda: ["nuclei"])
    """One name per input channel, in order."""
    output_names: list[str] = Field(default_factory=lambda: ["foreground", "distance"])
    """One name per output map: ``foreground`` probability and normalised ``distance`` to the object edge."""
    normalization: Normalization = Field(default_factory=Normalization)
    tiling: TilingSpec = Field(default_factory=TilingSpec)
    instances: InstanceDefaults = Field(default_factory=InstanceDefaults)
    pixel_size_um: float | None = None
    """Pixel size the model was trained at, when known."""
    object_diameter_px: float | None = None
    """Typical object diameter in training data, in pixels."""
    provenance: Provenance = Field(default_factory=Provenance)
    license: str = "BSD-3-Clause"
    authors: list[str] = Field(default_factory=list)
    weights_sha256: str = ""
    """sha256 of the weight tensors (names and bytes, in sorted order); set when saving."""

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of the weights hash: what tables print to trace a result."""
        return self.weights_sha256[:12]
