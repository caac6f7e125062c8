"""A live training plot for a dock widget: losses and validation metrics per epoch (matplotlib's Qt canvas).

Updated from the GUI thread once per epoch (:meth:`CurvesPlot.set_history`); drawing is deferred
to Qt's idle time (``draw_idle``), so a redraw never blocks the event loop for long.
"""

from __future__ import annotations

from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget


class CurvesPlot(QWidget):
    """Two small panels: train / validation loss, and the validation metric(s) in 0..1."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.2, 2.4), dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(220)
        self.loss_ax, self.metric_ax = self.figure.subplots(1, 2)
        self.history: list[dict] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.set_history([], [])

    def set_history(self, history: list[dict], metrics: list[str]) -> None:
        """Redraw from the history rows (``epoch``, ``train_loss``, ``val_loss``, ``val_<metric>``)."""
        self.history = list(history)
        ep = [r["epoch"] for r in history]
        a, b = self.loss_ax, self.metric_ax
        a.clear(), b.clear()
        if history:
            a.plot(ep, [r["train_loss"] for r in history], "o-", ms=3, label="train")
            a.plot(ep, [r["val_loss"] for r in history], "o-", ms=3, label="validation")
            for m in metrics:
                b.plot(ep, [r.get(f"val_{m}", float("nan")) for r in history], "o-", ms=3, label=m.replace("_", " "))
            a.legend(fontsize=7), b.legend(fontsize=7)
        a.set_title("loss", fontsize=8), b.set_title("validation", fontsize=8)
        b.set_ylim(0, 1.02)
        for ax in (a, b):
            ax.tick_params(labelsize=7)
            ax.set_xlabel("epoch", fontsize=7)
            ax.grid(alpha=0.3)
        self.canvas.draw_idle()

    @property
    def n_points(self) -> int:
        """Epochs plotted (tests check the plot receives them)."""
        return len(self.history)
