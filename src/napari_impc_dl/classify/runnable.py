"""A classifier checkpoint as a Runnable of the same family as the segmentation models.

It states its input size, channels, crop rule and classes (``info`` plus :attr:`spec`), fits the
same per-image percentile normaliser, and maps a ``(B, C, S, S)`` batch to class probabilities
(softmax). :func:`~napari_impc_dl.inference.batches.run_batches` runs it with the engine's device,
AMP and out-of-memory machinery.
"""

from __future__ import annotations

import numpy as np

from ..inference.runnable import ModelInfo, Normalizer, TileRules, percentile_normalizer


class ClassifierModel:
    """A napari-impc-dl classification checkpoint: ``forward`` gives softmax probabilities per class."""

    def __init__(self, net, card, source: str = "") -> None:
        if card.task != "classification":
            from ..errors import InputError

            raise InputError(f"'{source or card.name}' is a segmentation model, not a classifier", "Pass a classifier (trained with `train classification`) as --model / --classifier")
        self.net = net
        self.card = card
        self.spec = card.classification
        s = self.spec.input_size
        self.info = ModelInfo(
            name=card.name,
            content_hash=card.short_hash,
            in_channels=card.architecture.in_channels,
            output_names=list(self.spec.classes),
            tiling=TileRules(tile=s, halo=0, step=1, min_tile=s, fixed=s),
            source=source,
            extra={"task": "classification", "level": self.spec.level},
        )
        self._device = next(net.parameters()).device

    @classmethod
    def load(cls, path, device: str = "cpu") -> "ClassifierModel":
        from ..models.checkpoint import load_checkpoint

        net, card = load_checkpoint(path, device="cpu")
        return cls(net, card, source=str(path)).to(device)

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def device(self):
        return self._device

    def to(self, device) -> "ClassifierModel":
        import torch

        self._device = torch.device(device)
        self.net = self.net.to(self._device).to(memory_format=torch.channels_last).eval()
        return self

    def fit_normalizer(self, sample: np.ndarray) -> Normalizer:
        n = self.card.normalization
        return percentile_normalizer(sample, n.low, n.high)

    def prepare_image(self, source, plane: tuple[int, ...] = (), channels: list[int] | None = None) -> np.ndarray:
        """Image level: the network input ``(C, S, S)`` of one image plane (resize rule, then percentiles)."""
        from .resize import prepare_image

        n = self.card.normalization
        return prepare_image(source, self.spec.input_size, self.spec.resize, n.low, n.high, plane, channels)

    def forward(self, x):
        return self.net(x).float().softmax(1)
