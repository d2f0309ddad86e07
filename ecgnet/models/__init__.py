"""Model families. Importing this package registers every family in ``MODELS``.

A new family is one file here with ``@MODELS.register("name")`` plus one import line below.
Its ``forward(x, lengths=None)`` should take ``lengths`` (built from the masking layers in
``layers.py``) for ``input.full_length`` batches; ``accepts_lengths`` tells whether it does.
"""
import inspect

from torch import nn

from ..registry import MODELS
from .cnn1d import CNN1d
from .inception1d import Inception1d
from .resnet1d import ResNet1d
from .resnet1d_wang import ResNet1dWang
from .se_attention1d import SEAttention1d
from .se_resnet1d import SEResNet1d
from .xresnet1d import XResNet1d, XResNet1d50

__all__ = ["MODELS", "CNN1d", "Inception1d", "ResNet1d", "ResNet1dWang", "SEAttention1d", "SEResNet1d", "XResNet1d",
           "XResNet1d50", "accepts_lengths"]


def accepts_lengths(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``lengths`` (real samples per row of a zero-padded batch),
    i.e. whether the model can mask the padding of a variable-length batch."""
    return "lengths" in inspect.signature(model.forward).parameters
