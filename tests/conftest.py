"""Shared fixtures: small synthetic images with ground truth, a tiny random model, the starter model."""

from __future__ import annotations

import os
import tempfile

import pytest

# napari / Qt / Mesa write settings and caches: keep them out of the user's home during tests
for _var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
    os.environ.setdefault(_var, tempfile.mkdtemp(prefix=f"impc-{_var.lower()}-"))
os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")


@pytest.fixture(scope="session")
def tiny_model():
    """A randomly initialised tiny U-Net as a Runnable (fast; predictions are meaningless)."""
    import torch

    from napari_impc_dl.inference.runnable import CheckpointModel
    from napari_impc_dl.models import registry
    from napari_impc_dl.models.card import ModelCard, TilingSpec

    torch.manual_seed(0)
    spec = registry.architecture("tiny", in_channels=1)
    card = ModelCard(name="tiny-test", architecture=spec, tiling=TilingSpec(tile=128, halo=16, step=8, min_tile=32), weights_sha256="0" * 64)
    return CheckpointModel(registry.build(spec).eval(), card, source="memory").to("cpu")


@pytest.fixture(scope="session")
def starter():
    """The bundled starter model on the CPU."""
    from napari_impc_dl import api

    return api.load_model("nuclei", device="cpu")


@pytest.fixture(scope="session")
def nuclei_768():
    """A crowded 768 x 768 synthetic nuclei image and its ground truth."""
    from napari_impc_dl.synthetic import make_nuclei_image

    return make_nuclei_image((768, 768), seed=424242, density=0.45)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random-weight checkpoint file (for plumbing tests that do not care about accuracy)."""
    import torch

    from napari_impc_dl.models import registry
    from napari_impc_dl.models.card import ModelCard, TilingSpec
    from napari_impc_dl.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    spec = registry.architecture("tiny", in_channels=1)
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_checkpoint(registry.build(spec), ModelCard(name="tiny-test", architecture=spec, tiling=TilingSpec(tile=128, halo=16, step=8, min_tile=32)), path)
    return path
