"""Building blocks shared by the 1D CNN families: length-preserving convs, conv-BN-ReLU, SE, heads.

All blocks take and return ``(batch, channels, samples)`` tensors unless stated otherwise.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import ConfigError


class SamePadConv1d(nn.Conv1d):
    """Conv1d whose output has ``ceil(samples / stride)`` samples, for odd and even kernels alike.

    ``padding="same"`` refuses stride > 1, and a symmetric integer pad loses or gains a sample for
    even kernels (k=16 in Hannun et al. 2019), so pad ``(k-1)//2`` left and ``k//2`` right: with
    ``k-1`` zeros in total, ``floor((L - 1) / s) + 1 = ceil(L / s)`` samples come out.
    ``(batch, in_channels, samples) -> (batch, out_channels, ceil(samples / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.same_pad = ((kernel_size - 1) // 2, kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.same_pad))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, same_pad={self.same_pad}"


class ConvBnAct1d(nn.Sequential):
    """SamePadConv1d -> BatchNorm1d -> ReLU (ReLU left out with ``act=False``).

    The conv has no bias because the BatchNorm right after it subtracts any constant offset.
    ``(batch, in_channels, samples) -> (batch, out_channels, ceil(samples / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 act: bool = True):
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=SamePadConv1d(in_channels, out_channels, kernel_size, stride, bias=False),
            bn=nn.BatchNorm1d(out_channels))
        if act:
            layers["act"] = nn.ReLU(inplace=True)
        super().__init__(layers)


class SqueezeExcite1d(nn.Module):
    """Channel attention (Hu et al. 2018): scale each channel by a gate computed from its time average.

    ``(batch, channels, samples) -> (batch, channels, samples)``.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 1)   # narrow widths with a large reduction keep one unit
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool1d(1),
            nn.Conv1d(channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv1d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class PoolMLPHead(nn.Sequential):
    """Global average pool -> Linear -> ReLU -> Dropout -> Linear, returning logits.

    Averaging over time makes the head independent of the recording length.
    ``(batch, in_channels, samples) -> (batch, num_classes)``.
    """

    def __init__(self, in_channels: int, hidden: int, num_classes: int, dropout: float):
        super().__init__(OrderedDict(
            pool=nn.AdaptiveAvgPool1d(1), flatten=nn.Flatten(),
            fc1=nn.Linear(in_channels, hidden), act=nn.ReLU(inplace=True), drop=nn.Dropout(dropout),
            fc2=nn.Linear(hidden, num_classes)))


def check_settings(family: str, dropout: float, lists: dict[str, Any] | None = None,
                   **ints: Any) -> None:
    """Raise ConfigError for settings that would otherwise fail deep inside torch, or not at all.

    ``ints`` maps setting names to values that must be integers >= 1; ``lists`` maps names to values
    that must be non-empty lists of such integers. Element types are checked here because the
    registry accepts any value for a ``Sequence[int]`` annotation.
    """
    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if isinstance(dropout, bool) or not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ConfigError(f"model '{family}': dropout must be in [0, 1), got {dropout!r}")
    for key, value in ints.items():
        if not positive(value):
            raise ConfigError(f"model '{family}': {key} must be a positive integer, got {value!r}")
    for key, value in (lists or {}).items():
        if not (isinstance(value, (list, tuple)) and value and all(map(positive, value))):
            raise ConfigError(f"model '{family}': {key} must be a non-empty list of positive integers, "
                              f"got {value!r}")
