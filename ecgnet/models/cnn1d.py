"""Plain 1D CNN: a small, fast baseline without residual connections.

One stage per entry of ``widths``: conv -> BN -> ReLU -> MaxPool(2) -> Dropout; then a global
average pool and two dense layers.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..registry import MODELS
from .layers import ConvBnAct1d, MaskedMaxPool1d, MaskedSequential, PoolMLPHead, check_settings, masked_chain


@MODELS.register("cnn1d")
class CNN1d(nn.Module):
    """Stacked conv stages, each halving the length (``2 ** len(widths)`` subsampling in all).

    ``(batch, in_leads, samples) -> logits (batch, num_classes)``.
    """

    def __init__(self, in_leads: int, num_classes: int, widths: Sequence[int] = (32, 64, 128, 256),
                 kernel_size: int = 3, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        check_settings("cnn1d", dropout, {"widths": widths}, kernel_size=kernel_size, hidden=hidden)
        stages: list[nn.Module] = []
        channels = in_leads
        for width in widths:
            # ceil_mode keeps a last odd sample and lets inputs shorter than 2 ** len(widths) through.
            stages += [ConvBnAct1d(channels, width, kernel_size), MaskedMaxPool1d(2),
                       nn.Dropout(dropout)]
            channels = width
        self.features = MaskedSequential(*stages)
        self.head = PoolMLPHead(channels, hidden, num_classes, dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, leads, samples)`` -> logits ``(batch, num_classes)``; no sigmoid/softmax here.

        ``lengths``: real samples per row of a batch zero-padded at the end (None: all real).
        """
        if lengths is None:
            return self.head(self.features(x))
        return masked_chain([self.features, self.head], x, lengths)[0]
