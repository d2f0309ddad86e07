"""1D xresnet (fastai's "bag of tricks" ResNet) as in the PTB-XL benchmark, plus the benchmark's head.

Strodthoff et al. 2021, "Deep Learning for ECG Analysis: Benchmarks and Insights from PTB-XL"
(IEEE JBHI), code github.com/helme/ecg_ptbxl_benchmarking: ``code/models/xresnet1d.py`` for the trunk,
``create_head1d`` in ``code/models/basic_conv1d.py`` for the head, and ``code/models/fastai_model.py``
for the settings every benchmark model was trained with (``kernel_size=5``, ``lin_ftrs_head=[128]``,
``ps_head=0.5``, ``weight_init``). xresnet1d101 is among the benchmark's best models on every PTB-XL task.

Architecture at the defaults: a stem of three conv-BN-ReLU (32, 32, 64 channels, k=5, the first with
stride 2) and a max pool (k=3, stride 2); four stages of bottleneck blocks (1x1 -> k=5 -> 1x1; 64
hidden, 256 out channels in *every* stage: the benchmark's 1D version does not widen with depth), the
first block of stages 2-4 striding with its k=5 conv while its shortcut average-pools
(``AvgPool1d(2, ceil_mode=True)``) and, where the width changes, adds a 1x1 conv-BN; ReLU after the
sum. 32x subsampling in all: a 2.5 s window at 100 Hz (250 samples) ends as 8 steps.

The head (``ConcatPoolHead``, shared with ``inception1d`` and ``resnet1d_wang``): concatenated global
max and average pools -> BN -> Dropout(p/2) -> Linear(2C, 128) -> ReLU -> BN -> Dropout(p) ->
Linear(128, classes), p = ``dropout`` = 0.5.

Deviations from the benchmark code, none of which changes a shape or a parameter count (12 leads,
5 classes: xresnet1d101 1,872,261 and xresnet1d50 953,989 parameters, as theirs):
- Length masking: ``forward(x, lengths)`` keeps every real output independent of zero padding
  (masked BN statistics, convs, max and average pools); ``lengths=None`` is their computation.
- Initialisation is the one their training applied (``weight_init``: Kaiming-normal convs and linears,
  zero biases, BN weight 1 and bias 0). fastai's zero-initialised last BN of each block and its BN
  bias of 1e-3 are overwritten by that call in their from-scratch runs, so they are not reproduced.
- Even kernel sizes keep ``ceil(L / stride)`` samples (``SamePadConv1d``); theirs lose one. The
  defaults are odd, where the two agree.
- A training batch of one record normalises the head's BN with its running statistics instead of
  raising (their loader dropped the last incomplete batch; ecgnet's does not).
Their ``widen``, self-attention (``sa``), SE and basic-block (expansion 1) options are left out.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS, ConfigError
from .layers import (ConvBnAct1d, LengthAware, MaskedAvgPool1d, MaskedGlobalAvgPool1d, MaskedGlobalMaxPool1d,
                     MaskedSequential, ResidualBlock1d, SamePadMaxPool1d, call_masked, check_settings,
                     StemBlocksHead)

# ---- Pieces shared with inception1d.py and resnet1d_wang.py: the benchmark's head -------------


class MaskedConcatPool1d(LengthAware, nn.Module):
    """fastai's AdaptiveConcatPool1d: ``[global max, global average]`` -> ``(B, 2C, 1)``."""

    def __init__(self):
        super().__init__()
        self.max, self.avg = MaskedGlobalMaxPool1d(), MaskedGlobalAvgPool1d()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([call_masked(self.max, x, lengths), call_masked(self.avg, x, lengths)], dim=1)


class FeatureBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over ``(batch, features)`` that accepts a training batch of one row.

    torch refuses batch statistics from a single row (its variance is 0); such a batch, e.g. the
    last of an epoch, is normalised with the running statistics, which it leaves unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1 and self.track_running_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


class ConcatPoolHead(MaskedSequential):
    """The benchmark's ``create_head1d(C, classes, lin_ftrs=[hidden], ps=dropout)``.

    Concat max+average pool -> BN -> Dropout(dropout / 2) -> Linear -> ReLU -> BN -> Dropout(dropout)
    -> Linear. ``(batch, in_channels, samples) -> logits (batch, num_classes)``.
    """

    def __init__(self, in_channels: int, hidden: int, num_classes: int, dropout: float):
        super().__init__(OrderedDict(
            pool=MaskedConcatPool1d(), flatten=nn.Flatten(),
            bn1=FeatureBatchNorm1d(2 * in_channels), drop1=nn.Dropout(dropout / 2),
            fc1=nn.Linear(2 * in_channels, hidden), act=nn.ReLU(inplace=True),
            bn2=FeatureBatchNorm1d(hidden), drop2=nn.Dropout(dropout),
            fc2=nn.Linear(hidden, num_classes)))


