"""Validated run configurations (pydantic, ``extra="forbid"``): one place for bounds and defaults.

The CLI and the widgets build these from user input; a bad value becomes one readable
:class:`~napari_impc_dl.errors.InputError` via :func:`validated`.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError


GPU_BATCH = 4
"""Tiles per forward pass on a GPU (or MPS) when the batch is left to the engine."""

GPU_POSTPROCESS_BELOW_CORES = 8
"""``postprocess_device="auto"``: a CUDA host with fewer usable cores than this postprocesses on the GPU (an
estimate: on crowded nuclei one core postprocesses about 10 MP/s, a GPU infers 100s of MP/s; not yet measured on a GPU)."""


BLOCK_BYTES_PER_PIXEL = 25
"""About what one postprocessing block in flight holds per window pixel (probabilities, masks, keys, labels)."""

MAX_WORKER_THREADS = 32
"""Beyond this, more threads for the numpy postprocessing only contend for memory bandwidth."""


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a cluster job's allocation), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def worker_threads(block: int = 2048, halo: int = 96) -> int:
    """Threads for the numpy work after inference (postprocessing blocks, measuring them).

    One per usable core (:func:`usable_cores`), bounded by memory: each block in flight holds
    about :data:`BLOCK_BYTES_PER_PIXEL` bytes per window pixel (``(block + 2 * halo)²``; 125 MB
    for the default 2048-pixel block), counted twice (a block is computed while the one before
    is being measured), and together they may use at most a quarter of the memory available now.
    On a 16-core GPU host that is 16 threads instead of the 2 it was capped at before (the
    postprocessing then keeps up with the GPU); on a 2-core laptop it stays 2. The environment
    variable ``NAPARI_IMPC_DL_THREADS`` overrides it (e.g. for a job sharing its node).
    """
    env = os.environ.get("NAPARI_IMPC_DL_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise InputError(f"NAPARI_IMPC_DL_THREADS={env!r} is not a whole number", "Set it to the number of threads to use, e.g. 8, or unset it") from None
    per_thread = 2 * BLOCK_BYTES_PER_PIXEL * (block + 2 * halo) ** 2
    try:
        import psutil

        by_memory = int(psutil.virtual_memory().available * 0.25 // per_thread)
    except Exception:  # noqa: BLE001 - no reading of memory: trust the cores
        by_memory = MAX_WORKER_THREADS
    return max(1, min(usable_cores(), by_memory, MAX_WORKER_THREADS))


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
    level: int | None = Field(default=None, ge=0, le=32)
    """Pyramidal files (whole-slide scans): segment this resolution level (0: full resolution)."""
    pixel_size_um: float | None = Field(default=None, gt=0.0, le=1000.0)
    """Pyramidal files: segment the coarsest level whose pixels are at most this many microns (from the file's
    microns per pixel), e.g. the resolution the model was trained at."""
    foreground_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Foreground probability above which a pixel belongs to an object."""
    seed_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Distance-map level above which a pixel seeds an object (higher separates touching objects more, and may cut a long or large one in two)."""
    min_size: int | None = Field(default=None, ge=0, le=10_000_000)
    """Objects smaller than this many pixels are dropped."""
    merge_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    """Distance-head models: join neighbours whose shared border has a mean distance-map level above this (one
    object the seeds cut in two, e.g. a chromosome at its centromere); ``None``: the model's (the chromosomes
    preset: 0.25); 1: never join."""
    merge_min_solidity: float | None = Field(default=None, gt=0.0, le=1.0)
    """With a merge: join only if the joined object fills at least this share of its convex hull (nuclei are
    convex; a bent chromosome is not); ``None``: the model's (the nuclei starter: 0.98; others: any shape); 1: only
    perfectly convex joins."""
    instances: Literal["auto", "distance", "boundary", "threshold"] = "auto"
    """How probabilities become objects: ``distance`` (the model's distance map, or the distance transform of its
    foreground), ``boundary`` (interiors of its boundary map), ``threshold`` (connected foreground, no splitting);
    ``auto`` picks from the model's outputs."""
    diameter: float | None = Field(default=None, gt=0.0, le=10_000)
    """Expected object diameter in pixels; ``None``: estimated per image when the model has no distance head.
    Drives seed suppression for such models and, for every model, the minimum object size (a disk a quarter as wide)."""
    block: int = Field(default=2048, ge=256, le=16384)
    """Postprocessing block side (labels are seam-free across blocks)."""
    block_halo: int = Field(default=96, ge=16, le=2048)
    """Context around postprocessing blocks: larger than the biggest cluster of touching objects."""
    overlap: bool | None = None
    """Postprocess the top of a plane while the model computes the rest (same labels as one after the other).
    ``None``: on a GPU (the CPU's cores are the model's there). Not possible when the object diameter has to be
    estimated from the whole plane first (give ``diameter`` to allow it)."""
    postprocess_device: Literal["auto", "cpu", "model"] = "auto"
    """Where seeds, the seeded flood and connected components run: ``cpu`` (numpy), ``model`` (torch on the model's
    device, same labels; for the distance-head and threshold methods) or ``auto``: the model's device when it is a
    CUDA GPU and the host has fewer than :data:`GPU_POSTPROCESS_BELOW_CORES` cores to keep up with it, else the CPU."""
    in_memory_limit_mpx: float = Field(default=64.0, gt=0)
    """Images above this many megapixels (all planes) stream probabilities and labels through zarr on disk."""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _check_device(v)



