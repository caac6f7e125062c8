"""The one protocol the tiled engine runs, and the adapter for our own checkpoints.

Anything the engine runs — our checkpoints, an imported BioImage Model Zoo package — is a
:class:`Runnable`: it states its input channels, output maps, tile constraints and halo, fits a
per-image normaliser from a pixel sample, and maps a normalised float batch to probabilities.
Adapters differ; the engine has one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

Normalizer = Callable[[np.ndarray], np.ndarray]
"""Maps a raw ``(C, h, w)`` window to a float32 ``(C, h, w)`` network input."""


@dataclass(frozen=True)
class TileRules:
    """What tile shapes a model accepts and what it recommends."""

    tile: int = 1024
    halo: int = 16
    step: int | tuple[int, int] = 32
    """Valid tile sides are ``min_tile + k * step``; a ``(y, x)`` pair when the axes differ."""
    min_tile: int | tuple[int, int] = 64
    fixed: int | tuple[int | None, int | None] | None = None


@dataclass
class ModelInfo:
    """What tables and layer metadata record about the model that made a result."""

    name: str
    content_hash: str
    in_channels: int
    output_names: list[str]
    tiling: TileRules
    source: str = ""
    extra: dict = field(default_factory=dict)


class Runnable(Protocol):
    """The engine-facing model protocol.

    Optional hooks, used by :func:`napari_impc_dl.api.segment_image` and the engine when a model
    has them (BioImage Model Zoo packages have the first and the last, our checkpoints the second):

    * ``normalizer_for_image(source, plane, channels) -> Normalizer``: a normaliser from statistics
      of the *whole* plane (or image), streamed from the ImageSource, instead of ``fit_normalizer``
      on a pixel sample;
    * ``forward_region(x, keep) -> (B, K, y1 - y0, x1 - x0)``: the outputs of :meth:`forward` over the
      window ``keep = (y0, y1, x0, x1)`` of the tiles only, for models that can skip the work over
      the halo that the engine throws away;
    * ``finalize_plane`` (not None) with ``raw_buffer((H, W))``: ``forward`` returns raw outputs,
      the engine writes them into the float32 buffer, and ``finalize_plane(buffer, out)`` turns the
      whole plane into ``out``'s ``(K, H, W)`` uint8 probabilities (postprocessing that needs
      statistics of the whole output).
    """

    info: ModelInfo

    def fit_normalizer(self, sample: np.ndarray) -> Normalizer:
        """Per-image normaliser from a ``(C, N)`` pixel sample of the image."""

    def forward(self, x):
        """``(B, C, h, w)`` normalised float tensor on ``self.device`` -> ``(B, K, h, w)`` probabilities in [0, 1]."""

    @property
    def device(self): ...

    def to(self, device) -> "Runnable": ...


def percentile_normalizer(sample: np.ndarray, low: float, high: float) -> Normalizer:
    """Per-channel ``(x - p_low) / (p_high - p_low)`` with percentiles of the finite values of ``sample``."""
    n_ch = sample.shape[0]
    lo = np.zeros(n_ch, np.float32)
    scale = np.ones(n_ch, np.float32)
    for c in range(n_ch):
        v = sample[c]
        v = v[np.isfinite(v)] if v.dtype.kind == "f" else v
        if v.size == 0:
            continue
        p_lo, p_hi = np.percentile(v, [low, high])
        if p_hi <= p_lo:
            p_hi = p_lo + 1e-6 if v.dtype.kind == "f" else p_lo + 1
        lo[c], scale[c] = p_lo, 1.0 / (p_hi - p_lo)
    lo3, scale3 = lo[:, None, None], scale[:, None, None]

    def normalize(x: np.ndarray) -> np.ndarray:
        y = x.astype(np.float32, copy=True)
        y -= lo3
        y *= scale3
        if x.dtype.kind == "f":
            np.nan_to_num(y, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return y

    normalize.params = {"p_low": lo.tolist(), "p_high": (lo + 1.0 / scale).tolist()}  # type: ignore[attr-defined]
    return normalize


class CheckpointModel:
    """A napari-impc-dl checkpoint as a :class:`Runnable`: percentile normalisation, sigmoid outputs
    (a softmax over the classes for a semantic model, whose ``info.extra["semantic"]`` holds its classes).

    ``net`` is the network as trained (what checkpoints and Model Zoo export save); ``forward``
    runs an inference copy made by :meth:`to` (a few milliseconds): BatchNorm folded into the
    convolutions (:mod:`~napari_impc_dl.models.fuse`, about 13 % faster on the CPU) and the
    decoder computed in strips, over only the window the engine keeps
    (:mod:`~napari_impc_dl.models.lean`: 0.44x the memory per tile, less work over the halo).
    Both are checked against ``net`` on a probe and skipped if they differ.
    """

    def __init__(self, model, card, source: str = "") -> None:
        self.net = model
        self._inference = None
        self.card = card
        t = card.tiling
        self.info = ModelInfo(
            name=card.name,
            content_hash=card.short_hash,
            in_channels=card.architecture.in_channels,
            output_names=list(card.output_names),
            tiling=TileRules(tile=t.tile, halo=t.halo, step=t.step, min_tile=t.min_tile),
            source=source,
            extra={"semantic": card.semantic.model_dump()} if card.semantic is not None else {},
        )
        self._activate = (lambda y: y.softmax(1)) if card.task == "semantic" else (lambda y: y.sigmoid_())
        self._device = next(model.parameters()).device

    @classmethod
    def load(cls, path, device: str = "cpu") -> "CheckpointModel":
        from ..models.checkpoint import load_checkpoint

        model, card = load_checkpoint(path, device="cpu")
        return cls(model, card, source=str(path)).to(device)

    @property
    def device(self):
        return self._device

    def to(self, device) -> "CheckpointModel":
        import torch

        from ..models.fuse import fuse_batchnorm
        from ..models.lean import stripwise

        self._device = torch.device(device)
        self.net = self.net.to(self._device).to(memory_format=torch.channels_last).eval()
        with torch.inference_mode(False):  # real parameters, also when called inside an inference block (OOM fallback)
            side = max(64, self.card.tiling.min_tile)
            fused = fuse_batchnorm(self.net, self.info.in_channels, side=side)
            self._inference = stripwise(fused, self.info.in_channels, side=2 * side).to(memory_format=torch.channels_last)
        return self

    def fit_normalizer(self, sample: np.ndarray) -> Normalizer:
        n = self.card.normalization
        return percentile_normalizer(sample, n.low, n.high)

    def forward(self, x):
        net = self._inference if self._inference is not None else self.net
        return self._activate(net(x))

    def forward_region(self, x, keep: tuple[int, int, int, int]):
        """Probabilities of the tiles ``x`` over the window ``keep = (y0, y1, x0, x1)`` of them only.

        The engine keeps only each tile's core; the inference copy then skips most of the work
        over the halo (:mod:`~napari_impc_dl.models.lean`). The values are those of :meth:`forward`.
        """
        from ..models.lean import StripwiseUnet

        y0, y1, x0, x1 = keep
        if isinstance(self._inference, StripwiseUnet):
            return self._activate(self._inference(x, keep=keep))
        return self.forward(x)[:, :, y0:y1, x0:x1]
