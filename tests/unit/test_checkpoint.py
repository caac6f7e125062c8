import json

import pytest
import torch

from napari_impc_dl.errors import InputError
from napari_impc_dl.models import registry
from napari_impc_dl.models.card import ModelCard
from napari_impc_dl.models.checkpoint import load_checkpoint, read_card, save_checkpoint


def _model():
    torch.manual_seed(1)
    spec = registry.architecture("tiny", in_channels=2, out_channels=2)
    return registry.build(spec).eval(), ModelCard(name="t", architecture=spec, channel_names=["a", "b"])


def test_round_trip_gives_identical_predictions(tmp_path):
    net, card = _model()
    saved = save_checkpoint(net, card, tmp_path / "m.safetensors")
    assert len(saved.weights_sha256) == 64
    net2, card2 = load_checkpoint(tmp_path / "m.safetensors")
    assert card2 == saved and read_card(tmp_path / "m.safetensors") == saved
    x = torch.randn(1, 2, 64, 64)
    with torch.inference_mode():
        assert torch.equal(net(x), net2(x))


def test_altered_weights_are_refused(tmp_path):
    net, card = _model()
    p = tmp_path / "m.safetensors"
    save_checkpoint(net, card, p)
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF  # flip bits inside the last tensor
    p.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="do not match the hash"):
        load_checkpoint(p)


def test_garbage_and_cardless_files_are_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="not a valid napari-impc-dl checkpoint"):
        read_card(bad)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(InputError, match="without a napari-impc-dl model card"):
        read_card(tmp_path / "plain.safetensors")
    with pytest.raises(InputError, match="does not exist"):
        read_card(tmp_path / "missing.safetensors")


def test_card_is_strict(tmp_path):
    net, card = _model()
    data = json.loads(card.model_dump_json())
    data["surprise"] = 1
    with pytest.raises(Exception):
        ModelCard.model_validate(data)


def test_bundled_starter_is_small_and_honest():
    from napari_impc_dl.presets import preset_path

    p = preset_path("nuclei")
    assert p.stat().st_size <= 10 * 1024 * 1024
    card = read_card(p)
    assert "Synthetic" in card.provenance.trained_on and card.provenance.script
    assert card.architecture.in_channels == 1 and card.output_names == ["foreground", "distance"]
