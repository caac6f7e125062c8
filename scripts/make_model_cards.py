"""Write docs/models.md: one card per bundled model, read from the checkpoints themselves.

    python scripts/make_model_cards.py [--check]

Each card gives the file, its size and weights hash, the network, what it takes and gives, the
training data (the card's own honest words), the script that made it, its validation figures, and
the figures measured on held-out sets (``docs/model_figures.json``, written by hand from the
benchmarks' JSON lines: ``benchmarks/eval_presets.py``, ``benchmarks/eval_finetune_presets.py``).
``--check`` exits 1 when docs/models.md is not what this script writes (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_impc_dl.models.checkpoint import read_card  # noqa: E402
from napari_impc_dl.presets import PRESETS  # noqa: E402
from napari_impc_dl.skeletal.models import ROLES, model_path  # noqa: E402

OUT = ROOT / "docs/models.md"
FIGURES = ROOT / "docs/model_figures.json"

HEAD = """# Bundled models

Every model below ships inside the package (`src/napari_impc_dl/data/`), was trained by a
committed script on synthetic data made by this project's generators, and **has never seen a real
image**. Treat them as starting points: check them on your images, and fine-tune them on a few of
yours (user guide: *Teach it your objects*, and the fine-tuning steps of each preset's section).
This page is generated from the checkpoints' own cards by `scripts/make_model_cards.py`; a test
keeps it in sync.
"""


SKELETAL = (
    "Mouse X-rays, dorso-ventral or lateral (`segment --preset skeletal`): six models. The regions U-Net gives a class per "
    "pixel at any orientation, from which the head direction is read; the view classifier says dorso-ventral or lateral and "
    "whether the picture is mirrored; the bones U-Net finds each vertebra and rib, which the regions name (spine regions kept in "
    "order, rib sides in the standard view); the ribs and pelvis classifiers call misshapen or fused ribs and an asymmetric or "
    "malformed pelvis; the sex classifier reads the standard view. Output: counts per IMPC parameter with a confidence each, "
    "`impc_parameters.csv` and `impc_summary.csv` (user guide: *Counting ribs and vertebrae on mouse X-rays*)."
)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def card_md(path: Path, preset: str, role: str, figures: dict) -> str:
    card = read_card(path)
    arch = card.architecture
    lines = [f"### `{card.name}` ({role} of the `{preset}` preset)", "", card.description, ""]
    lines.append(f"- **File**: `{path.relative_to(ROOT).as_posix()}`, {path.stat().st_size / 1e6:.1f} MB, weights sha256 `{card.short_hash}…`")
    if card.task == "classification":
        spec = card.classification
        crop = spec.crop
        parts = f"{spec.image_channels} image + mask" if spec.crop is not None and arch.in_channels > spec.image_channels else f"{spec.image_channels} image"
        lines.append(f"- **Network**: timm `{arch.encoder}` classifier, {arch.in_channels} input channels ({parts}), {spec.input_size} px input")
        window = f"fixed {crop.side} px window" if crop is not None and crop.mode == "fixed" else f"bbox, margin {crop.margin}" if crop is not None else ""
        how = f"crop: {window}, network sees {crop.input}" if crop is not None else f"the whole picture resized to {spec.input_size} px"
        lines.append(f"- **Classes**: {', '.join(spec.classes)} ({spec.level} level; {how})")
    elif card.task == "semantic":
        sem = card.semantic
        lines.append(f"- **Network**: U-Net, `{arch.encoder}` encoder (depth {arch.encoder_depth}), decoder {list(arch.decoder_channels)}; tiles {card.tiling.tile} px with a {card.tiling.halo} px halo")
        lines.append(f"- **Input**: {', '.join(card.channel_names)}; **outputs**: a softmax per class ({', '.join(sem.classes)}), the class map their argmax; fractions are of the tissue (all but {', '.join(sem.background)})")
    else:
        lines.append(f"- **Network**: U-Net, `{arch.encoder}` encoder (depth {arch.encoder_depth}), decoder {list(arch.decoder_channels)}; tiles {card.tiling.tile} px with a {card.tiling.halo} px halo")
        lines.append(f"- **Input**: {', '.join(card.channel_names)}; **outputs**: {', '.join(card.output_names)} (seeded watershed: foreground {card.instances.foreground_threshold}, seeds {card.instances.seed_threshold}, min size {card.instances.min_size} px)")
    prov = card.provenance
    lines.append(f"- **Trained on**: {prov.trained_on}")
    lines.append(f"- **Made by**: `{prov.script}` (seed {prov.seed}, {prov.epochs} epochs), {prov.created[:10]}")
    if prov.metrics:
        shown = {k: v for k, v in prov.metrics.items() if not k.startswith(("precision_", "recall_", "f1_")) and k != "loss"}
        lines.append("- **Validation (synthetic, seeds of the training script)**: " + ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))
    for text in figures.get(card.name, []):
        lines.append(f"- {text}")
    lines.append("- **Limits**: synthetic training data only; see the preset's section of the user guide for what it was checked on.")
    return "\n".join(lines) + "\n"


def render() -> str:
    figures = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
    parts = [HEAD]
    for name, p in PRESETS.items():
        parts.append(f"## `{name}`\n\n{p.description}.\n")
        parts.append(card_md(p.model_path, name, "semantic segmentation" if read_card(p.model_path).task == "semantic" else "segmentation", figures))
        if p.classifier_path is not None:
            parts.append(card_md(p.classifier_path, name, "object classifier", figures))
    parts.append(f"## `skeletal`\n\n{SKELETAL}\n")
    for role in ROLES:
        what = {"regions": "semantic segmentation", "bones": "segmentation"}.get(role, f"{role} classifier")
        parts.append(card_md(model_path(role), "skeletal", what, figures))
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print("docs/models.md is out of date: run python scripts/make_model_cards.py", file=sys.stderr)
            sys.exit(1)
        return
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
