"""Small report pictures drawn with Pillow: line charts and a confusion matrix.

Pillow draws these in milliseconds and releases the interpreter quickly; matplotlib took over a
second (import and rendering, the interpreter lock held most of the time), which froze napari's
event loop at the end of a training run in the widget. The pictures are plain: axes, grid,
ticks, lines with points, a legend, cell counts.
"""

from __future__ import annotations

import math

import numpy as np

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * k / (n - 1) for k in range(n)]


def line_panels(panels: list[dict], *, title: str = "", width: int = 960, height: int = 380):
    """An image of side-by-side panels; each ``{"title", "x", "series": [(name, ys)], "ylim": (lo, hi) | None}``."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    f, small = _font(15), _font(12)
    top = 34 if title else 10
    if title:
        d.text((width / 2, 8), title, fill="black", font=f, anchor="ma")
    pw = width / len(panels)
    for k, p in enumerate(panels):
        x0, x1 = k * pw + 62, (k + 1) * pw - 16
        y0, y1 = top + 22, height - 42
        xs = list(p["x"])
        vals = [v for _, ys in p["series"] for v in ys if v is not None and math.isfinite(v)]
        lo, hi = p.get("ylim") or (min(vals + [0.0]), max(vals + [1e-9]) * 1.05)
        hi = hi if hi > lo else lo + 1
        xa, xb = (min(xs), max(xs)) if xs else (0, 1)
        xb = xb if xb > xa else xa + 1

        def X(v):
            return x0 + (v - xa) / (xb - xa) * (x1 - x0)

        def Y(v):
            return y1 - (min(max(v, lo), hi) - lo) / (hi - lo) * (y1 - y0)

        d.text(((x0 + x1) / 2, top), p["title"], fill="black", font=f, anchor="ma")
        for t in _ticks(lo, hi):
            d.line([(x0, Y(t)), (x1, Y(t))], fill=(225, 225, 225))
            d.text((x0 - 6, Y(t)), f"{t:.3g}", fill="black", font=small, anchor="rm")
        for t in sorted({round(v) for v in _ticks(xa, xb)}):
            d.text((X(t), y1 + 6), str(int(t)), fill="black", font=small, anchor="ma")
        d.text(((x0 + x1) / 2, height - 18), "epoch", fill="black", font=small, anchor="ma")
        d.rectangle([x0, y0, x1, y1], outline="black")
        for j, (name, ys) in enumerate(p["series"]):
            c = COLOURS[j % len(COLOURS)]
            pts = [(X(x), Y(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
            if len(pts) > 1:
                d.line(pts, fill=c, width=2)
            for px, py in pts:
                d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=c)
            d.text((x1 - 8, y0 + 8 + 16 * j), name, fill=c, font=small, anchor="ra")
    return img


def confusion_image(cm: np.ndarray, classes: list[str], subtitle: str = ""):
    """Counts in cells shaded by the row-normalised share (rows: true class, columns: predicted)."""
    from PIL import Image, ImageDraw

    K = len(classes)
    cell, left, top = 64, 130, 56 if subtitle else 30
    width, height = left + K * cell + 20, top + K * cell + 110
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    f, small = _font(14), _font(12)
    if subtitle:
        d.text((width / 2, 8), subtitle, fill="black", font=small, anchor="ma")
    norm = cm / np.maximum(1, cm.sum(1, keepdims=True))
    for i in range(K):
        d.text((left - 8, top + i * cell + cell / 2), classes[i][:16], fill="black", font=small, anchor="rm")
        for j in range(K):
            v = float(norm[i, j])
            shade = (int(247 - 239 * v), int(251 - 203 * v), int(255 - 148 * v))
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell, top + (i + 1) * cell]
            d.rectangle(box, fill=shade, outline=(200, 200, 200))
            d.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), str(int(cm[i, j])), fill="white" if v > 0.5 else "black", font=f, anchor="mm")
    for j in range(K):
        d.text((left + j * cell + cell / 2, top + K * cell + 8), classes[j][:10], fill="black", font=small, anchor="ma")
    d.text((left + K * cell / 2, top + K * cell + 40), "predicted", fill="black", font=small, anchor="ma")
    d.text((10, top + K * cell / 2), "true", fill="black", font=small, anchor="lm")
    return img
