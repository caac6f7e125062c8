"""A whole training run: check the data and the folder, build the network, train, write the model and reports.

    train(config, out_dir, ...)  -> TrainReport

Order matters for the user: every input is read and checked (pairs, masks, classes, the split,
``--from``, ``--resume`` settings, the folder) *before* anything is written, so a bad input ends in
one :class:`~napari_impc_dl.errors.InputError` and an untouched ``--out``. The folder then holds:

    model.safetensors   the best epoch's weights + card (task, classes, crop rule, figures)
    last.safetensors    the latest weights; train_state.pt: optimiser, schedule, history (--resume)
    config.json         the settings and the data this run used
    history.csv, curves.png, report.json; classifiers also confusion.csv / .png and per_class.csv

Either ``DIR`` or ``DIR/model.safetensors`` works wherever a model is accepted.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import ClassificationTrainConfig, SegmentationTrainConfig
from ..errors import CancelToken, InputError
from . import augment as aug
from .data import Sample, class_counts, classification_images, classification_objects, segmentation_pairs, split_by_image
from .loop import STATE_FILE, FitResult, _TooShort, fit

MODEL_FILES = ("model.safetensors", "last.safetensors", STATE_FILE)
_RESUMABLE_IGNORED = {"epochs", "time_limit_min", "device", "patience", "amp"}
"""Settings a resumed run may change; every other one must equal the first run's."""


@dataclass
class TrainReport:
    """What a training run wrote and measured."""

    out_dir: Path
    model: Path | None
    """``model.safetensors`` (best epoch), or None when stopped before the first epoch ended."""
    last: Path
    history: list[dict]
    metrics: dict
    """Validation figures of the best model (classifiers: with ``confusion``)."""
    best_epoch: int
    stopped: str
    samples_per_s: float
    wait_share: float
    transfer: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------- checks before writing


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' is a file", "Give a folder for the model and its reports")
    if resume:
        if not (out / STATE_FILE).is_file() or not (out / "last.safetensors").is_file():
            raise InputError(f"Nothing to resume in '{out}' (no {STATE_FILE} and last.safetensors)", "Resume the folder of an earlier run, or leave --resume out")
        if not os.access(out, os.W_OK):
            raise InputError(f"Cannot write to '{out}'", "Check its permissions")
        return
    held = [f for f in MODEL_FILES if (out / f).exists()]
    if held:
        raise InputError(f"'{out}' already holds a trained model ({', '.join(held)})", "Use --resume to continue it, or choose another --out folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write to the output folder '{out}' ('{probe}' is not writable)", "Choose a folder you can write to with --out")


def _check_resume(out: Path, config) -> dict:
    import torch

    try:
        saved = json.loads((out / "config.json").read_text())["config"]
    except Exception:
        raise InputError(f"'{out}/config.json' is missing or damaged, so the run cannot be resumed safely", "Start a new run in another --out folder") from None
    now = config.model_dump(mode="json")
    diff = [k for k in sorted(set(saved) | set(now)) if k not in _RESUMABLE_IGNORED and saved.get(k) != now.get(k)]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in diff[:4])
        raise InputError(f"--resume with other settings than the first run ({detail})", "Resume with the same settings (only epochs, time limit, patience, device and AMP may change), or start a new run")
    try:
        return torch.load(str(out / STATE_FILE), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"Cannot read '{out / STATE_FILE}' ({type(exc).__name__})", "Start a new run in another --out folder") from None


# ----------------------------------------------------------------------------- building the network


