"""Files people read: metrics.json, per_class.csv, text tables, ROC, precision-recall, confusion and
reliability PNGs."""
from __future__ import annotations

import csv
import json
import os
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from .calibration import expected_calibration_error, reliability_curve  # noqa: E402
from .metrics import summary  # noqa: E402


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temp file beside ``path``, then rename: a reader sees the old file or the new one,
    and a failed write leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(obj, path: Path) -> None:
    write_atomic(path, json.dumps(obj, indent=2))


PER_CLASS_COLUMNS = ("class", "support", "precision", "recall", "specificity", "f1", "f1_ci", "auroc", "auroc_ci",
                     "auprc", "auprc_ci")


def write_per_class_csv(metrics: dict, path: Path) -> None:
    """One row per class; a CI becomes two columns (``*_ci_low``, ``*_ci_high``)."""
    columns = [c for c in PER_CLASS_COLUMNS if c in metrics["per_class"][0]]
    header = [h for c in columns for h in ((f"{c}_low", f"{c}_high") if c.endswith("_ci") else (c,))]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in metrics["per_class"]:
            cells = []
            for c in columns:
                if c.endswith("_ci"):
                    cells += list(row[c]) if row[c] else ["", ""]
                else:
                    cells.append("" if row[c] is None else row[c])
            writer.writerow(cells)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _with_ci(v, interval) -> str:
    """``0.9123 [0.901, 0.925]``; the value alone without an interval."""
    if v is None or not interval:
        return _fmt(v)
    return f"{v:.4f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def summary_table(results: dict[str, dict]) -> str:
    """Models side by side (columns), summary metrics as rows, each with its 95 % CI when present."""
    names = list(results)
    keys = list(dict.fromkeys(k for n in names for k in summary(results[n])))
    cells = {(k, n): _with_ci(results[n].get(k), results[n].get("ci", {}).get(k)) for k in keys for n in names}
    width = max(12, *(len(n) + 2 for n in names), *(len(c) + 2 for c in cells.values()))
    lines = ["metric".ljust(14) + "".join(n.rjust(width) for n in names)]
    for k in keys:
        lines.append(k.ljust(14) + "".join(cells[k, n].rjust(width) for n in names))
    undefined = {k: results[names[0]].get(k) for k in ("f1_undefined", "auroc_undefined")}
    for key, classes in undefined.items():
        if classes:
            lines.append(f"left out of macro {key.split('_')[0].upper()} (undefined in this split): {', '.join(classes)}")
    return "\n".join(lines)


def per_class_table(metrics: dict, limit: int | None = None) -> str:
    """Se (recall), +P (precision), Sp (specificity), F1, AUROC, AUPRC per class; F1 and AUROC with CIs.
    ``limit``: at most that many rows, then one line saying how many more there are."""
    cols = [("recall", "Se"), ("precision", "+P"), ("specificity", "Sp"), ("f1", "F1"), ("auroc", "AUROC"),
            ("auprc", "AUPRC"), ("support", "n")]
    rows = metrics["per_class"][:limit]
    cells = [[_with_ci(r[c], r.get(f"{c}_ci")) if c in ("f1", "auroc") else _fmt(r[c]) for c, _ in cols]
             for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) + 2 for i, (_, h) in enumerate(cols)]
    first = max(8, *(len(r["class"]) + 1 for r in rows))
    lines = ["class".ljust(first) + "".join(h.rjust(w) for (_, h), w in zip(cols, widths))]
    for r, row in zip(rows, cells):
        lines.append(r["class"].ljust(first) + "".join(c.rjust(w) for c, w in zip(row, widths)))
    if len(metrics["per_class"]) > len(rows):
        lines.append(f"... and {len(metrics['per_class']) - len(rows)} more classes (all of them: per_class.csv)")
    return "\n".join(lines)


#: more classes than this (person identification: thousands) get one micro-averaged curve and a
#: confusion image without numbers: a curve or a cell per class would be unreadable and take minutes
MAX_PLOTTED_CLASSES = 30


def _micro_curve(ax, y_true: np.ndarray, probs: np.ndarray, kind: str) -> None:
    y, p = y_true.ravel(), probs.ravel()
    label = f"micro-average over {y_true.shape[1]} classes (per class: per_class.csv)"
    if kind == "roc":
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=label)
    else:
        precision, recall, _ = precision_recall_curve(y, p)
        ax.step(recall, precision, where="post", label=label)


