"""A cosine classifier on any backbone (NormFace, Wang et al. 2017): logits are a fixed scale times
the cosine between the backbone's embedding and a learned vector per class.

For many classes with one or two training records each (PTB-XL person identification: 2,111
patients), a linear layer's class scores grow with the norm of whatever it has seen; comparing
directions instead makes each class a prototype on the unit sphere, which transfers better to a
patient's next ECG. Selected with ``classifier: {type: cosine}`` (``build.build_model``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import backbone_embedding


class CosineClassifier(nn.Module):
    """``(batch, leads, samples) -> scale * cos(embedding, class vector)``, (batch, num_classes)."""

    def __init__(self, backbone: nn.Module, embed_dim: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        self.backbone, self.scale = backbone, float(scale)
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim) / embed_dim ** 0.5)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        embedding = backbone_embedding(self.backbone, x, lengths)
        # in float32: normalising bf16 vectors of 128 numbers loses the angle's last digits
        return self.scale * F.linear(F.normalize(embedding.float(), dim=1), F.normalize(self.weight.float(), dim=1))
