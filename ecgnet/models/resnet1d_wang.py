"""The PTB-XL benchmark's ``resnet1d_wang``: a shallow 1D ResNet after Wang et al. 2017.

Wang, Yan and Oates 2017, "Time series classification from scratch with deep neural networks: a strong
baseline" (IJCNN), as adapted by Strodthoff et al. 2021 (``resnet1d_wang`` in ``code/models/resnet1d.py``
of github.com/helme/ecg_ptbxl_benchmarking, trained with ``kernel_size=5``, ``lin_ftrs_head=[128]``,
``ps_head=0.5`` and ``weight_init`` from ``fastai_model.py``).

Stem conv (k=7, stride 1) -> BN -> ReLU, then one post-activation residual block per entry of ``widths``
(128, 128, 128): conv (k=5) -> BN -> ReLU -> conv (k = 5 // 2 + 1 = 3) -> BN, plus the shortcut
(1x1 conv -> BN where the stride or width changes), then ReLU; the second and third blocks stride 2
(4x subsampling). Head: ``xresnet1d.ConcatPoolHead``.

Wang et al.'s own network differs (64/128/128 channels, three convs of k = 8, 5, 3 per block, no
striding, global average pool and softmax); this module follows the benchmark, not the paper.
Deviations from the benchmark code (none changes a shape or a parameter count: 473,349 parameters at
12 leads, 5 classes, as theirs): length masking in ``forward(x, lengths)`` (``lengths=None`` is their
computation); their from-scratch initialisation applied in the constructor; even kernels keep
``ceil(L / stride)`` samples (``SamePadConv1d``); a one-record training batch uses the head BN's
running statistics (see ``xresnet1d.FeatureBatchNorm1d``).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..registry import MODELS
from .layers import (ConvBnAct1d, MaskedSequential, ResidualBlock1d, check_settings, StemBlocksHead,
                     projection_shortcut)
from .xresnet1d import ConcatPoolHead, benchmark_init


class BasicBlock1d(ResidualBlock1d):
    """conv -> BN -> ReLU -> conv -> BN, plus the shortcut, then ReLU (torchvision's BasicBlock).

    ``(batch, in_channels, samples) -> (batch, out_channels, ceil(samples / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, int], stride: int):
        super().__init__()
        self.body = MaskedSequential(
            ConvBnAct1d(in_channels, out_channels, kernel_sizes[0], stride),
            ConvBnAct1d(out_channels, out_channels, kernel_sizes[1], act=False))
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)
        self.act = nn.ReLU(inplace=True)
        self.length_stride = stride


@MODELS.register("resnet1d_wang")
class ResNet1dWang(StemBlocksHead):
    """Stem conv + one basic residual block per width (stride 2 from the second), concat-pool head.

    ``kernel_size`` is the first conv's kernel in each block; the second has ``kernel_size // 2 + 1``
    (the benchmark's rule for an integer kernel size). ``(batch, in_leads, samples) -> logits``.
    """

    def __init__(self, in_leads: int, num_classes: int, widths: Sequence[int] = (128, 128, 128),
                 kernel_size: int = 5, stem_kernel_size: int = 7, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        check_settings("resnet1d_wang", dropout, {"widths": widths}, kernel_size=kernel_size,
                       stem_kernel_size=stem_kernel_size, hidden=hidden)
        self.stem = ConvBnAct1d(in_leads, widths[0], stem_kernel_size)
        channels = [widths[0], *widths]
        self.blocks = MaskedSequential(*[
            BasicBlock1d(channels[i], width, (kernel_size, kernel_size // 2 + 1), stride=2 if i else 1)
            for i, width in enumerate(widths)])
        self.head = ConcatPoolHead(widths[-1], hidden, num_classes, dropout)
        benchmark_init(self)
