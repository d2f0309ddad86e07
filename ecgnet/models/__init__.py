"""Model families. Importing this package registers every family in ``MODELS``.

A new family is one file here with ``@MODELS.register("name")`` plus one import line below.
Its ``forward(x, lengths=None)`` should take ``lengths`` (built from the masking layers in
``layers.py``) for ``input.full_length`` batches; ``accepts_lengths`` tells whether it does.
``build.build_model`` builds the configured one, joined (``fusion.py``) with per-record features
where the data has them, or under a cosine classifier (``cosine.py``).
"""
from ..registry import MODELS
from .cnn1d import CNN1d
from .cosine import CosineClassifier
from .fusion import FeatureFusion
from .layers import accepts_lengths
from .inception1d import Inception1d
from .resnet1d import ResNet1d
from .resnet1d_wang import ResNet1dWang
from .se_attention1d import SEAttention1d
from .se_resnet1d import SEResNet1d
from .xresnet1d import XResNet1d, XResNet1d50

__all__ = ["MODELS", "CNN1d", "CosineClassifier", "FeatureFusion", "Inception1d", "ResNet1d", "ResNet1dWang",
           "SEAttention1d", "SEResNet1d", "XResNet1d", "XResNet1d50", "accepts_lengths"]

