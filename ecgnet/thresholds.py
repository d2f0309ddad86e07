"""Decision rules: per-class thresholds tuned on the validation split, and how
probabilities become decisions. Only validation predictions may reach ``tune``."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from sklearn.metrics import precision_recall_curve

log = logging.getLogger(__name__)


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                    default: float = 0.5) -> list[float]:
    """Per class, the probability cut-off that maximises F1 on (validation) data.

    y_true: (N, C) 0/1; probs: (N, C). A class constant in the data keeps ``default``.
    """
    thresholds, constant = [], []
    for c, name in enumerate(class_names):
        if y_true[:, c].min() == y_true[:, c].max():
            constant.append(name)
            thresholds.append(float(default))
            continue
        precision, recall, cuts = precision_recall_curve(y_true[:, c], probs[:, c])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        thresholds.append(float(cuts[np.argmax(f1[:-1])]))   # the last P/R point has no cut-off
    if constant:     # one line, not one per class: identification has ~1,600 patients without a val record
        log.warning("%d class(es) constant in the validation split keep the threshold %.2f: %s%s", len(constant),
                    default, ", ".join(constant[:10]), " ..." if len(constant) > 10 else "")
    return thresholds


def decide(probs: np.ndarray, thresholds: Sequence[float] | None, multilabel: bool) -> np.ndarray:
    """Probabilities (N, C) -> 0/1 decisions (N, C).

    Multi-label: p >= threshold per class. Single-label: argmax, or, when thresholds are
    given, argmax of p / threshold (tuned per-class operating points, still one class)."""
    if multilabel:
        t = np.full(probs.shape[1], 0.5) if thresholds is None else np.asarray(thresholds)
        return (probs >= t[None, :]).astype(np.int64)
    scores = probs if thresholds is None else probs / np.maximum(np.asarray(thresholds), 1e-6)[None, :]
    out = np.zeros_like(probs, dtype=np.int64)
    out[np.arange(len(probs)), scores.argmax(1)] = 1
    return out
