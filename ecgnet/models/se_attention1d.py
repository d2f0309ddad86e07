"""SE-ResNet trunk with temporal attention pooling, for long or variable-length ECGs.

Stem conv (stride 2) -> SE residual blocks (as in ``se_resnet1d``, stride 2 every other block)
-> additive attention over time (Bahdanau-style: score_t = v^T tanh(W h_t), softmax over t)
-> weighted sum of the features -> two dense layers. Unlike global average pooling, the
attention lets a few abnormal beats in a long record dominate the summary, and its weights
(``attention()``) show which part of the record drove the prediction.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..registry import MODELS
from .layers import LengthAware, check_settings, masked_chain, valid_mask, zero_padding
from .se_resnet1d import se_trunk


class TemporalAttentionPool(LengthAware, nn.Module):
    """``(batch, channels, time) -> (batch, channels)`` pooled features, ``(batch, time)`` weights.

    With ``lengths`` the softmax runs over the real time steps only; the padding gets weight 0.
    """

    def __init__(self, channels: int, attention_dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Conv1d(channels, attention_dim, 1), nn.Tanh(),
                                   nn.Conv1d(attention_dim, 1, 1))

    def forward(self, x: torch.Tensor,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if lengths is None:
            weights = torch.softmax(self.score(x).squeeze(1).float(), dim=-1).to(x.dtype)
            return torch.einsum("bct,bt->bc", x, weights), weights
        mask = valid_mask(lengths, x.shape[-1]).squeeze(1)
        scores = self.score(x).squeeze(1).float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).to(x.dtype)
        return torch.einsum("bct,bt->bc", zero_padding(x, lengths), weights), weights


@MODELS.register("se_attention1d")
class SEAttention1d(nn.Module):
    """``(batch, in_leads, samples) -> logits (batch, num_classes)``."""

    def __init__(self, in_leads: int, num_classes: int,
                 widths: Sequence[int] = (64, 64, 64, 64, 128, 128, 128, 128), kernel_size: int = 15,
                 se_reduction: int = 8, attention_dim: int = 64, hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        check_settings("se_attention1d", dropout, {"widths": widths}, kernel_size=kernel_size,
                       se_reduction=se_reduction, attention_dim=attention_dim, hidden=hidden)
        self.stem, self.blocks = se_trunk(in_leads, widths, kernel_size, se_reduction, dropout)
        self.pool = TemporalAttentionPool(widths[-1], attention_dim)
        self.head = nn.Sequential(nn.Linear(widths[-1], hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, leads, samples)`` -> logits; ``lengths``: real samples per row of a batch
        zero-padded at the end (None: all real)."""
        if lengths is None:
            pooled, _ = self.pool(self.blocks(self.stem(x)))
        else:
            pooled, _ = self.pool(*masked_chain([self.stem, self.blocks], x, lengths))
        return self.head(pooled)

    @torch.no_grad()
    def attention(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights ``(batch, time steps)`` over the subsampled feature sequence; with
        ``lengths``, exactly 0 past each row's ``ceil(lengths / total stride)`` steps."""
        if lengths is None:
            return self.pool(self.blocks(self.stem(x)))[1]
        return self.pool(*masked_chain([self.stem, self.blocks], x, lengths))[1]
