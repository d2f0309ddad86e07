"""Temperature scaling (Guo et al. 2017) and how well probabilities are calibrated.

A temperature T divides the network's logits before the sigmoid (multi-label: one T per class) or
the softmax (single-label: one T). It is fitted on the validation split, after the best epoch is
chosen and before the thresholds are tuned, by minimising the negative log-likelihood of the
probabilities that are scored: each record's windows combined by ``eval.aggregate``. Applied to the
logits, it is the same calibrated model in training's validation, evaluate, predict and an export.
Single-label argmax decisions never change (T > 0 keeps the order of a record's logits).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax

from .engine.predict import pool_rows

#: search range of T; outside it the model is either all-or-nothing or says nothing
T_BOUNDS = (0.05, 20.0)
EPS = 1e-7


def _binary_nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_temperature(logits: np.ndarray, rows: np.ndarray, y: np.ndarray, multilabel: bool,
                    aggregate: str) -> list[float]:
    """Temperatures minimising the validation NLL of the aggregated probabilities.

    logits: (windows, C) float; rows: (windows,) the record of each window, 0..N-1; y: (N, C) 0/1.
    -> C temperatures (multi-label, each fitted on its own class) or one (single-label)."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    log_bounds = tuple(np.log(T_BOUNDS))

    def best(nll) -> float:
        # bounded search over log T: T and 1/T are equally far from 1
        fit = minimize_scalar(nll, bounds=log_bounds, method="bounded", options={"xatol": 1e-4})
        return float(np.exp(fit.x))

    if multilabel:
        out = []
        for c in range(y.shape[1]):
            column = logits[:, c:c + 1]
            if y[:, c].min() == y[:, c].max():       # one outcome only: nothing to calibrate against
                out.append(1.0)
                continue
            out.append(best(lambda log_t: _binary_nll(
                pool_rows(expit(column / np.exp(log_t)), rows, n, aggregate)[:, 0], y[:, c])))
        return out
    labels = y.argmax(1)

    def nll(log_t):
        p = pool_rows(np.exp(log_softmax(logits / np.exp(log_t), axis=1)), rows, n, aggregate)
        return float(-np.mean(np.log(np.clip(p[np.arange(n), labels], EPS, 1.0))))
    return [best(nll)]


def _binned(y: np.ndarray, probs: np.ndarray, multilabel: bool, bins: int):
    """Forecasts in ``bins`` equal-width bins -> (summed confidence, summed outcome, count) per bin.
    Multi-label: every (record, class) probability is a binary forecast; single-label: the top
    class's probability against whether it is right."""
    y, probs = np.asarray(y, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if multilabel:
        confidence, correct = probs.ravel(), y.ravel()
    else:
        top = probs.argmax(1)
        confidence, correct = probs[np.arange(len(probs)), top], (y.argmax(1) == top).astype(np.float64)
    which = np.clip((confidence * bins).astype(int), 0, bins - 1)
    return (np.bincount(which, confidence, bins), np.bincount(which, correct, bins),
            np.bincount(which, minlength=bins))


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, multilabel: bool, bins: int = 15) -> float:
    """ECE (Naeini et al. 2015): |observed frequency - mean confidence| per bin, weighted by the bin's
    share of forecasts (see ``_binned``)."""
    confidence, correct, count = _binned(y, probs, multilabel, bins)
    return float(np.abs(correct - confidence).sum() / max(count.sum(), 1))


def brier_score(y: np.ndarray, probs: np.ndarray, multilabel: bool) -> float:
    """Mean squared error of the probabilities: per (record, class) for multi-label; for single-label
    the sum over classes per record (Brier 1950), averaged over records."""
    err = (np.asarray(probs, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2
    return float(err.mean() if multilabel else err.sum(1).mean())


def reliability_curve(y: np.ndarray, probs: np.ndarray, multilabel: bool, bins: int = 15):
    """-> (mean confidence, observed frequency, count) of each non-empty bin: a reliability diagram's points."""
    confidence, correct, count = _binned(y, probs, multilabel, bins)
    keep = count > 0
    return confidence[keep] / count[keep], correct[keep] / count[keep], count[keep]


def calibration_metrics(y: np.ndarray, probs: np.ndarray, multilabel: bool) -> dict:
    return {"ece": expected_calibration_error(y, probs, multilabel), "brier": brier_score(y, probs, multilabel)}
