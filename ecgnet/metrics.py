"""Classification metrics, all from scikit-learn. Keys follow ``split/metric`` when logged."""
from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, hamming_loss,
                             multilabel_confusion_matrix, precision_recall_fscore_support,
                             roc_auc_score)

log = logging.getLogger(__name__)


def per_class_auroc(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """AUROC per class; None for a class that is constant in ``y_true`` (undefined)."""
    out = []
    for c in range(y_true.shape[1]):
        if y_true[:, c].min() == y_true[:, c].max():
            out.append(None)
        else:
            out.append(float(roc_auc_score(y_true[:, c], probs[:, c])))
    return out


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray,
                           class_names: Sequence[str], multilabel: bool) -> dict:
    """y_true, decisions: (N, C) 0/1; probs: (N, C). Returns summary numbers plus
    ``per_class`` rows and confusion matrices (lists, JSON-ready).

    macro_auroc averages the classes whose AUROC is defined (both outcomes present);
    ``auroc_undefined`` names the others.
    """
    y_true = y_true.astype(np.int64)
    decisions = decisions.astype(np.int64)
    labels = list(range(len(class_names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)   # zero_division is set explicitly
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, decisions, labels=labels, average=None, zero_division=0)
        macro_f1 = f1_score(y_true, decisions, average="macro", zero_division=0)
        weighted_f1 = f1_score(y_true, decisions, average="weighted", zero_division=0)
    auroc = per_class_auroc(y_true, probs)
    defined = [a for a in auroc if a is not None]
    out = {
        "n": int(len(y_true)),
        "macro_f1": float(macro_f1),
        "weighted_f1": float(weighted_f1),
        "macro_auroc": float(np.mean(defined)) if defined else None,
        "auroc_undefined": [class_names[c] for c, a in enumerate(auroc) if a is None],
        "hamming_loss": float(hamming_loss(y_true, decisions)),
        "exact_match": float(accuracy_score(y_true, decisions)),
    }
    if not multilabel:
        true_idx, pred_idx = y_true.argmax(1), decisions.argmax(1)
        out["accuracy"] = float(accuracy_score(true_idx, pred_idx))
        out["confusion_matrix"] = confusion_matrix(true_idx, pred_idx, labels=labels).tolist()
    else:
        out["confusion_matrix"] = multilabel_confusion_matrix(y_true, decisions, labels=labels).tolist()
    out["per_class"] = [
        {"class": name, "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
         "auroc": auroc[c], "support": int(support[c])}
        for c, name in enumerate(class_names)]
    return out


SUMMARY_KEYS = ("macro_f1", "weighted_f1", "macro_auroc", "hamming_loss", "exact_match", "accuracy")


def summary(metrics: dict) -> dict:
    """The scalar entries (for logs, history, TensorBoard): the standard ones first, then
    any dataset-specific score."""
    extra = [k for k, v in metrics.items() if k not in SUMMARY_KEYS and k != "n"
             and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: metrics[k] for k in (*SUMMARY_KEYS, *extra) if metrics.get(k) is not None}
