"""Pre-activation 1D ResNet after Hannun et al. 2019, "Cardiologist-level arrhythmia detection and
classification in ambulatory electrocardiograms using a deep neural network" (Nature Medicine).

Follows the authors' Keras code (awni/ecg): stem conv -> BN -> ReLU, residual blocks of
(BN -> ReLU -> conv, BN -> ReLU -> Dropout -> conv), stride 2 in every other block with a max-pooled
shortcut, channels doubling every few blocks with the shortcut zero-padded to the new width (no
parameters, as in the paper). Differences: lengths need not be a multiple of 2**(num_blocks/2)
(the shortcut pools with ``ceil_mode`` to match the ``ceil(L/2)`` of the strided conv), and the
per-time-step output of the paper is replaced by a global average pool and one Linear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS
from .layers import (ConvBnAct1d, LengthAware, MaskedBatchNorm1d, MaskedGlobalAvgPool1d, MaskedMaxPool1d,
                     MaskedSequential, SamePadConv1d, call_masked, check_settings, StemBlocksHead,
                     shrink_lengths)


class PreActBlock1d(LengthAware, nn.Module):
    """Pre-activation residual block with two convolutions.

    ``(batch, in_channels, samples) -> (batch, out_channels, ceil(samples / stride))``;
    ``out_channels >= in_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 dropout: float, first: bool = False):
        super().__init__()
        # The first block reads the stem's output, which has just been through BN -> ReLU.
        self.pre: nn.Module = nn.Identity()
        if not first:
            self.pre = MaskedSequential(MaskedBatchNorm1d(in_channels), nn.ReLU(inplace=True))
        self.conv1 = SamePadConv1d(in_channels, out_channels, kernel_size, stride, bias=False)
        # The paper puts dropout only between the two convs, after the non-linearity.
        self.mid = MaskedSequential(MaskedBatchNorm1d(out_channels), nn.ReLU(inplace=True),
                                    nn.Dropout(dropout))
        self.conv2 = SamePadConv1d(out_channels, out_channels, kernel_size, bias=False)
        self.pool = MaskedMaxPool1d(stride) if stride > 1 else nn.Identity()
        self.extra_channels = out_channels - in_channels
        self.length_stride = stride

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            shortcut = self.pool(x)
            out = self.conv2(self.mid(self.conv1(self.pre(x))))
        else:
            shortcut = call_masked(self.pool, x, lengths)
            out = self.conv1(call_masked(self.pre, x, lengths), lengths)
            shrunk = shrink_lengths(lengths, self.length_stride)
            out = self.conv2(self.mid(out, shrunk), shrunk)
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, self.extra_channels))   # zero channels appended
        return shortcut + out


@MODELS.register("resnet1d")
class ResNet1d(StemBlocksHead):
    """Hannun et al. 2019 ResNet: 16 blocks of kernel 16, 32 -> 256 channels, 256x subsampling.

    Block ``i`` has ``base_width * 2 ** (i // widen_every)`` channels and stride 2 when ``i`` is odd.
    ``(batch, in_leads, samples) -> logits (batch, num_classes)``.
    """

    def __init__(self, in_leads: int, num_classes: int, base_width: int = 32, num_blocks: int = 16,
                 widen_every: int = 4, kernel_size: int = 16, dropout: float = 0.2):
        super().__init__()
        check_settings("resnet1d", dropout, base_width=base_width, num_blocks=num_blocks,
                       widen_every=widen_every, kernel_size=kernel_size)
        self.stem = ConvBnAct1d(in_leads, base_width, kernel_size)
        blocks, channels = [], base_width
        for i in range(num_blocks):
            width = base_width * 2 ** (i // widen_every)
            blocks.append(PreActBlock1d(channels, width, kernel_size, stride=2 if i % 2 else 1,
                                        dropout=dropout, first=i == 0))
            channels = width
        self.blocks = MaskedSequential(*blocks)
        # Pre-activation blocks leave the sum un-normalised, so the head starts with BN -> ReLU.
        self.head = MaskedSequential(MaskedBatchNorm1d(channels), nn.ReLU(inplace=True),
                                     MaskedGlobalAvgPool1d(), nn.Flatten(),
                                     nn.Linear(channels, num_classes))
