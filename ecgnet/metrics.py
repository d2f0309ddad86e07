"""Classification metrics, all from scikit-learn. Keys follow ``split/metric`` when logged."""
from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix, f1_score, hamming_loss,
                             multilabel_confusion_matrix, precision_recall_fscore_support,
                             roc_auc_score)

log = logging.getLogger(__name__)

#: single-label tasks with more classes than this keep only the confusion matrix's non-zero cells, as
#: ``confusion_pairs`` [[true, predicted, count], ...]: the dense matrix of PTB-XL identification with
#: background patients (18,869 classes) has 356 M cells, and writing it ran evaluate out of memory
DENSE_CONFUSION_MAX_CLASSES = 1000


def per_class_auroc(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """AUROC per class; None for a class that is constant in ``y_true`` (undefined)."""
    out = []
    for c in range(y_true.shape[1]):
        if y_true[:, c].min() == y_true[:, c].max():
            out.append(None)
        else:
            out.append(float(roc_auc_score(y_true[:, c], probs[:, c])))
    return out


def per_class_auprc(y_true: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Average precision (area under the precision-recall curve) per class; None for a class
    without positives (undefined)."""
    return [float(average_precision_score(y_true[:, c], probs[:, c])) if y_true[:, c].any() else None
            for c in range(y_true.shape[1])]


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray,
                           class_names: Sequence[str], multilabel: bool, confusion: bool = True) -> dict:
    """y_true, decisions: (N, C) 0/1; probs: (N, C). Returns summary numbers plus
    ``per_class`` rows and confusion matrices (lists, JSON-ready; ``confusion=False`` leaves them out,
    and above ``DENSE_CONFUSION_MAX_CLASSES`` single-label classes only the non-zero cells are kept).

    Macro averages leave out the classes where the metric is undefined and name them:
    ``auroc_undefined`` (AUROC needs both outcomes), ``auprc_undefined`` (needs a positive) and
    ``f1_undefined`` (a class with neither labels nor predictions in the split; counting it as
    F1 = 0 would punish a model for a class the split does not contain; the CinC 2020 scorer
    leaves such classes out too).
    """
    y_true = y_true.astype(np.int64)
    decisions = decisions.astype(np.int64)
    labels = list(range(len(class_names)))
    f1_defined = [c for c in labels if y_true[:, c].any() or decisions[:, c].any()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)   # zero_division is set explicitly
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, decisions, labels=labels, average=None, zero_division=0)
        macro_f1 = f1_score(y_true, decisions, labels=f1_defined, average="macro", zero_division=0) \
            if f1_defined else None
        weighted_f1 = f1_score(y_true, decisions, average="weighted", zero_division=0)
    auroc = per_class_auroc(y_true, probs)
    auprc = per_class_auprc(y_true, probs)
    negatives = len(y_true) - y_true.sum(0)
    false_pos = ((decisions == 1) & (y_true == 0)).sum(0)
    specificity = [float(1 - false_pos[c] / negatives[c]) if negatives[c] else None for c in labels]
    out = {
        "n": int(len(y_true)),
        "macro_f1": None if macro_f1 is None else float(macro_f1),
        "weighted_f1": float(weighted_f1),
        "macro_auroc": _mean_defined(auroc),
        "macro_auprc": _mean_defined(auprc),
        "f1_undefined": [class_names[c] for c in labels if c not in f1_defined],
        "auroc_undefined": [class_names[c] for c, a in enumerate(auroc) if a is None],
        "auprc_undefined": [class_names[c] for c, a in enumerate(auprc) if a is None],
        "hamming_loss": float(hamming_loss(y_true, decisions)),
        "exact_match": float(accuracy_score(y_true, decisions)),
    }
    if not multilabel:
        true_idx, pred_idx = y_true.argmax(1), decisions.argmax(1)
        out["accuracy"] = float(accuracy_score(true_idx, pred_idx))
        if confusion and len(labels) > DENSE_CONFUSION_MAX_CLASSES:
            cells, counts = np.unique(np.stack([true_idx, pred_idx], 1), axis=0, return_counts=True)
            out["confusion_pairs"] = [[int(t), int(p), int(n)] for (t, p), n in zip(cells, counts)]
        elif confusion:
            out["confusion_matrix"] = confusion_matrix(true_idx, pred_idx, labels=labels).tolist()
    elif confusion:
        out["confusion_matrix"] = multilabel_confusion_matrix(y_true, decisions, labels=labels).tolist()
    # precision = positive predictive value (+P), recall = sensitivity (Se)
    out["per_class"] = [
        {"class": name, "precision": float(precision[c]), "recall": float(recall[c]),
         "specificity": specificity[c], "f1": float(f1[c]) if c in f1_defined else None,
         "auroc": auroc[c], "auprc": auprc[c], "support": int(support[c])}
        for c, name in enumerate(class_names)]
    return out


SUMMARY_KEYS = ("macro_f1", "weighted_f1", "macro_auroc", "macro_auprc", "hamming_loss", "exact_match", "accuracy")


def summary(metrics: dict) -> dict:
    """The scalar entries (for logs, history, TensorBoard): the standard ones first, then
    any dataset-specific score."""
    extra = [k for k, v in metrics.items() if k not in SUMMARY_KEYS and k != "n"
             and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: metrics[k] for k in (*SUMMARY_KEYS, *extra) if metrics.get(k) is not None}


# ---- beat classification as the inter-patient MIT-BIH literature reports it (de Chazal et al. 2004) ----

AAMI_REPORTED = {"S": "sveb", "V": "veb"}   # the classes whose Se / +P papers compare


def is_aami(class_names: Sequence[str], multilabel: bool) -> bool:
    """Single-label beat classes that include the AAMI N, S, V and F."""
    return not multilabel and {"N", "S", "V", "F"} <= set(class_names)


def aami_metrics(y_true: np.ndarray, decisions: np.ndarray, class_names: Sequence[str]) -> dict:
    """Sensitivity (Se), positive predictive value (+P) and false positive rate of SVEB (S) and
    VEB (V), gross (pooled over all beats), as de Chazal et al. 2004 report them:
    ``sveb_se, sveb_ppv, sveb_fpr, veb_se, veb_ppv, veb_fpr``; None where undefined."""
    out = {}
    for name, key in AAMI_REPORTED.items():
        c = list(class_names).index(name)
        t, d = y_true[:, c] == 1, decisions[:, c] == 1
        tp, fp, fn, tn = int((t & d).sum()), int((~t & d).sum()), int((t & ~d).sum()), int((~t & ~d).sum())
        out[f"{key}_se"] = tp / (tp + fn) if tp + fn else None
        out[f"{key}_ppv"] = tp / (tp + fp) if tp + fp else None
        out[f"{key}_fpr"] = fp / (fp + tn) if fp + tn else None
    return out


def aami_table(metrics: dict) -> str:
    """Se, +P, FPR (= 1 - specificity) per AAMI class N, S (SVEB), V (VEB), F, and accuracy, in %,
    with the bootstrap CIs of SVEB/VEB Se and +P when present."""
    rows = {r["class"]: r for r in metrics["per_class"]}
    ci = metrics.get("ci", {})

    def pct(v, interval=None):
        if v is None:
            return "-"
        text = f"{100 * v:.1f}"
        if interval:
            text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
        return text

    lines = [f"{'class':<10}{'Se %':>22}{'+P %':>22}{'FPR %':>8}{'beats':>8}"]
    for name, label in (("N", "N"), ("S", "S (SVEB)"), ("V", "V (VEB)"), ("F", "F")):
        r = rows[name]
        key = AAMI_REPORTED.get(name)
        fpr = None if r["specificity"] is None else 1 - r["specificity"]
        lines.append(f"{label:<10}{pct(r['recall'], ci.get(f'{key}_se') if key else None):>22}"
                     f"{pct(r['precision'], ci.get(f'{key}_ppv') if key else None):>22}{pct(fpr):>8}"
                     f"{r['support']:>8}")
    lines.append(f"accuracy {pct(metrics.get('accuracy'), ci.get('accuracy'))} %")
    return "\n".join(lines)
