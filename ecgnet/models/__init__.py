"""Model families. Importing this package registers every family in ``MODELS``.

A new family is one file here with ``@MODELS.register("name")`` plus one import line below.
Its ``forward(x, lengths=None)`` should take ``lengths`` (built from the masking layers in
``layers.py``) for ``input.full_length`` batches; ``accepts_lengths`` tells whether it does.
"""
import inspect

from torch import nn

from ..registry import MODELS
from .cnn1d import CNN1d
from .resnet1d import ResNet1d
from .se_attention1d import SEAttention1d
from .se_resnet1d import SEResNet1d

__all__ = ["MODELS", "CNN1d", "ResNet1d", "SEAttention1d", "SEResNet1d", "accepts_lengths"]


def accepts_lengths(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``lengths`` (real samples per row of a zero-padded batch),
    i.e. whether the model can mask the padding of a variable-length batch."""
    return "lengths" in inspect.signature(model.forward).parameters
