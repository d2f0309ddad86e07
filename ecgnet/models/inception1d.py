"""InceptionTime-style 1D network as in the PTB-XL benchmark (Strodthoff et al. 2021).

Follows ``code/models/inception1d.py`` of github.com/helme/ecg_ptbxl_benchmarking (after Ismail Fawaz
et al. 2020, "InceptionTime"), with the settings the benchmark trained it with (``fastai_model.py``:
``kernel_size = 8 * 5 = 40``, ``lin_ftrs_head=[128]``, ``ps_head=0.5``, ``weight_init``).

``depth`` inception blocks, none strided (the length is kept to the head): each block squeezes its
input with a 1x1 bottleneck conv (32 channels) and runs three convs of ``filters`` channels with
kernels ``kernel_size``, ``kernel_size // 2``, ``kernel_size // 4``, each made odd (39, 19, 9), next
to a max-pool (k=3, stride 1) -> 1x1 conv branch of the block's input; the four branches are
concatenated (4 x 32 = 128 channels) -> BN -> ReLU. Every third block adds a shortcut from the input
of its group of three (1x1 conv -> BN), then ReLU. Head: ``xresnet1d.ConcatPoolHead``.

Deviations from the benchmark code (none changes a shape or a parameter count: 507,653 parameters at
12 leads, 5 classes, as theirs): length masking in ``forward(x, lengths)`` (the max-pool branch
never picks padding, BN statistics from real samples; ``lengths=None`` is their computation); their
from-scratch initialisation (``weight_init``) is applied in the constructor; ``kernel_size`` >= 4
is accepted (theirs asserts >= 40); a one-record training batch uses the head BN's running
statistics (see ``xresnet1d.FeatureBatchNorm1d``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS, ConfigError
from .layers import (ConvBnAct1d, LengthAware, MaskedBatchNorm1d, MaskedSequential, SamePadConv1d, SamePadMaxPool1d,
                     call_masked, check_settings)
from .xresnet1d import ConcatPoolHead, benchmark_init


class InceptionBlock1d(LengthAware, nn.Module):
    """Bottleneck -> parallel convs, beside max-pool -> 1x1 conv; concatenated -> BN -> ReLU.

    ``(batch, in_channels, samples) -> (batch, (len(kernel_sizes) + 1) * filters, samples)``.
    """

    def __init__(self, in_channels: int, filters: int, kernel_sizes: list[int], bottleneck: int):
        super().__init__()
        self.bottleneck: nn.Module = nn.Identity()
        if bottleneck:
            self.bottleneck = SamePadConv1d(in_channels, bottleneck, 1, bias=False)
        squeezed = bottleneck or in_channels
        self.convs = nn.ModuleList(SamePadConv1d(squeezed, filters, k, bias=False) for k in kernel_sizes)
        self.pool_conv = MaskedSequential(SamePadMaxPool1d(3, stride=1),
                                          SamePadConv1d(in_channels, filters, 1, bias=False))
        self.bn_act = MaskedSequential(MaskedBatchNorm1d((len(kernel_sizes) + 1) * filters), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        squeezed = call_masked(self.bottleneck, x, lengths)
        branches = [call_masked(conv, squeezed, lengths) for conv in self.convs]
        branches.append(call_masked(self.pool_conv, x, lengths))
        return call_masked(self.bn_act, torch.cat(branches, dim=1), lengths)


@MODELS.register("inception1d")
class Inception1d(nn.Module):
    """InceptionTime: ``depth`` inception blocks with a residual shortcut around every three.

    ``(batch, in_leads, samples) -> logits (batch, num_classes)``.
    """

    def __init__(self, in_leads: int, num_classes: int, kernel_size: int = 40, depth: int = 6,
                 filters: int = 32, bottleneck: int = 32, residual: bool = True, hidden: int = 128,
                 dropout: float = 0.5):
        super().__init__()
        check_settings("inception1d", dropout, kernel_size=kernel_size, depth=depth, filters=filters,
                       hidden=hidden)
        if kernel_size < 4:
            raise ConfigError(f"model.kernel_size: must be >= 4 for model 'inception1d' (kernels k, k//2, k//4), "
                              f"got {kernel_size}")
        if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 0:
            raise ConfigError(f"model.bottleneck: must be an integer >= 0 (0: none), "
                              f"got {bottleneck!r}")
        if residual and depth % 3:
            raise ConfigError(f"model.depth: must be a multiple of 3 with residual "
                              f"shortcuts (one per 3 blocks), got {depth}")
        # odd kernels keep the benchmark's symmetric padding: 40 -> 39, 19, 9
        kernel_sizes = [k - 1 if k % 2 == 0 else k for k in (kernel_size, kernel_size // 2, kernel_size // 4)]
        width = (len(kernel_sizes) + 1) * filters
        self.blocks = nn.ModuleList(
            InceptionBlock1d(in_leads if d == 0 else width, filters, kernel_sizes, bottleneck)
            for d in range(depth))
        self.shortcuts = nn.ModuleList(
            ConvBnAct1d(in_leads if g == 0 else width, width, 1, act=False)
            for g in range(depth // 3 if residual else 0))
        self.act = nn.ReLU(inplace=True)
        self.head = ConcatPoolHead(width, hidden, num_classes, dropout)
        benchmark_init(self)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, leads, samples)`` -> logits ``(batch, num_classes)``; no sigmoid/softmax here.

        ``lengths``: real samples per row of a batch zero-padded at the end (None: all real).
        """
        group_input = x
        for d, block in enumerate(self.blocks):
            x = call_masked(block, x, lengths)
            if self.shortcuts and d % 3 == 2:
                x = self.act(x + call_masked(self.shortcuts[d // 3], group_input, lengths))
                group_input = x
        return call_masked(self.head, x, lengths)
