"""One line of counts for people (the widgets and the CLI): objects, per class, and what a preset flags."""

from __future__ import annotations


def count_summary(row: dict) -> str:
    """One line for a counts row: objects, per class, and a preset's flags (a spread that is not 46, the mitotic index);
    for a semantic model the tissue area and each class's share of it."""
    if "tissue_area_px" in row:
        shares = [f"{k[9:]} {100 * float(v):.1f} %" for k, v in row.items() if k.startswith("fraction_")]
        return f"tissue {int(row['tissue_area_px']):,} px: " + ", ".join(shares)
    by_class = [f"{v:,} {k[2:]}" for k, v in row.items() if k.startswith("n_") and k not in ("n_objects", "n_planes")]
    if int(row.get("n_chromosome_pair", 0) or 0):  # n_chromosome counts chromosomes, not objects (presets.derived_counts)
        by_class = [t + " (a pair counts two)" if t.endswith(" chromosome") else t for t in by_class]
    text = f"{int(row['n_objects']):,} objects" + (": " + ", ".join(by_class) if by_class else "")
    if "count_is_46" in row:
        text += " · 46 chromosomes" if row["count_is_46"] else f" · {row.get('n_chromosome', 0)} chromosomes: not 46, check this spread"
    if "mitotic_index" in row:
        text += f" · mitotic index {100 * float(row['mitotic_index']):.1f} %"
    return text
