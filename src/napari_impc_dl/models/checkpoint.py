"""Checkpoints: one ``.safetensors`` file holding the weights and, in its metadata, the JSON card.

safetensors stores raw tensors and a string-to-string header, so loading never unpickles
anything. The card records ``weights_sha256`` (over tensor names and bytes); loading recomputes
it and refuses a file whose weights do not match their card.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..errors import InputError
from .card import ModelCard

CARD_KEY = "napari_impc_dl.card"


def weights_sha256(state: dict) -> str:
    """sha256 over ``name`` and raw bytes of every tensor, in sorted name order (device/layout-independent)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model, card: ModelCard, path: str | os.PathLike) -> ModelCard:
    """Write ``model``'s weights and ``card`` to ``path`` atomically; return the card with its hash set."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    card = card.model_copy(update={"weights_sha256": weights_sha256(state)})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a model file is meant to be shared
    try:
        save_file(state, tmp, metadata={CARD_KEY: card.model_dump_json()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return card


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read only the card of a checkpoint (cheap: no tensors are loaded, no torch import)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Model file '{path}' does not exist", "Check the path, or use a bundled preset such as --preset nuclei")
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        raw = header.get("__metadata__", {}).get(CARD_KEY)
        if raw is None:
            raise InputError(
                f"'{path}' is a safetensors file without a napari-impc-dl model card",
                "Use a checkpoint saved by napari-impc-dl (train or export), or import a BioImage Model Zoo package",
            )
        return ModelCard.model_validate_json(raw)
    except InputError:
        raise
    except Exception as exc:  # corrupt header, invalid JSON, invalid card
        raise InputError(
            f"Cannot read model '{path}': not a valid napari-impc-dl checkpoint ({type(exc).__name__}: {str(exc)[:200]})",
            "Re-copy the file or re-export the model",
        ) from None


def load_checkpoint(path: str | os.PathLike, device: str = "cpu"):
    """Rebuild the network of a checkpoint and load its weights; return ``(model, card)`` in eval mode."""
    from safetensors.torch import load_file

    from .registry import build

    card = read_card(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise InputError(f"Cannot read the weights in '{path}' ({exc})", "Re-copy the file or re-export the model") from None
    if card.weights_sha256 and weights_sha256(state) != card.weights_sha256:
        raise InputError(
            f"The weights in '{path}' do not match the hash in their card (the file was altered or damaged)",
            "Re-copy the file from its source",
        )
    model = build(card.architecture)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"The weights in '{path}' do not fit the architecture its card describes "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors)",
            "The checkpoint was written by an incompatible version; re-export it",
        )
    return model.eval().to(device), card