def benchmark_init(model: nn.Module) -> None:
    """The benchmark's ``weight_init``: Kaiming-normal (fan-in, ReLU gain) conv and linear weights,
    zero biases; BN keeps torch's weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# ---- xresnet1d ----------------------------------------------------------------------------------

EXPANSION = 4   # bottleneck blocks: out channels = 4 x the hidden width (xresnet 50/101/152)


class XBottleneck1d(ResidualBlock1d):
    """1x1 -> k (strided) -> 1x1 conv-BN(-ReLU), plus an average-pooled (and 1x1-projected) shortcut.

    ``(batch, in_channels, samples) -> (batch, 4 * hidden, ceil(samples / stride))``.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int, stride: int):
        super().__init__()
        out_channels = EXPANSION * hidden
        self.body = MaskedSequential(
            ConvBnAct1d(in_channels, hidden, 1), ConvBnAct1d(hidden, hidden, kernel_size, stride),
            ConvBnAct1d(hidden, out_channels, 1, act=False))
        shortcut: list[nn.Module] = []
        if stride != 1:     # pool first: the projection then runs on 1/stride of the samples
            shortcut.append(MaskedAvgPool1d(stride))
        if in_channels != out_channels:
            shortcut.append(ConvBnAct1d(in_channels, out_channels, 1, act=False))
        self.shortcut = MaskedSequential(*shortcut) if shortcut else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.length_stride = stride


@MODELS.register("xresnet1d101")
class XResNet1d(StemBlocksHead):
    """xresnet1d: ``blocks[i]`` bottleneck blocks of hidden width ``widths[i]`` in stage i, stride 2
    from stage 2 on (32x subsampling with four stages). Defaults: the benchmark's xresnet1d101.

    ``(batch, in_leads, samples) -> logits (batch, num_classes)``.
    """

    def __init__(self, in_leads: int, num_classes: int, blocks: Sequence[int] = (3, 4, 23, 3),
                 widths: Sequence[int] = (64, 64, 64, 64), stem_widths: Sequence[int] = (32, 32, 64),
                 kernel_size: int = 5, stem_kernel_size: int = 5, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        check_settings("xresnet1d", dropout, {"blocks": blocks, "widths": widths, "stem_widths": stem_widths},
                       kernel_size=kernel_size, stem_kernel_size=stem_kernel_size, hidden=hidden)
        if len(widths) != len(blocks):
            raise ConfigError(f"model.widths: {list(widths)} needs one entry per stage of model.blocks "
                              f"({list(blocks)}) in model 'xresnet1d'")
        chans = [in_leads, *stem_widths]
        self.stem = MaskedSequential(
            *[ConvBnAct1d(chans[i], chans[i + 1], stem_kernel_size, stride=2 if i == 0 else 1)
              for i in range(len(stem_widths))],
            SamePadMaxPool1d(3, stride=2))
        stages, channels = [], stem_widths[-1]
        for i, (count, width) in enumerate(zip(blocks, widths)):
            stage = []
            for j in range(count):
                stage.append(XBottleneck1d(channels, width, kernel_size, stride=2 if i > 0 and j == 0 else 1))
                channels = EXPANSION * width
            stages.append(MaskedSequential(*stage))
        self.blocks = MaskedSequential(*stages)
        self.head = ConcatPoolHead(channels, hidden, num_classes, dropout)
        benchmark_init(self)



@MODELS.register("xresnet1d50")
class XResNet1d50(XResNet1d):
    """The benchmark's xresnet1d50: ``xresnet1d101`` with (3, 4, 6, 3) blocks."""

    def __init__(self, in_leads: int, num_classes: int, blocks: Sequence[int] = (3, 4, 6, 3),
                 widths: Sequence[int] = (64, 64, 64, 64), stem_widths: Sequence[int] = (32, 32, 64),
                 kernel_size: int = 5, stem_kernel_size: int = 5, hidden: int = 128, dropout: float = 0.5):
        super().__init__(in_leads, num_classes, blocks, widths, stem_widths, kernel_size, stem_kernel_size,
                         hidden, dropout)