def _check_device(v: str) -> str:
    v = v.strip().lower()
    if v in ("auto", "cpu", "mps", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise ValueError("must be auto, cpu, cuda, cuda:N or mps")


Augmentation = Literal["flips", "rot90", "zoom", "intensity", "noise", "blur", "illumination", "affine", "elastic"]


class _TrainCommon(_Strict):
    """Settings shared by segmentation and classification training (saved in the model card)."""

    epochs: int = Field(default=100, ge=1, le=100_000)
    """Passes over the training data (early stop and ``time_limit_min`` may end sooner)."""
    batch: int | None = Field(default=None, ge=1, le=4096)
    """Samples per step; ``None``: 8 patches (segmentation), 32 crops or images (classification)."""
    lr: float = Field(default=3e-4, gt=0.0, le=1.0)
    """Peak learning rate of AdamW (3e-4, as in the users' notebooks)."""
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    """AdamW weight decay."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule over ``epochs``: linear warm-up (3 % of the steps) then cosine decay, or constant."""
    patience: int = Field(default=15, ge=0, le=100_000)
    """Stop when the validation metric has not improved for this many epochs (0: never stop early)."""
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.9)
    """Share held out for validation, split by image (at least one image, and one object or image per class)."""
    val_dir: str | None = None
    """A separate validation set (same layout as the training data) instead of a split."""
    seed: int = Field(default=0, ge=0)
    """Seed of the split, the initial weights, the sampling and the augmentation: same seed, same run."""
    time_limit_min: float | None = Field(default=None, gt=0.0, le=100_000)
    """Wall-clock limit in minutes; training ends after the step that crosses it (best model kept)."""
    mode: Literal["fine-tune", "head-only"] = "fine-tune"
    """``fine-tune``: all layers learn (the encoder at ``encoder_lr_factor`` x ``lr`` when starting from
    weights); ``head-only``: the encoder is frozen (weights and BatchNorm statistics), only the head learns."""
    encoder_lr_factor: float = Field(default=0.1, gt=0.0, le=1.0)
    """Fine-tuning from weights (``from_model`` / ``pretrained``): the encoder's learning rate is ``lr`` times this."""
    from_model: str | None = None
    """Start from: a checkpoint or training folder of ours, a timm / torchvision state-dict file, or a Model Zoo package."""
    pretrained: Literal["imagenet"] | None = None
    """Classifiers: ImageNet weights through timm's hub (needs a network)."""
    augment: list[Augmentation] | None = None
    """Augmentations; ``None``: the task's default (see the trainer's docs)."""
    device: str = "auto"
    """``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling)."""
    name: str | None = Field(default=None, max_length=128)
    """The model's name (default: the output folder's name)."""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _check_device(v)


