"""Building blocks shared by the 1D CNN families: length-preserving convs, conv-BN-ReLU, SE, heads,
and the masking layers that let them run on zero-padded batches of variable-length records.

All blocks take and return ``(batch, channels, samples)`` tensors unless stated otherwise.
"""
from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import ConfigError


# ---- Backbones under a head (FeatureFusion, CosineClassifier) -----------------------------------
def accepts_lengths(model: nn.Module) -> bool:
    """Whether the model can mask the padding of a variable-length batch: its ``forward`` (for a
    model wrapped around a backbone, such as ``FeatureFusion``, its backbone's) takes ``lengths``."""
    model = getattr(model, "backbone", model)
    if model is None:                   # FeatureFusion without a signal: nothing to mask
        return True
    return "lengths" in inspect.signature(model.forward).parameters


def backbone_embedding(backbone: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """A backbone built with an embedding width instead of the classes, applied to ``x``; ``lengths``
    only where given (plain batches call it as ``backbone(x)``)."""
    return backbone(x) if lengths is None else backbone(x, lengths)


# ---- Variable-length batches -------------------------------------------------------------------
# With ``input.full_length`` a batch holds records of different lengths, zero-padded at the end to
# the longest; ``lengths`` (int64, ``(batch,)``, on the tensor's device) counts each row's real
# samples (1 <= lengths <= samples) at the resolution of the tensor it goes with. Length-aware
# modules take ``forward(x, lengths=None)`` and keep every real output independent of the
# padding: convs zero their input past ``lengths`` (so the same-padding sees what an unpadded
# record would), BatchNorm takes its training statistics from real samples, pools and attention
# ignore the padding. ``lengths=None`` (every sample real) runs exactly the plain torch
# computation. Values in the padding of any output are unspecified (finite, never read by a
# length-aware consumer).


class LengthAware:
    """Marker mixin: ``forward(x, lengths=None)`` masks padding past ``lengths``.

    ``length_stride``: the output has ``ceil(samples / length_stride)`` samples, so
    ``MaskedSequential`` knows the lengths to hand to the next module.
    """

    length_stride: int = 1


def shrink_lengths(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """``ceil(lengths / stride)``: the valid samples after a ``SamePadConv1d`` or a ceil-mode pool."""
    return lengths if stride == 1 else torch.div(lengths + (stride - 1), stride, rounding_mode="floor")


def valid_mask(lengths: torch.Tensor, samples: int) -> torch.Tensor:
    """Boolean ``(batch, 1, samples)``, True at the first ``lengths[b]`` samples of row ``b``."""
    return (torch.arange(samples, device=lengths.device) < lengths[:, None])[:, None, :]


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x`` with the samples past ``lengths`` set to zero (not in place; no gradient reaches them)."""
    return x.masked_fill(~valid_mask(lengths, x.shape[-1]), 0)


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the real samples: ``(batch, channels, samples) -> (batch, channels, 1)``."""
    return zero_padding(x, lengths).sum(-1, keepdim=True) / lengths[:, None, None]


def call_masked(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``module(x, lengths)`` for a length-aware module, ``module(x)`` for any other (pointwise) one."""
    return module(x) if lengths is None or not isinstance(module, LengthAware) else module(x, lengths)


def masked_chain(modules: Iterable[nn.Module], x: torch.Tensor,
                 lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply ``modules`` in turn, shrinking ``lengths`` by each length-aware module's stride.

    Modules that are not ``LengthAware`` get ``x`` alone and must keep the length (ReLU, Dropout).
    Returns the output and its lengths (meaningless after a global pool).
    """
    for module in modules:
        x = call_masked(module, x, lengths)
        if lengths is not None and isinstance(module, LengthAware):
            lengths = shrink_lengths(lengths, module.length_stride)
    return x, lengths


class StemBlocksHead(nn.Module):
    """A classifier of three parts, ``self.stem``, ``self.blocks`` and ``self.head``, applied in turn,
    with ``lengths`` threaded through them for padded batches (``masked_chain``)."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, leads, samples)`` -> logits ``(batch, num_classes)``; no sigmoid/softmax here.

        ``lengths``: real samples per row of a batch zero-padded at the end (None: all real).
        """
        if lengths is None:
            return self.head(self.blocks(self.stem(x)))
        return masked_chain([self.stem, self.blocks, self.head], x, lengths)[0]


class MaskedSequential(LengthAware, nn.Sequential):
    """``nn.Sequential`` that threads ``lengths`` through its children (see ``masked_chain``)."""

    @property
    def length_stride(self) -> int:
        return math.prod([m.length_stride for m in self if isinstance(m, LengthAware)])   # a list: torch.compile breaks on a generator here

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x) if lengths is None else masked_chain(self, x, lengths)[0]


class MaskedBatchNorm1d(LengthAware, nn.BatchNorm1d):
    """BatchNorm1d whose training statistics come from the real samples only.

    With ``lengths`` and batch statistics in use, mean and (biased) variance are taken over the
    samples before ``lengths`` and the running statistics move exactly as ``nn.BatchNorm1d``'s
    (momentum or cumulative average, unbiased variance, ``num_batches_tracked``). In eval mode it
    is a per-channel affine map, so padding cannot matter; without ``lengths`` it is the plain layer.
    """

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None or not (self.training or self.running_mean is None):
            return super().forward(x)
        mask = valid_mask(lengths, x.shape[-1])
        xf = x if x.dtype == torch.float64 else x.float()   # statistics in fp32 at least, under autocast too
        n = lengths.sum()
        mean = xf.masked_fill(~mask, 0).sum((0, 2)) / n
        var = (xf - mean[:, None]).masked_fill(~mask, 0).square().sum((0, 2)) / n
        if self.training and self.track_running_stats:
            # through .data: a plain (unmasked) call earlier in the same graph handed these buffers to
            # batch_norm, which saved them for backward; a tracked in-place change would break it
            self.num_batches_tracked.data.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.data.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.data.mul_(1 - factor).add_((var * n / (n - 1)).to(self.running_var.dtype),
                                                            alpha=factor)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale if self.bias is None else self.bias - mean * scale
        return (xf * scale[:, None] + shift[:, None]).to(x.dtype)


class MaskedMaxPool1d(LengthAware, nn.MaxPool1d):
    """``MaxPool1d(k, ceil_mode=True)`` (stride k, ``ceil(samples / k)`` out) that never picks padding.

    Padding becomes -inf before pooling, and outputs past the new lengths are zeroed again, so no
    inf reaches later layers or gradients.
    """

    def __init__(self, kernel_size: int):
        super().__init__(kernel_size, ceil_mode=True)

    @property
    def length_stride(self) -> int:
        return self.stride

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return super().forward(x)
        pooled = super().forward(x.masked_fill(~valid_mask(lengths, x.shape[-1]), float("-inf")))
        return zero_padding(pooled, shrink_lengths(lengths, self.stride))


class SamePadMaxPool1d(MaskedMaxPool1d):
    """``MaxPool1d(k, stride, padding=(k-1)//2)`` for odd k: ``ceil(samples / stride)`` samples out,
    like ``SamePadConv1d``. With ``lengths`` the padding is -inf during pooling (as torch's implicit
    border padding), so no window picks it; outputs past the new lengths are zeroed.
    """

    def __init__(self, kernel_size: int, stride: int):
        if kernel_size % 2 == 0:
            raise ValueError(f"SamePadMaxPool1d needs an odd kernel, got {kernel_size}")
        nn.MaxPool1d.__init__(self, kernel_size, stride, padding=(kernel_size - 1) // 2)


class MaskedGlobalAvgPool1d(LengthAware, nn.AdaptiveAvgPool1d):
    """AdaptiveAvgPool1d(1) averaging the real samples only: ``(B, C, T) -> (B, C, 1)``."""

    def __init__(self):
        super().__init__(1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x) if lengths is None else masked_mean(x, lengths)


class MaskedAvgPool1d(LengthAware, nn.AvgPool1d):
    """``AvgPool1d(k, ceil_mode=True)`` (stride k) averaging the real samples of each window only.

    Unpadded, torch's last partial window already averages only the samples it covers; with
    ``lengths`` the window that straddles a record's end does the same, and windows wholly in the
    padding give 0. ``(batch, channels, samples) -> (batch, channels, ceil(samples / k))``.
    """

    def __init__(self, kernel_size: int):
        super().__init__(kernel_size, ceil_mode=True)

    @property
    def length_stride(self) -> int:
        return self.kernel_size[0]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return super().forward(x)
        mask = valid_mask(lengths, x.shape[-1])
        means = super().forward(x.masked_fill(~mask, 0))
        real_share = super().forward(mask.to(x.dtype))     # fraction of each window that is real
        return means / real_share.clamp_min(1.0 / self.length_stride)


class MaskedGlobalMaxPool1d(LengthAware, nn.AdaptiveMaxPool1d):
    """AdaptiveMaxPool1d(1) over the real samples only: ``(B, C, T) -> (B, C, 1)``."""

    def __init__(self):
        super().__init__(1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return super().forward(x)
        # every row has >= 1 real (finite) sample, so -inf is never the maximum
        return super().forward(x.masked_fill(~valid_mask(lengths, x.shape[-1]), float("-inf")))


# ---- Building blocks ----------------------------------------------------------------------------


class SamePadConv1d(LengthAware, nn.Conv1d):
    """Conv1d whose output has ``ceil(samples / stride)`` samples, for odd and even kernels alike.

    ``padding="same"`` refuses stride > 1, and a symmetric integer pad loses or gains a sample for
    even kernels (k=16 in Hannun et al. 2019), so pad ``(k-1)//2`` left and ``k//2`` right: with
    ``k-1`` zeros in total, ``floor((L - 1) / s) + 1 = ceil(L / s)`` samples come out.
    With ``lengths`` the input is zeroed past them first, so a padded record sees the same zeros
    as an unpadded one. ``(batch, in_channels, samples) -> (batch, out_channels, ceil(samples / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.same_pad = ((kernel_size - 1) // 2, kernel_size // 2)

    @property
    def length_stride(self) -> int:
        return self.stride[0]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:
            x = zero_padding(x, lengths)
        return super().forward(F.pad(x, self.same_pad))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, same_pad={self.same_pad}"


class ConvBnAct1d(MaskedSequential):
    """SamePadConv1d -> BatchNorm1d -> ReLU (ReLU left out with ``act=False``).

    The conv has no bias because the BatchNorm right after it subtracts any constant offset.
    ``(batch, in_channels, samples) -> (batch, out_channels, ceil(samples / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 act: bool = True):
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=SamePadConv1d(in_channels, out_channels, kernel_size, stride, bias=False),
            bn=MaskedBatchNorm1d(out_channels))
        if act:
            layers["act"] = nn.ReLU(inplace=True)
        super().__init__(layers)


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 (strided) conv-BN where the block changes width or length: a 1x1 conv with
    stride s also yields ``ceil(samples / s)``, so both paths of a block keep the same length."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvBnAct1d(in_channels, out_channels, 1, stride, act=False)


class ResidualBlock1d(LengthAware, nn.Module):
    """``act(body(x) + shortcut(x))``; subclasses set ``body``, ``shortcut``, ``act`` and
    ``length_stride`` (the body's and the shortcut's common stride)."""

    body: nn.Module
    shortcut: nn.Module
    act: nn.Module

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return self.act(self.body(x) + self.shortcut(x))
        return self.act(self.body(x, lengths) + call_masked(self.shortcut, x, lengths))


class SqueezeExcite1d(LengthAware, nn.Module):
    """Channel attention (Hu et al. 2018): scale each channel by a gate computed from its time average
    (over the real samples when ``lengths`` is given).

    ``(batch, channels, samples) -> (batch, channels, samples)``.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 1)   # narrow widths with a large reduction keep one unit
        self.gate = MaskedSequential(
            MaskedGlobalAvgPool1d(),
            nn.Conv1d(channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv1d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return x * self.gate(x, lengths)


class PoolMLPHead(MaskedSequential):
    """Global average pool -> Linear -> ReLU -> Dropout -> Linear, returning logits.

    Averaging over time (the real samples, given ``lengths``) makes the head independent of the
    recording length. ``(batch, in_channels, samples) -> (batch, num_classes)``.
    """

    def __init__(self, in_channels: int, hidden: int, num_classes: int, dropout: float):
        super().__init__(OrderedDict(
            pool=MaskedGlobalAvgPool1d(), flatten=nn.Flatten(),
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
        raise ConfigError(f"model.dropout: must be in [0, 1) for model '{family}', got {dropout!r}")
    for key, value in ints.items():
        if not positive(value):
            raise ConfigError(f"model.{key}: must be a positive integer for model '{family}', got {value!r}")
    for key, value in (lists or {}).items():
        if not (isinstance(value, (list, tuple)) and value and all(map(positive, value))):
            raise ConfigError(f"model.{key}: must be a non-empty list of positive integers for model '{family}', "
                              f"got {value!r}")
