"""Files people read: metrics.json, per_class.csv, a text table, ROC and confusion PNGs."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from .metrics import summary  # noqa: E402


def write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def write_per_class_csv(metrics: dict, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "precision", "recall", "f1", "auroc", "support"])
        writer.writeheader()
        writer.writerows(metrics["per_class"])


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def summary_table(results: dict[str, dict]) -> str:
    """Models side by side (columns), summary metrics as rows."""
    names = list(results)
    keys = list(dict.fromkeys(k for n in names for k in summary(results[n])))
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["metric".ljust(14) + "".join(n.rjust(width) for n in names)]
    for k in keys:
        lines.append(k.ljust(14) + "".join(_fmt(results[n].get(k)).rjust(width) for n in names))
    return "\n".join(lines)


def per_class_table(metrics: dict) -> str:
    cols = ["precision", "recall", "f1", "auroc", "support"]
    width = max(8, *(len(r["class"]) + 1 for r in metrics["per_class"]))
    lines = ["class".ljust(width) + "".join(c.rjust(11) for c in cols)]
    for row in metrics["per_class"]:
        lines.append(row["class"].ljust(width) + "".join(_fmt(row[c]).rjust(11) for c in cols))
    return "\n".join(lines)


def plot_roc(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for c, name in enumerate(class_names):
        if y_true[:, c].min() == y_true[:, c].max():
            continue   # ROC is undefined for a class without both outcomes
        fpr, tpr, _ = roc_curve(y_true[:, c], probs[:, c])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(metrics: dict, class_names: Sequence[str], multilabel: bool, path: Path, title: str) -> None:
    cm = np.asarray(metrics["confusion_matrix"])
    if multilabel:   # one 2x2 matrix per class: [[TN, FP], [FN, TP]]
        cols = min(len(class_names), 4)
        rows = int(np.ceil(len(class_names) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
        for ax in axes.flat[len(class_names):]:
            ax.axis("off")
        for c, name in enumerate(class_names):
            ax = axes.flat[c]
            _draw_matrix(ax, cm[c], ["neg", "pos"])
            ax.set_title(name, fontsize=9)
    else:
        n = len(class_names)
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.7 * n))
        _draw_matrix(ax, cm, class_names)
        ax.set(xlabel="predicted", ylabel="true")
    fig.suptitle(title, fontsize=10)
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


def write_model_report(out_dir: Path, name: str, metrics: dict, y_true: np.ndarray, probs: np.ndarray,
                       class_names: Sequence[str], multilabel: bool, plots: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics, out_dir / "metrics.json")
    write_per_class_csv(metrics, out_dir / "per_class.csv")
    if plots:
        plot_roc(y_true, probs, class_names, out_dir / "roc.png", f"ROC: {name}")
        plot_confusion(metrics, class_names, multilabel, out_dir / "confusion.png", f"confusion: {name}")
