"""The model card: everything needed to rebuild, run and trace a model, stored as JSON.

The card travels inside the checkpoint (safetensors metadata) so weights and description can
never be separated. It is a strict pydantic model: an unknown or malformed field is an error,
not a silent default. This module imports no torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CARD_FORMAT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ArchitectureSpec(_Strict):
    """How to rebuild the network with segmentation-models-pytorch."""

    arch: Literal["Unet", "Classifier"] = "Unet"
    """``Unet``: an smp U-Net (segmentation); ``Classifier``: a timm CNN with a class head (classification)."""
    encoder: str
    """Registry key: for a U-Net an encoder of ``models.registry.ENCODERS`` (e.g. ``resnet18``,
    ``mobilenetv3-small``); for a classifier a network of ``models.classifiers.CLASSIFIERS``."""
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


class CropRule(_Strict):
    """How an object-level classifier cuts each labelled object's window (see ``classify.crops``)."""

    mode: Literal["fixed", "bbox"] = "bbox"
    """``fixed``: a square of ``side`` pixels centred on the object; ``bbox``: a square around the
    object's bounding box grown by ``margin`` on each side; both are then resized to the model's input size."""
    side: int = Field(default=64, ge=8, le=2048)
    """Window side in pixels for ``fixed``."""
    margin: float = Field(default=0.25, ge=0.0, le=4.0)
    """For ``bbox``: the bounding box's longer side times ``1 + 2 * margin`` is the window side."""
    input: Literal["image", "mask", "image+mask"] = "image+mask"
    """What the network sees: the image channels, the object's mask alone, or both (the mask as a
    last channel: 1 inside this object, 0 elsewhere, neighbours included)."""
    padding: Literal["zero", "reflect", "none"] = "zero"
    """Windows that cross the image border: filled with zeros, mirrored, or (``none``) shifted to lie inside."""


class ClassificationSpec(_Strict):
    """What a classifier predicts and how its input is prepared."""

    level: Literal["image", "object"]
    """``image``: one class per image (X-ray sex, view); ``object``: one class per labelled object."""
    classes: list[str] = Field(min_length=2, max_length=256)
    """Class names, in the order of the network's outputs."""
    input_size: int = Field(default=64, ge=16, le=2048)
    """Side of the square the network takes (crops and images are resized to it)."""
    resize: Literal["pad", "crop", "stretch"] = "pad"
    """Image level: keep the aspect ratio and pad to a square, keep it and crop the centre, or stretch."""
    crop: CropRule | None = None
    """Object level: the crop rule (required there, unused at image level)."""
    image_channels: int = Field(default=1, ge=1, le=64)
    """Channels read from the image (the network's input channels, plus one for the mask if used)."""


class SemanticSpec(_Strict):
    """What a semantic model's class map means (``task == "semantic"``): one softmax output per class."""

    classes: list[str] = Field(min_length=2, max_length=64)
    """Class names, in the order of the network's outputs (the class map holds their index)."""
    background: list[str] = Field(default_factory=list)
    """Classes that are not tissue (glass, empty well): areas are counted, fractions are of the other classes' pixels."""

    @model_validator(mode="after")
    def _known(self) -> "SemanticSpec":
        unknown = [c for c in self.background if c not in self.classes]
        if unknown or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"semantic classes must be unique and the background classes among them (unknown: {unknown})")
        if len(self.background) >= len(self.classes):
            raise ValueError("at least one semantic class must be tissue (not background)")
        return self


class InstanceDefaults(_Strict):
    """Default postprocessing parameters (probabilities -> instance labels)."""

    foreground_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    seed_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    min_size: int = Field(default=12, ge=0)
    merge_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Join neighbours whose shared border has a mean distance above this (objects the seeds cut in two); None: never."""
    merge_min_solidity: float | None = Field(default=None, gt=0.0, le=1.0)
    """With a merge threshold: join only if the joined object fills at least this share of its convex hull
    (convex objects such as nuclei); None: any shape (bent chromosomes)."""


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
    training: dict = Field(default_factory=dict)
    """The training run's settings (``config.TrainConfig`` as JSON) and where it started from."""
    created: str = ""
    """ISO date-time of creation."""
    software: dict[str, str] = Field(default_factory=dict)
    """Versions of torch / smp / this package used."""


class ModelCard(_Strict):
    """The JSON card of a checkpoint."""

    format_version: int = CARD_FORMAT_VERSION
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    task: Literal["instance-segmentation", "classification", "semantic"] = "instance-segmentation"
    """``instance-segmentation``: objects from foreground + distance maps; ``classification``: a class per
    image or object; ``semantic``: a class per pixel (a softmax map per class) and the area of each."""
    architecture: ArchitectureSpec
    classification: ClassificationSpec | None = None
    """Set for ``task == "classification"``: level, classes, input size and crop rule."""
    semantic: SemanticSpec | None = None
    """Set for ``task == "semantic"``: the classes of the class map and which are background."""
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

    @model_validator(mode="after")
    def _task_fits(self) -> "ModelCard":
        is_cls = self.task == "classification"
        if is_cls != (self.classification is not None) or is_cls != (self.architecture.arch == "Classifier"):
            raise ValueError("a classification card needs arch 'Classifier' and a 'classification' block; a segmentation card neither")
        if is_cls and self.classification.level == "object" and self.classification.crop is None:
            raise ValueError("an object-level classifier needs a crop rule")
        if (self.task == "semantic") != (self.semantic is not None):
            raise ValueError("a semantic card needs a 'semantic' block (classes, background); other cards none")
        if self.semantic is not None and not (self.architecture.out_channels == len(self.semantic.classes) == len(self.output_names)):
            raise ValueError("a semantic card has one output (and one output name) per class")
        return self

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of the weights hash: what tables print to trace a result."""
        return self.weights_sha256[:12]
