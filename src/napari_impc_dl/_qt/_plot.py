"""A live training plot for a dock widget: losses and validation metrics per epoch, drawn with QPainter.

Two panels: train / validation loss (its own scale) and the validation metric(s) on 0..1. A redraw
costs a few milliseconds (matplotlib needed 150-300 ms per redraw and over a second to import
here, which would block napari's event loop while training runs), so every epoch's row is drawn as
it arrives. ``curves.png`` beside the model is the matplotlib version of the same figure.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


class CurvesPlot(QWidget):
    """Train / validation loss and validation metrics per epoch."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.history: list[dict] = []
        self.metrics: list[str] = []

    def set_history(self, history: list[dict], metrics: list[str]) -> None:
        """Redraw from the history rows (``epoch``, ``train_loss``, ``val_loss``, ``val_<metric>``)."""
        self.history, self.metrics = list(history), list(metrics)
        self.update()

    @property
    def n_points(self) -> int:
        """Epochs plotted (tests check the plot receives them)."""
        return len(self.history)

    # ------------------------------------------------------------------ drawing

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setPointSizeF(max(6.5, font.pointSizeF() * 0.8))
        p.setFont(font)
        w, h = self.width(), self.height()
        half = w / 2
        ep = [r["epoch"] for r in self.history]
        loss = [("train", [r.get("train_loss", math.nan) for r in self.history]), ("validation", [r.get("val_loss", math.nan) for r in self.history])]
        mets = [(m.replace("_", " "), [r.get(f"val_{m}", math.nan) for r in self.history]) for m in self.metrics]
        finite = [v for _, s in loss for v in s if isinstance(v, (int, float)) and math.isfinite(v)]
        top = max(finite) * 1.05 if finite else 1.0
        self._panel(p, QRectF(0, 0, half - 4, h), "loss", ep, loss, 0.0, top or 1.0)
        self._panel(p, QRectF(half + 4, 0, half - 4, h), "validation", ep, mets, 0.0, 1.0)
        p.end()

    def _panel(self, p: QPainter, box: QRectF, title: str, ep: list, series: list, lo: float, hi: float) -> None:
        fg = self.palette().color(self.foregroundRole())
        grid = QColor(fg)
        grid.setAlpha(60)
        left, bottom, top, right = 34, 18, 16, 6
        area = QRectF(box.left() + left, box.top() + top, box.width() - left - right, box.height() - top - bottom)
        p.setPen(QPen(fg))
        p.drawText(QRectF(box.left(), box.top(), box.width(), top), Qt.AlignmentFlag.AlignCenter, title)
        n = max(ep) if ep else 1
        x0 = min(ep) if ep else 0

        def X(e):
            return area.left() + (0.5 if n == x0 else (e - x0) / (n - x0)) * area.width()

        def Y(v):
            return area.bottom() - (v - lo) / (hi - lo) * area.height()

        p.setPen(QPen(grid))
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            y = Y(v)
            p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            p.save()
            p.setPen(QPen(fg))
            p.drawText(QRectF(box.left(), y - 7, left - 3, 14), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{v:.2g}")
            p.restore()
        p.setPen(QPen(fg))
        p.drawRect(area)
        p.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), bottom - 2), Qt.AlignmentFlag.AlignCenter, f"epoch {x0}..{n}" if ep else "epoch")
        for k, (name, values) in enumerate(series):
            colour = QColor(COLOURS[k % len(COLOURS)])
            pen = QPen(colour)
            pen.setWidthF(1.6)
            p.setPen(pen)
            path, started = QPainterPath(), False
            for e, v in zip(ep, values):
                if not (isinstance(v, (int, float)) and math.isfinite(v)):
                    continue
                pt = QPointF(X(e), Y(min(max(v, lo), hi)))
                path.lineTo(pt) if started else path.moveTo(pt)
                started = True
                p.drawEllipse(pt, 2.0, 2.0)
            p.drawPath(path)
            p.drawText(QRectF(area.left() + 4, area.top() + 2 + 12 * k, area.width() - 8, 12), Qt.AlignmentFlag.AlignRight, name)
