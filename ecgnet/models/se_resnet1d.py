"""1D ResNet with squeeze-excitation in every block, the common PTB-XL / CinC baseline shape.

Stem conv (stride 2) -> one post-activation residual block per entry of ``widths`` (two convs, SE on
the second, stride 2 in every other block) -> global average pool -> two dense layers.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..registry import MODELS
from .layers import (ConvBnAct1d, MaskedSequential, PoolMLPHead, ResidualBlock1d, SqueezeExcite1d, check_settings,
                     StemBlocksHead, projection_shortcut)


class SEBlock1d(ResidualBlock1d):
    """conv -> BN -> ReLU -> Dropout -> conv -> BN -> SE, plus the shortcut, then ReLU.

    ``(batch, in_channels, samples) -> (batch, out_channels, ceil(samples / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 se_reduction: int, dropout: float):
        super().__init__()
        self.body = MaskedSequential(
            ConvBnAct1d(in_channels, out_channels, kernel_size, stride), nn.Dropout(dropout),
            ConvBnAct1d(out_channels, out_channels, kernel_size, act=False),
            SqueezeExcite1d(out_channels, se_reduction))
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)
        self.act = nn.ReLU(inplace=True)
        self.length_stride = stride


def se_trunk(in_leads: int, widths: Sequence[int], kernel_size: int, se_reduction: int,
             dropout: float) -> tuple[MaskedSequential, MaskedSequential]:
    """(stem, blocks): a strided stem conv, then one SE block per width, stride 2 every other block."""
    # A strided stem halves the sequence before the costliest (full-length) convolutions.
    stem = ConvBnAct1d(in_leads, widths[0], kernel_size, stride=2)
    channels = [widths[0], *widths]
    blocks = MaskedSequential(*[
        SEBlock1d(channels[i], width, kernel_size, stride=2 if i % 2 else 1,
                  se_reduction=se_reduction, dropout=dropout)
        for i, width in enumerate(widths)])
    return stem, blocks


@MODELS.register("se_resnet1d")
class SEResNet1d(StemBlocksHead):
    """SE-ResNet: ``len(widths)`` residual blocks, 32x subsampling at the default 8 blocks.

    ``(batch, in_leads, samples) -> logits (batch, num_classes)``.
    """

    def __init__(self, in_leads: int, num_classes: int,
                 widths: Sequence[int] = (64, 64, 64, 64, 128, 128, 128, 128), kernel_size: int = 15,
                 se_reduction: int = 8, hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        check_settings("se_resnet1d", dropout, {"widths": widths}, kernel_size=kernel_size,
                       se_reduction=se_reduction, hidden=hidden)
        self.stem, self.blocks = se_trunk(in_leads, widths, kernel_size, se_reduction, dropout)
        self.head = PoolMLPHead(widths[-1], hidden, num_classes, dropout)
