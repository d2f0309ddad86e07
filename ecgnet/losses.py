"""Losses, picked by ``loss.type``. Each is built with what the data says:
``multilabel`` (sigmoid per class vs softmax over classes) and ``class_counts``
(positives per class in the training split, for ``auto`` weights).

Targets: multi-label tasks pass (batch, C) multi-hot floats; single-label tasks
pass (batch,) class indices.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import LOSSES, ConfigError

log = logging.getLogger(__name__)


def balance_weights(class_counts: Sequence[int], class_names: Sequence[str] | None = None) -> list[float]:
    """w_i = n_max / n_i; a class with no training examples gets weight 1 (and a warning)."""
    n_max = max(class_counts)
    weights = []
    for i, n in enumerate(class_counts):
        if n == 0:
            name = class_names[i] if class_names else i
            log.warning("class %s has no training examples; its loss weight stays 1", name)
        weights.append(n_max / n if n else 1.0)
    return weights


def _weights(value: Union[str, Sequence[float], None], class_counts: Sequence[int], where: str) -> Optional[torch.Tensor]:
    if value is None:
        return None
    if value == "auto":
        return torch.tensor(balance_weights(class_counts), dtype=torch.float32)
    if isinstance(value, str):
        raise ConfigError(f"{where}: expected 'auto' or a list of {len(class_counts)} numbers, got {value!r}")
    if len(value) != len(class_counts):
        raise ConfigError(f"{where}: {len(value)} weights for {len(class_counts)} classes")
    return torch.tensor(value, dtype=torch.float32)


def _smoothing(value: float) -> float:
    if not 0 <= value < 1:
        raise ConfigError(f"loss.label_smoothing: must be in [0, 1), got {value}")
    return value


def _need(multilabel: bool, wanted: bool, name: str) -> None:
    if multilabel != wanted:
        task, other = ("multi-label", "bce, weighted_bce or focal") if multilabel else ("single-label", "ce, weighted_ce or focal")
        raise ConfigError(f"loss.type: '{name}' does not fit a {task} task; use {other}")


@LOSSES.register("bce")
class BCELoss(nn.Module):
    """Binary cross-entropy on each class's logit (multi-label)."""

    def __init__(self, multilabel: bool, class_counts: Sequence[int]):
        super().__init__()
        _need(multilabel, True, "bce")

    def forward(self, logits, targets):
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


@LOSSES.register("weighted_bce")
class WeightedBCELoss(nn.Module):
    """BCE with positive-class weights; ``pos_weight: auto`` gives n_max / n_i from the
    training split, so rare classes count as much as common ones."""

    def __init__(self, multilabel: bool, class_counts: Sequence[int],
                 pos_weight: Union[str, Sequence[float]] = "auto"):
        super().__init__()
        _need(multilabel, True, "weighted_bce")
        self.register_buffer("pos_weight", _weights(pos_weight, class_counts, "loss.pos_weight"))

    def forward(self, logits, targets):
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=self.pos_weight)


@LOSSES.register("ce")
class CELoss(nn.Module):
    """Softmax cross-entropy (single-label), optional label smoothing."""

    def __init__(self, multilabel: bool, class_counts: Sequence[int], label_smoothing: float = 0.0):
        super().__init__()
        _need(multilabel, False, "ce")
        self.label_smoothing = _smoothing(label_smoothing)

    def forward(self, logits, targets):
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)


@LOSSES.register("weighted_ce")
class WeightedCELoss(nn.Module):
    """Cross-entropy with class weights; ``weight: auto`` gives n_max / n_i."""

    def __init__(self, multilabel: bool, class_counts: Sequence[int],
                 weight: Union[str, Sequence[float]] = "auto", label_smoothing: float = 0.0):
        super().__init__()
        _need(multilabel, False, "weighted_ce")
        self.register_buffer("weight", _weights(weight, class_counts, "loss.weight"))
        self.label_smoothing = _smoothing(label_smoothing)

    def forward(self, logits, targets):
        return F.cross_entropy(logits.float(), targets, weight=self.weight, label_smoothing=self.label_smoothing)


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t, averaged.

    Multi-label: sigmoid per class, alpha_t = alpha for positives and 1 - alpha for
    negatives (``alpha: null`` = no weighting; with gamma 0 this is BCE).
    Single-label: softmax; alpha is a scalar or a per-class list (``auto``: n_max / n_i).
    """

    def __init__(self, multilabel: bool, class_counts: Sequence[int], gamma: float = 2.0,
                 alpha: Union[float, str, Sequence[float], None] = 0.25):
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.gamma: must be >= 0, got {gamma}")
        self.multilabel, self.gamma = multilabel, gamma
        if multilabel:
            if alpha is not None and not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
                raise ConfigError(f"loss.alpha: a multi-label focal loss needs a number in [0, 1] or null, got {alpha!r}")
            self.alpha = alpha
            self.register_buffer("class_alpha", None)
        else:
            self.alpha = float(alpha) if isinstance(alpha, (int, float)) else None
            self.register_buffer("class_alpha", None if isinstance(alpha, (int, float)) or alpha is None
                                 else _weights(alpha, class_counts, "loss.alpha"))

    def forward(self, logits, targets):
        logits = logits.float()
        if self.multilabel:
            targets = targets.float()
            ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            p = torch.sigmoid(logits)
            p_t = p * targets + (1 - p) * (1 - targets)
            loss = ce * (1 - p_t) ** self.gamma
            if self.alpha is not None:
                loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
            return loss.mean()
        log_p_t = F.log_softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]
        loss = -(1 - log_p_t.exp()) ** self.gamma * log_p_t
        if self.class_alpha is not None:
            loss = loss * self.class_alpha[targets]
        elif self.alpha is not None:
            loss = loss * self.alpha
        return loss.mean()


class CosineMargin(nn.Module):
    """CosFace (Wang et al. 2018): the true class's logit ``scale * cos`` becomes ``scale * (cos - margin)``
    before ``loss``, so training must win every record by a margin in angle, not just rank it first.
    For many classes with one or two records each (person identification) this tightens each class
    around its prototype; inference uses the plain cosines. Wraps any single-label loss."""

    def __init__(self, loss: nn.Module, scale: float, margin: float):
        super().__init__()
        self.loss, self.offset = loss, float(scale) * float(margin)

    def forward(self, logits, targets):
        return self.loss(logits.float() - self.offset * F.one_hot(targets, logits.shape[1]), targets)
