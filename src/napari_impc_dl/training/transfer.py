"""Where a network's first weights come from, and which of its parameters learn.

    read_weights     --from: our checkpoint or training folder, a timm / torchvision state-dict file, a Model Zoo package
    load_matching    copy the tensors that fit (by name after known prefixes, and shape) into a network; one clear
                     error listing what does not fit when too little does
    split_encoder    the network's encoder parameter names vs its head (U-Net: encoder vs decoder + head;
                     classifier: everything but the class head)
    freeze_encoder   head-only: encoder weights never change (no gradients, not in the optimiser) and its
                     BatchNorm statistics stay as they are (kept in eval mode)

The encoder of one of our segmentation U-Nets seeds a classifier of the same family
(``encoder.model.conv_stem.weight`` -> ``conv_stem.weight``): smp wraps timm and torchvision
encoders under ``encoder.`` / ``encoder.model.``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

_PREFIXES = ("module.", "model.", "encoder.model.", "encoder.", "backbone.", "net.")


def _is_ours(path: Path) -> bool:
    if path.suffix.lower() != ".safetensors":
        return False
    from ..models.checkpoint import CARD_KEY
    import json

    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            return CARD_KEY in json.loads(f.read(n)).get("__metadata__", {})
    except Exception:
        return False


def read_weights(ref: str | os.PathLike, task: str = "segmentation") -> tuple[dict, object | None, str]:
    """``(state dict on the CPU, our ModelCard or None, a label for messages)`` of a ``--from`` reference.
    A preset's name means its U-Net for ``task="segmentation"`` and its classifier for ``"classification"``."""
    from ..presets import classifier_path, get, preset_path

    preset = get(ref)
    if preset is not None:
        ref = classifier_path(preset.name) if task == "classification" and preset.classifier else preset_path(preset.name)
    path = Path(ref).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"
    if not path.exists():
        raise InputError(f"--from '{ref}' does not exist", "Give a checkpoint (.safetensors), a training folder, a state-dict file (.pth, .pt, .bin, .safetensors) or a Model Zoo package")
    from ..zoo.package import looks_like_package

    if looks_like_package(path):
        return _from_package(path)
    if _is_ours(path):
        from ..models.checkpoint import load_checkpoint

        net, card = load_checkpoint(path)
        return net.state_dict(), card, f"'{path}'"
    return _state_file(path), None, f"'{path}'"


def _state_file(path: Path) -> dict:
    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"Cannot read weights from '{path}' ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})", "Give a state dict saved with torch.save(model.state_dict()) or safetensors (never a pickled model)") from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not any(hasattr(v, "shape") for v in state.values()):
        raise InputError(f"'{path}' holds no tensors by name (a state dict)", "Save weights with torch.save(model.state_dict(), path)")
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


def _from_package(path: Path) -> tuple[dict, object | None, str]:
    from ..zoo.adapter import resolve
    from ..zoo.spec import card_of, describe

    spec = describe(resolve(path))
    w = spec.weights.get("pytorch_state_dict")
    if w is None or w.local is None:
        raise InputError(f"Package '{spec.name}' has no pytorch_state_dict weights inside it (it has {', '.join(spec.local_formats) or 'none on disk'})", "Start from a package with state-dict weights, or from a checkpoint")
    spec.package.check_sha256(w.local, w.sha256, "weights")
    return _state_file(w.local), card_of(spec), f"package '{spec.name}'"


def _renamings(source: dict):
    """Candidate renamings of a source state dict (the prefixes smp, timm, DataParallel and Lightning add)."""
    def strip(k: str) -> str:
        for p in _PREFIXES:
            if k.startswith(p):
                return k[len(p):]
        return k

    yield "as is", dict(source)
    yield "prefixes stripped", {strip(k): v for k, v in source.items()}
    for p in ("encoder.", "encoder.model."):
        yield f"under '{p}'", {p + strip(k): v for k, v in source.items()}


def load_matching(net, source: dict, *, skip: set[str] = frozenset(), label: str = "the weights", min_share: float = 0.5) -> dict:
    """Copy every source tensor whose name (after a renaming) and shape fit ``net``, except ``skip`` (a head that
    is re-initialised). Refuses, naming what does not fit, when fewer than ``min_share`` of the non-skipped
    tensors of ``net`` would be loaded. Returns ``{"loaded", "of", "renaming", "skipped"}``."""
    import torch

    target = net.state_dict()
    wanted = [k for k in target if k not in skip and not k.endswith("num_batches_tracked")]
    best = None
    for how, cand in _renamings(source):
        fit = {k: v for k, v in cand.items() if k in target and k not in skip and tuple(v.shape) == tuple(target[k].shape)}
        if best is None or len(fit) > len(best[1]):
            best = (how, fit, cand)
    how, fit, cand = best
    n_fit = sum(1 for k in fit if not k.endswith("num_batches_tracked"))
    if n_fit < min_share * max(1, len(wanted)):
        wrong = [f"{k} {tuple(cand[k].shape)} vs {tuple(target[k].shape)}" for k in wanted if k in cand and k not in fit][:3]
        absent = [k for k in wanted if k not in cand][:3]
        detail = "; ".join(([f"shape differs: {', '.join(wrong)}"] if wrong else []) + ([f"not in the file: {', '.join(absent)}"] if absent else []))
        raise InputError(
            f"{label} do not fit this network: only {n_fit} of its {len(wanted)} tensors match by name and shape ({detail})",
            "Start from weights of the same architecture (see --arch), or train from scratch",
        )
    with torch.no_grad():
        for k, v in fit.items():
            target[k].copy_(v.to(target[k].dtype))
    return {"loaded": n_fit, "of": len(wanted), "renaming": how, "skipped": sorted(skip)}


def head_names(net) -> set[str]:
    """State-dict names of the part that is re-initialised for new classes / outputs (the head)."""
    if hasattr(net, "segmentation_head"):
        return {f"segmentation_head.{k}" for k in net.segmentation_head.state_dict()}
    head = net.get_classifier()
    for name, mod in net.named_modules():
        if mod is head:
            return {f"{name}.{k}" for k in mod.state_dict()}
    return set()


def encoder_modules(net) -> list:
    """The modules whose parameters are "the encoder": a U-Net's encoder; a classifier's everything but its head."""
    if hasattr(net, "encoder") and hasattr(net, "decoder"):
        return [net.encoder]
    head = net.get_classifier()
    prefix = next(name for name, mod in net.named_modules() if mod is head)
    keep = []
    for name, mod in net.named_children():
        if prefix == name or prefix.startswith(name + "."):
            if prefix != name:  # the head sits inside this child (timm's ClassifierHead / vgg's head): freeze its siblings
                keep += [m for n, m in mod.named_children() if f"{name}.{n}" != prefix and not prefix.startswith(f"{name}.{n}.")]
            continue
        keep.append(mod)
    return keep


def encoder_parameter_ids(net) -> set[int]:
    return {id(p) for m in encoder_modules(net) for p in m.parameters()}


def freeze_encoder(net) -> list:
    """No gradients for the encoder; returns its modules (the loop keeps them in eval mode: BatchNorm frozen)."""
    mods = encoder_modules(net)
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(False)
        m.eval()
    return mods
