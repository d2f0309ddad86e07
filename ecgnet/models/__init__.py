"""Model families. Importing this package registers every family in ``MODELS``.

A new family is one file here with ``@MODELS.register("name")`` plus one import line below.
"""
from ..registry import MODELS
from .cnn1d import CNN1d
from .resnet1d import ResNet1d
from .se_attention1d import SEAttention1d
from .se_resnet1d import SEResNet1d

__all__ = ["MODELS", "CNN1d", "ResNet1d", "SEAttention1d", "SEResNet1d"]