def _seg_network(config: SegmentationTrainConfig, n_channels: int):
    from ..models import registry
    from ..models.card import InstanceDefaults, ModelCard, SemanticSpec, TilingSpec
    from .transfer import head_names, load_matching, read_weights

    base_card, transfer, state = None, {}, None
    classes = config.classes
    n_out = len(classes) if classes else 2
    if config.from_model:
        state, base_card, label = read_weights(config.from_model, config.task)
        if base_card is not None and base_card.task == "classification":
            raise InputError(f"--from {label} is a classifier; a segmentation U-Net cannot start from it", "Start from a segmentation checkpoint, or from scratch")
    # the same outputs as the starting model: every tensor carries over; other outputs: a new head
    same_head = base_card is not None and (base_card.semantic.classes if base_card.semantic is not None else None) == classes
    if base_card is not None:
        spec = base_card.architecture if same_head else base_card.architecture.model_copy(update={"out_channels": n_out})
        if spec.in_channels != n_channels:
            raise InputError(f"--from {label} takes {spec.in_channels} channel(s), the training images have {n_channels}", "Pick the channel it was trained on with --channel, or train from scratch")
    else:
        if config.arch not in registry.ENCODERS:
            raise InputError(f"Unknown segmentation encoder '{config.arch}'", f"Choose one of: {', '.join(registry.ENCODERS)}")
        spec = registry.architecture(config.arch, in_channels=n_channels, out_channels=n_out)
    net = registry.build(spec)
    if state is not None:
        transfer = load_matching(net, state, skip=set() if same_head else head_names(net), label=f"The weights of --from {label}", min_share=0.999 if same_head else 0.5)
        transfer["from"] = label
    step = 2**spec.encoder_depth
    if base_card is not None:
        template = base_card
    else:
        from .tasks import CONVEX_MERGE

        template = ModelCard(name="untitled", architecture=spec, channel_names=[f"channel {i}" for i in range(n_channels)] if n_channels > 1 else ["channel 0"],
                             tiling=TilingSpec(tile=1024, halo=32, step=step, min_tile=max(32, step)), instances=InstanceDefaults(**CONVEX_MERGE))
    if classes:  # semantic: the card says which classes the outputs are
        semantic = SemanticSpec(classes=list(classes), background=config.background_classes)
        template = ModelCard.model_validate({**template.model_dump(), "task": "semantic", "architecture": spec.model_dump(),
                                             "output_names": list(classes), "semantic": semantic.model_dump()})
    elif base_card is not None and not same_head:  # from a semantic model to instances: a new head, instance outputs
        template = ModelCard.model_validate({**template.model_dump(), "task": "instance-segmentation", "architecture": spec.model_dump(),
                                             "semantic": None, "output_names": ["foreground", "distance"]})
    return net, template, transfer, step


def _cls_network(config: ClassificationTrainConfig, classes: list[str], in_channels: int, spec):
    from ..models.card import ModelCard
    from ..models.classifiers import CLASSIFIERS, build_classifier, classifier_architecture
    from .transfer import head_names, load_matching, read_weights

    arch_name, transfer, state, base_card, label = config.arch, {}, None, None, ""
    if config.from_model:
        state, base_card, label = read_weights(config.from_model, config.task)
        if base_card is not None and base_card.task == "classification":
            arch_name = base_card.architecture.encoder
    if arch_name not in CLASSIFIERS:
        raise InputError(f"Unknown classifier architecture '{arch_name}'", f"Choose one of: {', '.join(CLASSIFIERS)}")
    arch = classifier_architecture(arch_name, in_channels, len(classes))
    net = build_classifier(arch, pretrained=config.pretrained)
    if config.pretrained:
        transfer = {"from": f"timm ImageNet weights of {CLASSIFIERS[arch_name]}"}
    if state is not None:
        same_head = base_card is not None and base_card.task == "classification" and list(base_card.classification.classes) == classes
        skip = set() if same_head else head_names(net)
        transfer = load_matching(net, state, skip=skip, label=f"The weights of --from {label}")
        transfer["from"] = label
    names = [f"channel {i}" for i in range(spec.image_channels)] if spec.level == "image" or spec.crop.input != "mask" else []
    if spec.level == "object" and spec.crop.input != "image":
        names.append("mask")
    template = ModelCard(name="untitled", task="classification", architecture=arch, classification=spec, channel_names=names, output_names=list(classes))
    return net, template, transfer


# ----------------------------------------------------------------------------- the run


