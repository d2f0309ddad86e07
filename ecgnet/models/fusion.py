"""A second input beside the signal: per-record features (``RecordSet.features``, e.g. the RR
intervals of MIT-BIH beats) joined with any registered backbone.

The backbone is built with ``fusion.embed_dim`` outputs instead of the classes, so its last layer
gives an embedding of the signal; the features are standardised by a BatchNorm (their units differ:
seconds and ratios) and both feed a small MLP head. Late fusion keeps every backbone unchanged.
``fusion.embed_dim: 0`` leaves the signal out (no backbone): the head sees the features alone, the
ablation that says what the signal adds.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .layers import backbone_embedding


class FeatureFusion(nn.Module):
    """``(signals (batch, leads, samples), features (batch, F)) -> logits (batch, num_classes)``."""

    def __init__(self, backbone: Optional[nn.Module], num_features: int, embed_dim: int, num_classes: int,
                 hidden: int = 32, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone        # None with embed_dim 0: features only
        self.feature_norm = nn.BatchNorm1d(num_features)
        self.head = nn.Sequential(nn.Linear(embed_dim + num_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                features: Optional[torch.Tensor] = None) -> torch.Tensor:
        if features is None:
            raise ValueError("FeatureFusion: this model was trained with per-record features beside the signal "
                             "and needs them (features=...)")
        features = self.feature_norm(features.float())
        if self.backbone is None:
            return self.head(features)
        embedding = backbone_embedding(self.backbone, x, lengths)
        return self.head(torch.cat([torch.relu(embedding), features], 1))

