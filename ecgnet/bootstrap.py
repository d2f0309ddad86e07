"""Bootstrap confidence intervals for the classification metrics, vectorised over resamples.

A resample is a vector of integer weights over the N records (how often each record was
drawn), so B resamples are a weight matrix W (B, N) and every metric is computed for all
resamples at once from W: counts are matrix products, ranking metrics are weighted sums over
each class's records sorted by score (one sort per class, shared by all resamples). Only a
dataset's own ``extra`` score, which is an arbitrary function, is computed resample by resample.

With patient ids (``groups``) the resampling unit is the patient (cluster bootstrap): a drawn
patient brings all its records, so records of one patient always share a weight. Records of
one patient are correlated; resampling them independently would give too narrow intervals.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

# A metric (or class) defined in fewer than this fraction of the resamples gets no interval:
# percentiles of a handful of values would be noise.
MIN_DEFINED_FRACTION = 0.1


def resample_weights(n: int, resamples: int, rng: np.random.Generator,
                     groups: Sequence | None = None) -> tuple[np.ndarray, str, int]:
    """Draw ``resamples`` bootstrap resamples of n records as weights.

    Returns (W, unit, n_units): W (B, n) int64, W[b, i] = how often record i is in resample b;
    unit is "patient" when ``groups`` (length n) has repeats, else "record".
    """
    inverse = None
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} records")
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        if inv.max() + 1 < n:   # repeats: resample patients; all unique is plain record resampling
            inverse = inv.reshape(-1)
    n_units = n if inverse is None else int(inverse.max()) + 1
    # Drawing n_units units uniformly with replacement = multinomial counts per unit.
    counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=resamples)
    if inverse is None:
        return counts, "record", n_units
    return counts[:, inverse], "patient", n_units


# Draw budget of the class-preserving resampling, in record draws (B x N per batch): about 10 s
# here; deterministic (a count, not a time), so a run's intervals do not depend on the machine.
MAX_RECORD_DRAWS = 2 * 10**8


def class_preserving_weights(y_true: np.ndarray, resamples: int, rng: np.random.Generator,
                             groups: Sequence | None = None, max_draws: int | None = None
                             ) -> tuple[np.ndarray, str, int, float]:
    """``resample_weights``, keeping only resamples in which every class that has positives (and
    negatives) in the data still has at least one of each, as the PTB-XL benchmark's bootstrap
    does (Strodthoff et al. 2021, ``get_appropriate_bootstrap_samples``). Otherwise a rare class
    drops out of a resample's macro average, and the macro values of those resamples (which skip
    its usually low score) pull the interval away from the estimate it belongs to.

    Draws batches of ``resamples`` until enough are kept, at most ``max_draws`` batches (default:
    ``MAX_RECORD_DRAWS`` record draws, at least 100 batches); when classes are too rare for that
    (a split with a dozen single-positive classes keeps about 1 resample in 700), falls back to
    unconditional resamples (acceptance reported as 0). Returns (W, unit, n_units, acceptance rate).
    """
    y = (np.asarray(y_true) > 0).astype(np.float32)     # float32: W @ y through BLAS, exact for counts < 2**24
    needs_pos, needs_neg = y.any(0), (y == 0).any(0)
    if max_draws is None:
        max_draws = max(100, MAX_RECORD_DRAWS // max(resamples * len(y), 1))
    # expected share of resamples that keep every class, from each class's share of units holding a
    # positive (and a negative), as if classes were independent: when even the whole draw budget would
    # not yield enough (thousands of single-record classes, as person identification has), say so now
    # instead of drawing for minutes
    units = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1) if groups is not None \
        else np.arange(len(y))
    n_units = int(units.max()) + 1
    unit_pos = np.zeros((n_units, y.shape[1]), np.float32)
    np.maximum.at(unit_pos, units, y)
    unit_neg = np.zeros((n_units, y.shape[1]), np.float32)
    np.maximum.at(unit_neg, units, 1 - y)
    with np.errstate(divide="ignore"):
        log_keep = (np.log1p(-(1 - unit_pos.mean(0)[needs_pos]) ** n_units).sum()
                    + np.log1p(-(1 - unit_neg.mean(0)[needs_neg]) ** n_units).sum())

    def unconditional(why: str):
        log.warning("bootstrap: %s (a class has very few positives); using unconditional resamples, and "
                    "leaving out the intervals of class-averaged metrics (they would mix different class sets)",
                    why)
        return (*resample_weights(len(y), resamples, rng, groups), 0.0)

    if log_keep + np.log(max_draws) < np.log(0.1):   # a tenth of what is needed, in the whole budget
        return unconditional(f"a resample keeps every class with probability ~{np.exp(log_keep):.1e}")
    kept, kept_n, drawn = [], 0, 0
    for _ in range(max_draws):
        W, unit, n_units = resample_weights(len(y), resamples, rng, groups)
        drawn += resamples
        pos = W.astype(np.float32) @ y
        neg = W.sum(1, keepdims=True) - pos
        ok = (pos[:, needs_pos] > 0).all(1) & (neg[:, needs_neg] > 0).all(1)
        kept.append(W[ok])
        kept_n += int(ok.sum())
        if kept_n >= resamples:
            return np.concatenate(kept)[:resamples], unit, n_units, kept_n / drawn
    return unconditional(f"only {kept_n} of {drawn} resamples keep every class")


def _ranking_metrics(y: np.ndarray, score: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted AUROC and average precision of one class for every resample.

    y, score: (N,); W: (B, N) float. Returns (auroc, auprc), each (B,), NaN where undefined
    (AUROC: no positives or no negatives; AUPRC: no positives).
    """
    order = np.argsort(-score, kind="stable")             # descending score
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first record of each distinct score
    Ws = W[:, order]
    pos_w = Ws * y[order]
    # Weight per (resample, distinct score), in descending score order: ties are one block,
    # which is how both sklearn curves treat them (one threshold per distinct score).
    pos = np.add.reduceat(pos_w, starts, axis=1)
    neg = np.add.reduceat(Ws - pos_w, starts, axis=1)
    tp = np.cumsum(pos, axis=1)                            # positives scoring >= this threshold
    fp = np.cumsum(neg, axis=1)
    n_pos, n_neg = tp[:, -1], fp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Mann-Whitney U: each positive beats the negatives scoring strictly lower (n_neg - fp)
        # and half of those tied with it (neg of its own block).
        u = (pos * (n_neg[:, None] - fp + 0.5 * neg)).sum(axis=1)
        auroc = u / (n_pos * n_neg)
        # AP = sum over thresholds of (R_k - R_{k-1}) * P_k; recall only moves where pos > 0,
        # and there tp + fp > 0, so blocks with no drawn record contribute 0.
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=pos > 0)
        auprc = (pos * precision).sum(axis=1) / n_pos
    auroc[(n_pos == 0) | (n_neg == 0)] = np.nan
    auprc[n_pos == 0] = np.nan
    return auroc, auprc


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Mean over the defined (non-NaN) entries of each row of x (B, C); NaN if none."""
    defined = ~np.isnan(x)
    with np.errstate(invalid="ignore"):
        return np.where(defined, x, 0.0).sum(axis=1) / defined.sum(axis=1)


def metrics_from_weights(y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray,
                         W: np.ndarray, multilabel: bool) -> dict[str, np.ndarray]:
    """Every metric for every resample given as weights.

    y_true, decisions: (N, C) 0/1; probs: (N, C); W: (B, N) non-negative integer counts.
    Returns arrays: "auroc", "auprc", "f1" (B, C) with NaN where undefined in a resample;
    "macro_auroc", "macro_auprc", "macro_f1", "weighted_f1", "exact_match" and, single-label
    only, "accuracy", each (B,). Equal to scikit-learn on the materialised resample, with a
    class whose F1 is undefined (no labels and no predictions) left out of the macro averages.
    """
    y = np.asarray(y_true, dtype=np.float64)
    d = np.asarray(decisions, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    B, C = W.shape[0], y.shape[1]

    auroc = np.empty((B, C))
    auprc = np.empty((B, C))
    for c in range(C):   # a loop over classes, not resamples: each class needs its own sort
        auroc[:, c], auprc[:, c] = _ranking_metrics(y[:, c], p[:, c], W)

    tp = W @ (y * d)
    fp = W @ ((1 - y) * d)
    fn = W @ (y * (1 - d))
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
        support = tp + fn                                 # 0 for undefined classes: weight 0
        weighted_f1 = np.nansum(f1 * support, axis=1) / support.sum(axis=1)
        total = W.sum(axis=1)
        out = {
            "auroc": auroc, "auprc": auprc, "f1": f1,
            "macro_auroc": _nanmean_rows(auroc), "macro_auprc": _nanmean_rows(auprc),
            "macro_f1": _nanmean_rows(f1), "weighted_f1": weighted_f1,
            "exact_match": W @ np.all(y == d, axis=1).astype(np.float64) / total,
        }
        if not multilabel:
            out["accuracy"] = W @ (y.argmax(1) == d.argmax(1)).astype(np.float64) / total
    return out


#: metrics averaged over classes; without class-preserving resamples they get no interval
CLASS_AVERAGED = ("macro_auroc", "macro_auprc", "macro_f1", "weighted_f1")


def _interval(values: np.ndarray, level: float) -> np.ndarray:
    """Percentile interval per column of values (B, K) -> (K, 2), NaN where too few defined."""
    alpha = (1 - level) / 2
    defined = (~np.isnan(values)).sum(axis=0)
    out = np.full((values.shape[1], 2), np.nan)
    ok = defined >= max(2, MIN_DEFINED_FRACTION * values.shape[0])
    if ok.any():
        out[ok] = np.nanpercentile(values[:, ok], [100 * alpha, 100 * (1 - alpha)], axis=0).T
    return out


def _json_pair(lo_hi: np.ndarray) -> list[float] | None:
    return None if np.isnan(lo_hi).any() else [float(lo_hi[0]), float(lo_hi[1])]


_LAST_WEIGHTS: dict = {}


def _weights(y_true: np.ndarray, groups: Sequence | None, resamples: int, seed: int):
    """``class_preserving_weights`` for a seed, remembered for the next call with the same labels:
    every model of a run is scored on the same resamples, so they are drawn once per evaluation."""
    key = (hashlib.sha1(np.ascontiguousarray(y_true).tobytes()).hexdigest(), y_true.shape,
           None if groups is None else hashlib.sha1("\0".join(map(str, groups)).encode()).hexdigest(),
           resamples, seed)
    if key not in _LAST_WEIGHTS:
        _LAST_WEIGHTS.clear()
        _LAST_WEIGHTS[key] = class_preserving_weights(y_true, resamples, np.random.default_rng(seed), groups)
    return _LAST_WEIGHTS[key]


def bootstrap_cis(y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray, multilabel: bool,
                  groups: Sequence | None = None, resamples: int = 1000, seed: int = 0,
                  level: float = 0.95,
                  extra: Callable[[np.ndarray, np.ndarray, np.ndarray], dict] | None = None) -> dict | None:
    """Percentile bootstrap intervals of the metrics (see ``metrics_from_weights``).

    y_true, decisions: (N, C) 0/1; probs: (N, C); groups: None or N patient ids (cluster
    bootstrap); extra: optional ``(y, probs, decisions) -> {name: float}`` called once per
    resample on the materialised resample (None values are skipped). Returns a JSON-ready dict
    with "ci" {metric: [lo, hi] | None} and "per_class" {"auroc"|"auprc"|"f1": [[lo, hi] | None]
    per class}, or None when resamples == 0.
    """
    if not resamples:
        return None
    y_true, probs, decisions = np.asarray(y_true), np.asarray(probs), np.asarray(decisions)
    n = len(y_true)
    W, unit, n_units, acceptance = _weights(y_true, groups, resamples, seed)
    m = metrics_from_weights(y_true, probs, decisions, W, multilabel)

    scalars = {k: v for k, v in m.items() if v.ndim == 1}
    if extra is not None:
        rows = []
        for b in range(resamples):
            idx = np.repeat(np.arange(n), W[b])
            rows.append(extra(y_true[idx], probs[idx], decisions[idx]) or {})
        for key in dict.fromkeys(k for row in rows for k in row):   # keys in first-seen order
            scalars[key] = np.array([np.nan if row.get(key) is None else float(row[key])
                                     for row in rows])

    names = list(scalars)
    ci = _interval(np.column_stack([scalars[k] for k in names]), level)
    if acceptance == 0:
        # each resample averages over the classes it happens to hold: such an interval describes another
        # quantity than the estimate and can miss it entirely (identification's macro F1: 0.668 [0.613, 0.649])
        ci[[names.index(k) for k in CLASS_AVERAGED if k in names]] = np.nan
    return {
        "resamples": int(resamples), "level": float(level), "seed": int(seed),
        "unit": unit, "n_units": n_units, "class_preserving": acceptance > 0, "acceptance": round(acceptance, 4),
        "ci": {k: _json_pair(ci[i]) for i, k in enumerate(names)},
        "per_class": {k: [_json_pair(row) for row in _interval(m[k], level)]
                      for k in ("auroc", "auprc", "f1")},
    }