def _software() -> dict:
    import torch

    from .. import __version__

    return {"torch": torch.__version__, "napari_impc_dl": __version__, "python": platform.python_version()}


def _describe_data(train: list[Sample], val: list[Sample], task: str, classes=()) -> dict:
    d = {"train_images": len(train), "val_images": len(val)}
    if task == "classification":
        d["train_classes"], d["val_classes"] = class_counts(train), class_counts(val)
    elif task == "semantic":
        px = sum(np.bincount(s.mask.ravel(), minlength=len(classes))[: len(classes)] for s in train)
        d["train_class_pixels"] = {c: int(n) for c, n in zip(classes, px)}
    else:
        d["train_objects"] = int(sum(len(np.unique(s.mask)) - (1 if (s.mask == 0).any() else 0) for s in train))
    d["val_names"] = [s.name for s in val][:50]
    return d


def _flat_metrics(m: dict) -> dict[str, float]:
    return {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def _median_diameter(samples: list[Sample]) -> float | None:
    areas = np.concatenate([np.bincount(s.mask.ravel())[1:] for s in samples if s.mask is not None and s.mask.max() > 0] or [np.zeros(0)])
    areas = areas[areas > 0]
    return round(float(np.median(np.sqrt(4 * areas / np.pi))), 2) if areas.size else None


def train(
    config: SegmentationTrainConfig | ClassificationTrainConfig,
    out_dir: str | os.PathLike,
    *,
    images=None,
    masks=None,
    data=None,
    labels=None,
    channel: int | None = None,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    cancel: CancelToken | None = None,
    command: str = "",
) -> TrainReport:
    """Train a model into ``out_dir`` (see the module docstring for what it holds).

    Segmentation: ``images`` + ``masks`` folders, or ``images`` = a list of ``(image, mask[, name])``.
    Image classification: ``data`` = a folder per class, a CSV ``path,class`` or a list of ``(image, class[, name])``.
    Object classification: ``data`` = a CSV ``image,label,class`` with ``images`` and ``labels`` folders,
    or a list of ``(image, labels, {label: class}[, name])``.
    """
    from ..inference.engine import resolve_device
    from ..models.card import ClassificationSpec, CropRule
    from .tasks import ClassificationTask, SegmentationTask

    out = Path(out_dir).expanduser()
    _check_out(out, resume)
    device = resolve_device(config.device)
    is_seg = config.task == "segmentation"
    semantic = is_seg and config.classes is not None
    if config.mode == "head-only" and not (config.from_model or getattr(config, "pretrained", None)):
        raise InputError("--mode head-only freezes the encoder, so it needs starting weights", "Give --from (a checkpoint or weights file) or --pretrained imagenet, or use --mode fine-tune")
    # ---- data (read and checked before anything is written)
    if is_seg:
        samples = segmentation_pairs(images, masks, channel=channel, semantic=semantic)
        val = segmentation_pairs(Path(config.val_dir) / "images", Path(config.val_dir) / "masks", channel=channel, semantic=semantic) if config.val_dir else None
    elif config.level == "image":
        samples = classification_images(data, channel=channel)
        val = classification_images(config.val_dir, channel=channel) if config.val_dir else None
    else:
        samples = classification_objects(data, images, labels, channel=channel)
        val = None
        if config.val_dir:
            v = Path(config.val_dir)  # our object layout, or the one `synth chromosomes|cells` writes
            csv, lab = (v / "classes.csv", v / "labels") if (v / "classes.csv").is_file() else (v / "objects_truth.csv", v / "masks")
            val = classification_objects(csv, v / "images", lab, channel=channel)
    train_s, val_s = (samples, val) if val is not None else split_by_image(samples, config.val_fraction, config.seed)
    if any(s.image.shape[0] != train_s[0].image.shape[0] for s in train_s + val_s):
        raise InputError("Training and validation images have different channel counts", "Give images with the same channels, or pick one with --channel")
    n_ch = train_s[0].image.shape[0]
    batch = config.batch or (8 if is_seg else 32)
    kinds = tuple(config.augment) if config.augment is not None else aug.DEFAULTS["segmentation" if is_seg else config.level]
    # ---- network and task (initial weights from the seed: same seed, same run)
    import torch

    torch.manual_seed(config.seed)
    if is_seg:
        from ..inference.instances import InstanceParams

        net, template, transfer, step = _seg_network(config, n_ch)
        if config.patch % step:
            raise InputError(f"--patch {config.patch} is not a multiple of {step} (what this network's {template.architecture.encoder_depth} stages need)", f"Use e.g. --patch {max(step, config.patch // step * step)}")
        inst = template.instances
        common = dict(patch=config.patch, batch=batch, min_foreground=config.min_foreground, augment_kinds=kinds, step=step,
                      params=InstanceParams(inst.foreground_threshold, inst.seed_threshold, inst.min_size, merge_threshold=inst.merge_threshold,
                                           merge_min_solidity=inst.merge_min_solidity),
                      low=template.normalization.low, high=template.normalization.high)
        if semantic:
            from .semantic import SemanticTask

            task = SemanticTask(train_s, val_s, list(config.classes), config.background_classes, **common)
        else:
            task = SegmentationTask(train_s, val_s, contact_weight=config.contact_weight, **common)
    else:
        classes = sorted(class_counts(train_s + val_s))
        size = config.size or (64 if config.level == "object" else 224)
        crop = CropRule(mode=config.crop, side=config.crop_side, margin=config.margin, input=config.input, padding=config.padding) if config.level == "object" else None
        spec = ClassificationSpec(level=config.level, classes=classes, input_size=size, resize=config.resize, crop=crop, image_channels=n_ch)
        from ..classify.crops import n_input_channels

        in_ch = n_input_channels(crop, n_ch) if crop is not None else n_ch
        net, template, transfer = _cls_network(config, classes, in_ch, spec)
        task = ClassificationTask(train_s, val_s, classes, spec, batch=batch, balance=config.balance, label_smoothing=config.label_smoothing, augment_kinds=kinds)
    # ---- transfer mode
    from .transfer import encoder_parameter_ids, freeze_encoder

    frozen = freeze_encoder(net) if config.mode == "head-only" else []
    started_from_weights = bool(transfer)
    enc_ids = encoder_parameter_ids(net) if started_from_weights and config.mode == "fine-tune" else set()
    state = _check_resume(out, config) if resume else None
    if resume:
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(out / "last.safetensors")))
    # ---- card and checkpoints
    name = config.name or out.resolve().name or "model"
    data_desc = _describe_data(train_s, val_s, "semantic" if semantic else "segmentation" if is_seg else "classification", template.output_names)
    what = (f"semantic segmentation U-Net ({', '.join(template.output_names)})" if semantic else "instance segmentation U-Net") if is_seg else f"{config.level}-level classifier ({', '.join(template.output_names)})"
    provenance = dict(
        trained_on=f"{data_desc['train_images']} training / {data_desc['val_images']} validation images given to `napari-impc-dl train`" + (f" (started from {transfer['from']})" if transfer.get("from") else ""),
        script=command or "napari_impc_dl.api.train",
        seed=config.seed,
        software=_software(),
    )
    card_base = template.model_copy(update={
        "name": name,
        "description": f"{what} trained with napari-impc-dl ({template.architecture.encoder}, {config.mode}).",
        "object_diameter_px": _median_diameter(train_s) if is_seg and not semantic else None,
    })

    def make_card(metrics: dict, epochs: int):
        from ..models.card import Provenance

        prov = Provenance(**provenance, epochs=epochs, metrics=_flat_metrics(metrics),
                          created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                          training={"config": config.model_dump(mode="json"), "transfer": {k: v for k, v in transfer.items() if k != "skipped"}, "data": data_desc})
        return card_base.model_copy(update={"provenance": prov, "weights_sha256": ""})

    def save(net_, path: Path, row: dict) -> None:
        from ..models.checkpoint import save_checkpoint

        metrics = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
        save_checkpoint(net_, make_card(metrics, int(row.get("epoch", 0))), path)

    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create the output folder '{out}' ({exc.strerror or exc})", "Choose a folder you can write to with --out") from None
    from .reports import plot_curves, write_confusion, write_history, write_json

    if not resume:
        write_json(out / "config.json", {"config": config.model_dump(mode="json"), "data": data_desc, "transfer": transfer, "command": command})
    from ..inference.allocator import reuse_large_buffers

    try:
        with reuse_large_buffers():  # forward / backward buffers stay in the heap from step to step (no page faults)
            result: FitResult = fit(
                task, net, epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay, schedule=config.schedule,
                patience=config.patience, seed=config.seed, device=device, amp=config.amp, out=out, save=save,
                encoder_ids=enc_ids, encoder_lr_factor=config.encoder_lr_factor, frozen=frozen,
                time_limit_s=config.time_limit_min * 60 if config.time_limit_min else None, state=state,
                on_epoch=lambda h: write_history(out, h), progress=progress, cancel=cancel,
            )
    except _TooShort as exc:
        _cleanup(out, created, resume)
        raise InputError(f"--time-limit {config.time_limit_min:g} min is shorter than one training step (the first step took {exc.seconds:.1f} s)", "Give a longer --time-limit") from None
    except InputError:
        if not (out / "model.safetensors").exists():
            _cleanup(out, created, resume)
        raise
    files = [out / "config.json", out / "last.safetensors", out / STATE_FILE]
    model_path = out / "model.safetensors" if (out / "model.safetensors").exists() else None
    metrics: dict = {}
    instances_report = None
    if model_path is not None:
        from safetensors.torch import load_file

        from .loop import amp_setup

        last_state = {k: v.clone() for k, v in net.state_dict().items()}
        net.load_state_dict(load_file(str(model_path)))
        net.to(device)
        autocast = amp_setup(device, config.amp)[0]
        if is_seg and not semantic and config.tune_thresholds:
            tuned, metrics = task.tune_thresholds(net, device, autocast)
            keys = ("foreground_threshold", "seed_threshold", "merge_threshold", "merge_min_solidity")
            thresholds = {k: getattr(tuned, k) for k in keys}
            instances_report = {**thresholds, "tuned_on": "validation images (best F1@0.5)", "before": {k: getattr(task.params, k) for k in keys}}
            card_base = card_base.model_copy(update={"instances": card_base.instances.model_copy(update=thresholds)})
        else:
            metrics = task.validate(net, device, autocast)
        from ..models.checkpoint import save_checkpoint

        save_checkpoint(net, make_card(metrics, result.best_epoch), model_path)
        net.load_state_dict(last_state)
        files.append(model_path)
        if result.history:
            files += [write_history(out, result.history)]
            primary = (["miou", "accuracy", "fraction_error"] if semantic else ["f1", "precision", "recall", "iou"]) if is_seg else ["accuracy", "balanced_accuracy", "macro_f1"]
            files.append(plot_curves(out, result.history, primary, title=f"{name}: best epoch {result.best_epoch}"))
        if not is_seg:
            files += write_confusion(out, np.asarray(metrics["confusion"]), task.classes, metrics)
    report = {
        "stopped": result.stopped, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "metrics": {k: v for k, v in metrics.items() if k != "confusion"}, "confusion": metrics.get("confusion"),
        "classes": getattr(task, "classes", None), "samples_per_s": result.samples_per_s, "wait_share": result.wait_share,
        "device": str(device), "transfer": transfer,
    }
    if instances_report is not None:
        report["instances"] = instances_report
    files.append(write_json(out / "report.json", report))
    return TrainReport(out, model_path, out / "last.safetensors", result.history, metrics, result.best_epoch, result.stopped,
                       result.samples_per_s, result.wait_share, transfer, files)


def _cleanup(out: Path, created: bool, resume: bool) -> None:
    """Leave ``out`` as it was before a run that failed on its input."""
    if resume:
        return
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for f in (*MODEL_FILES, "config.json", "history.csv"):
        (out / f).unlink(missing_ok=True)

