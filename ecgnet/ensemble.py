"""Combine K fold models: majority vote of thresholded decisions, or mean probability."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .thresholds import decide


def majority_vote(decisions: Sequence[np.ndarray], probs: Sequence[np.ndarray], multilabel: bool,
                  thresholds: Sequence[Sequence[float] | None] | None = None) -> np.ndarray:
    """decisions, probs: K arrays (N, C) -> (N, C) 0/1.

    Multi-label: a class is positive when more than half of the models say so. With an even
    K a tie is broken by the mean probability against the mean of the folds' tuned thresholds
    (``thresholds``: K lists of C, as the mean-probability ensemble decides; 0.5 without them),
    since a tuned cut-off is where each fold's own decisions were made.
    Single-label: the most voted class; ties go to the class with the higher mean probability.
    """
    votes = np.sum(decisions, axis=0)
    mean_p = np.mean(probs, axis=0)
    k = len(decisions)
    if multilabel:
        cut = 0.5 if thresholds is None or any(t is None for t in thresholds) else np.mean(thresholds, axis=0)
        positive = 2 * votes > k
        tie = 2 * votes == k
        return (positive | (tie & (mean_p >= cut))).astype(np.int64)
    score = votes + mean_p * 1e-3     # mean probability only orders equal vote counts
    out = np.zeros_like(votes, dtype=np.int64)
    out[np.arange(len(votes)), score.argmax(1)] = 1
    return out


def mean_probability(probs: Sequence[np.ndarray], thresholds: Sequence[Sequence[float]] | None,
                     multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Average the models' probabilities and apply the mean of their thresholds."""
    mean_p = np.mean(probs, axis=0)
    mean_t = None if thresholds is None or any(t is None for t in thresholds) else np.mean(thresholds, axis=0)
    return mean_p, decide(mean_p, mean_t, multilabel)
