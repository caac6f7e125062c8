"""Argument checks shared by the synthetic generators: one clear InputError for a bad number."""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def number(name: str, val, lo: float, hi: float, *, low_ok: bool = False) -> float:
    """``val`` as a float in ``(lo, hi]`` (``[lo, hi]`` when ``low_ok``), else an InputError naming ``name``."""
    what = f"{'from' if low_ok else 'above'} {lo:g} {'to' if low_ok else 'and at most'} {hi:g}"
    try:
        v = float(val)
    except (TypeError, ValueError):
        raise InputError(f"{name} {val!r} is not a number", f"Give a {name} {what}") from None
    if not np.isfinite(v) or not ((lo <= v) if low_ok else (lo < v)) or v > hi:
        raise InputError(f"{name} {v:g} is out of range", f"Give a {name} {what}")
    return v
