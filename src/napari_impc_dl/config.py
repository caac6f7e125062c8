"""Validated run configurations (pydantic, ``extra="forbid"``): one place for bounds and defaults.

The CLI and the widgets build these from user input; a bad value becomes one readable
:class:`~napari_impc_dl.errors.InputError` via :func:`validated`.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InputError


GPU_BATCH = 4
"""Tiles per forward pass on a GPU (or MPS) when the batch is left to the engine."""


def worker_threads() -> int:
    """Threads for the numpy work after inference (postprocessing blocks, measuring them): one per
    core, at most 2. Each postprocessing block in flight holds about 25 bytes per window pixel, so
    more threads cost memory; more than 2 were not measured (the development machine has 2 cores)."""
    return max(1, min(2, os.cpu_count() or 1))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SegmentConfig(_Strict):
    """How to segment: tiling, device and postprocessing. ``None`` means "the model's default"."""

    tile: int | None = Field(default=None, ge=64, le=8192)
    """Approximate tile side in pixels (fitted per image to a multiple of the model's step)."""
    halo: int | None = Field(default=None, ge=0, le=512)
    """Context pixels discarded on each inner tile side; larger is safer and slower."""
    batch: int | None = Field(default=None, ge=1, le=256)
    """Tiles per forward pass (halved automatically on GPU out-of-memory); ``None``: 1 on the CPU (a
    batch gains nothing there and multiplies activation memory), :data:`GPU_BATCH` on a GPU."""
    device: str = "auto"
    """``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    channel: int | None = Field(default=None, ge=0, le=63)
    """Use only this channel of a multichannel image (for single-channel models)."""
    channel_axis: int | None | Literal["auto"] = "auto"
    """Which array axis holds channels; ``auto`` reads metadata, then guesses; ``None``: no channel axis."""
    foreground_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Foreground probability above which a pixel belongs to an object."""
    seed_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Distance-map level above which a pixel seeds an object (higher splits touching objects less)."""
    min_size: int | None = Field(default=None, ge=0, le=10_000_000)
    """Objects smaller than this many pixels are dropped."""
    block: int = Field(default=2048, ge=256, le=16384)
    """Postprocessing block side (labels are seam-free across blocks)."""
    block_halo: int = Field(default=96, ge=16, le=2048)
    """Context around postprocessing blocks: larger than the biggest cluster of touching objects."""
    in_memory_limit_mpx: float = Field(default=64.0, gt=0)
    """Images above this many megapixels (all planes) stream probabilities and labels through zarr on disk."""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = v.strip().lower()
        if v in ("auto", "cpu", "mps", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")


def validated(cls, **values):
    """Build ``cls(**values)``; turn a pydantic error into one :class:`InputError` naming the field."""
    try:
        return cls(**values)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = ".".join(str(p) for p in e["loc"]) or "value"
        raise InputError(f"Invalid {field.replace('_', '-')}: {e['msg']} (got {e.get('input')!r})", "See --help for the allowed range") from None