def _curve_label(metrics: dict, c: int, key: str) -> str:
    row = metrics["per_class"][c]
    interval = row.get(f"{key}_ci")
    text = f"{row['class']} {key.upper()} {row[key]:.3f}"
    return text + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def plot_roc(y_true: np.ndarray, probs: np.ndarray, metrics: dict, path: Path, title: str) -> None:
    """One ROC curve per class (classes without both outcomes have none), AUROC and CI in the legend."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for c in range(y_true.shape[1]) if y_true.shape[1] <= MAX_PLOTTED_CLASSES else ():
        if metrics["per_class"][c]["auroc"] is None:
            continue
        fpr, tpr, _ = roc_curve(y_true[:, c], probs[:, c])
        ax.plot(fpr, tpr, label=_curve_label(metrics, c, "auroc"))
    if y_true.shape[1] > MAX_PLOTTED_CLASSES:
        _micro_curve(ax, y_true, probs, "roc")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
           title=f"ROC: {title}", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pr(y_true: np.ndarray, probs: np.ndarray, metrics: dict, path: Path, title: str) -> None:
    """One precision-recall curve per class with positives, AUPRC (average precision) and CI in the legend."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for c in range(y_true.shape[1]) if y_true.shape[1] <= MAX_PLOTTED_CLASSES else ():
        if metrics["per_class"][c]["auprc"] is None:
            continue
        precision, recall, _ = precision_recall_curve(y_true[:, c], probs[:, c])
        ax.step(recall, precision, where="post", label=_curve_label(metrics, c, "auprc"))
    if y_true.shape[1] > MAX_PLOTTED_CLASSES:
        _micro_curve(ax, y_true, probs, "pr")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (+P)", title=f"precision-recall: {title}",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(metrics: dict, class_names: Sequence[str], multilabel: bool, path: Path, title: str) -> None:
    if "confusion_pairs" in metrics:     # thousands of single-label classes: the non-zero cells, as dots
        cells = np.asarray(metrics["confusion_pairs"], dtype=np.int64).reshape(-1, 3)
        row_total = np.bincount(cells[:, 0], weights=cells[:, 2], minlength=len(class_names))
        fig, ax = plt.subplots(figsize=(7, 7))
        dots = ax.scatter(cells[:, 1], cells[:, 0], c=cells[:, 2] / row_total[cells[:, 0]], cmap="Blues",
                          vmin=0, vmax=1, s=4, edgecolors="none")
        fig.colorbar(dots, ax=ax, shrink=0.8, label="share of the true class's records")
        ax.set(xlim=(-0.5, len(class_names) - 0.5), ylim=(len(class_names) - 0.5, -0.5),
               xlabel="predicted class", ylabel="true class",
               title=f"{len(class_names)} classes, non-zero cells (counts in metrics.json)")
        _save(fig, path, title)
        return
    cm = np.asarray(metrics["confusion_matrix"])
    if len(class_names) > MAX_PLOTTED_CLASSES:
        # too many classes for a cell each: single-label rows normalised to the true class; multi-label
        # one row [TN, FP, FN, TP] per class, normalised
        fig, ax = plt.subplots(figsize=(7, 7))
        shown = cm.reshape(len(class_names), 4) if multilabel else cm
        ax.imshow(shown / np.maximum(shown.sum(1, keepdims=True), 1), cmap="Blues", aspect="auto",
                  interpolation="nearest")
        ax.set(xlabel="TN, FP, FN, TP" if multilabel else "predicted class", ylabel="true class",
               title=f"{len(class_names)} classes, rows normalised (counts in metrics.json)")
    elif multilabel:   # one 2x2 matrix per class: [[TN, FP], [FN, TP]]
        cols = min(len(class_names), 4)
        rows = int(np.ceil(len(class_names) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
        for ax in axes.flat[len(class_names):]:
            ax.axis("off")
        for c, name in enumerate(class_names):
            ax = axes.flat[c]
            _draw_matrix(ax, cm[c], ["neg", "pos"])
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true", fontsize=8)
    else:
        n = len(class_names)
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.7 * n))
        _draw_matrix(ax, cm, class_names)
        ax.set(xlabel="predicted", ylabel="true")
    _save(fig, path, title)


def _save(fig, path: Path, title: str) -> None:
    # wrapped to the figure's width: a few classes make a narrow figure and a run's name is long
    fig.suptitle(textwrap.fill(title, max(30, int(fig.get_figwidth() * 11))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_matrix(ax, cm: np.ndarray, names: Sequence[str]) -> None:
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                color="white" if v > cm.max() / 2 else "black")


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, raw_probs: np.ndarray | None, multilabel: bool,
                     path: Path, title: str) -> None:
    """Reliability diagram: observed frequency against mean predicted probability in 15 bins (marker area
    ~ forecasts in the bin), with the uncalibrated probabilities beside the calibrated ones when given."""
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    shown = [("uncalibrated", raw_probs, "tab:gray"), ("temperature-scaled", probs, "tab:blue")] \
        if raw_probs is not None else [("model", probs, "tab:blue")]
    for label, p, color in shown:
        confidence, observed, count = reliability_curve(y_true, p, multilabel)
        ece = expected_calibration_error(y_true, p, multilabel)
        ax.plot(confidence, observed, "-", color=color, lw=1, label=f"{label} (ECE {ece:.3f})")
        ax.scatter(confidence, observed, s=10 + 190 * count / count.max(), color=color, alpha=0.7)
    what = "every (record, class) probability" if multilabel else "top-class probability"
    ax.set(xlabel=f"predicted probability ({what})", ylabel="observed frequency",
           title=f"reliability: {title}", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_model_report(out_dir: Path, name: str, metrics: dict, y_true: np.ndarray, probs: np.ndarray,
                       class_names: Sequence[str], multilabel: bool, plots: bool = True,
                       raw_probs: np.ndarray | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics, out_dir / "metrics.json")
    write_per_class_csv(metrics, out_dir / "per_class.csv")
    if plots:
        plot_roc(y_true, probs, metrics, out_dir / "roc.png", name)
        plot_pr(y_true, probs, metrics, out_dir / "pr.png", name)
        plot_confusion(metrics, class_names, multilabel, out_dir / "confusion.png", f"confusion: {name}")
        plot_reliability(y_true, probs, raw_probs, multilabel, out_dir / "reliability.png", name)
