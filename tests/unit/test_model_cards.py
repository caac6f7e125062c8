"""docs/models.md is the bundled checkpoints' own cards: regenerate it when a model changes."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_models_md_matches_the_bundled_checkpoints():
    r = subprocess.run([sys.executable, str(ROOT / "scripts/make_model_cards.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_bundled_model_is_small_and_honest():
    from napari_impc_dl.models.checkpoint import read_card
    from napari_impc_dl.presets import PRESETS
    from napari_impc_dl.skeletal.models import ROLES, model_path

    paths = [path for p in PRESETS.values() for path in (p.model_path, p.classifier_path) if path is not None]
    for path in paths + [model_path(r) for r in ROLES]:
        assert path.stat().st_size <= 10e6, path
        card = read_card(path)
        assert "synthetic" in card.provenance.trained_on.lower() and card.provenance.script.startswith("python scripts/"), path