class SegmentationTrainConfig(_TrainCommon):
    """Train (or fine-tune) an instance-segmentation U-Net on image / instance-mask pairs."""

    task: Literal["segmentation"] = "segmentation"
    arch: str = "mobilenetv3-minimal"
    """Encoder key of ``models.registry.ENCODERS`` (ignored when starting from one of our checkpoints)."""
    patch: int = Field(default=256, ge=32, le=4096)
    """Training patch side in pixels (a multiple of the network's step)."""
    min_foreground: float = Field(default=0.02, ge=0.0, lt=1.0)
    """Patches are re-drawn (up to 10 times) until this share of their pixels is foreground."""
    contact_weight: float = Field(default=0.0, ge=0.0, le=100.0)
    """Extra loss weight on pixels where two objects meet (``1 + w`` there, see ``training.targets.contact_weights``):
    helps thin or packed touching objects (chromosomes, cells) stay apart; 0 turns it off."""
    tune_thresholds: bool = True
    """Instances: after training, pick the foreground and seed thresholds with the best validation F1@0.5 (a grid
    search on the validation images, as StarDist's ``optimize_thresholds``), then whether the border merge is on
    (``training.tasks.CONVEX_MERGE`` for a new model), and store them in the model's card; ``False`` keeps 0.5 /
    0.5 and the merge (or those of ``from_model``)."""
    classes: list[str] | None = Field(default=None, min_length=2, max_length=64)
    """Semantic segmentation: the masks are class maps, pixel value ``k`` meaning ``classes[k]`` (e.g.
    ``background, tissue, fibrosis``); the model gives a class per pixel and the area of each. None: instance masks."""
    background: list[str] | None = None
    """Semantic: the classes that are not tissue (fractions are of the other classes); None: the first class."""

    @model_validator(mode="after")
    def _semantic(self) -> "SegmentationTrainConfig":
        if self.classes is None:
            if self.background is not None:
                raise ValueError("background classes need classes (semantic segmentation)")
            return self
        if len(set(self.classes)) != len(self.classes) or any(not c.strip() for c in self.classes):
            raise ValueError(f"semantic classes must be distinct, non-empty names (got {self.classes})")
        unknown = [c for c in (self.background or []) if c not in self.classes]
        if unknown:
            raise ValueError(f"background classes {unknown} are not among the classes {self.classes}")
        if self.background is not None and len(self.background) >= len(self.classes):
            raise ValueError("at least one class must not be background")
        return self

    @property
    def background_classes(self) -> list[str]:
        """The semantic background classes (the first class when none were named)."""
        return list(self.background) if self.background is not None else list(self.classes or [])[:1]


class ClassificationTrainConfig(_TrainCommon):
    """Train (or fine-tune) a CNN classifier of whole images or of labelled objects."""

    task: Literal["classification"] = "classification"
    level: Literal["image", "object"] = "image"
    """One class per image, or one class per labelled object (crops)."""
    arch: str = "resnet18"
    """Network of ``models.classifiers.CLASSIFIERS``."""
    size: int | None = Field(default=None, ge=16, le=2048)
    """Input side in pixels; ``None``: 64 for objects, 224 for images."""
    input: Literal["image", "mask", "image+mask"] = "image+mask"
    """Objects: what the network sees (the chromosome study: mask crops beat image crops)."""
    crop: Literal["fixed", "bbox"] = "bbox"
    """Objects: a fixed window (``crop_side``) or the bounding box grown by ``margin``."""
    crop_side: int = Field(default=64, ge=8, le=2048)
    margin: float = Field(default=0.25, ge=0.0, le=4.0)
    padding: Literal["zero", "reflect", "none"] = "zero"
    resize: Literal["pad", "crop", "stretch"] = "pad"
    """Images: keep the aspect ratio and pad, keep it and crop the centre, or stretch to the square."""
    balance: Literal["weights", "sampling", "none"] = "weights"
    """Imbalanced classes: weight the loss by inverse class frequency, sample classes evenly, or neither."""
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5)


TrainConfig = SegmentationTrainConfig | ClassificationTrainConfig


class BatchConfig(_Strict):
    """How a batch runs (``napari-impc-dl batch``): where, and what to redo. What each image gets is a SegmentConfig."""

    workers: int | None = Field(default=None, ge=1, le=1024)
    """Start a dask LocalCluster of this many worker processes (``--workers N`` / ``--cluster local:N``); None: in this process."""
    scheduler: str | None = Field(default=None, min_length=3, max_length=500)
    """Address of a running dask scheduler (``tcp://HOST:PORT``), e.g. one started by dask-jobqueue on Slurm."""
    force: bool = False
    """Redo every image, also those finished by an earlier run with the same input, model and parameters."""
    hash_inputs: bool = False
    """Recognise unchanged inputs by size and sha256 of their content instead of size and modification time."""
    retries: int = Field(default=2, ge=0, le=10)
    """Times dask retries a task that raised (a lost worker's tasks are rerun elsewhere regardless)."""
    export: list[Literal["roi", "geojson", "rle"]] = Field(default_factory=list)
    """Outlines and masks for other tools per image: Fiji ROI set, QuPath GeoJSON, rows of the merged ``masks.csv``."""

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if "://" not in v and ":" not in v and not v.endswith(".json"):
            raise ValueError("must be a scheduler address like tcp://HOST:PORT (or a scheduler file .json)")
        return v


def validated(cls, **values):
    """Build ``cls(**values)``; turn a pydantic error into one :class:`InputError` naming the field."""
    try:
        return cls(**values)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = ".".join(str(p) for p in e["loc"]) or "value"
        raise InputError(f"Invalid {field.replace('_', '-')}: {e['msg']} (got {e.get('input')!r})", "See --help for the allowed range") from None
