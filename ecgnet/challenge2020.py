"""The PhysioNet/Computing in Cardiology Challenge 2020 score (Perez Alday et al., Physiol. Meas.
41 (2020) 124003), as the official ``evaluate_12ECG_score.py`` of physionetchallenges/evaluation-2020
(final version, the one that reads the 27-row ``weights.csv``) computes it.

* Classes are the rows of ``weights.csv`` with each set of equivalent codes replaced by its first
  member (``EQUIVALENT_CLASSES``), first occurrence kept: 27 rows -> 24 classes, in file order.
  Equivalent rows must be identical (the official ``load_weights`` asserts it).
* A record's label (or output) for a class is positive when any code of the class is positive.
* Modified multi-label confusion matrix: each record adds ``1 / max(1, |labels ∪ outputs|)`` to
  ``A[j, k]`` for every positive label j and positive output k.
* Score = ``sum(W * A)``; normalised ``(observed - inactive) / (correct - inactive)``, where
  *correct* outputs the labels and *inactive* outputs only the normal class (sinus rhythm,
  426783006); 0 when correct equals inactive. A record without a scored label adds nothing to
  any of the three sums, whatever is output for it.

Only the scoring is here (numbers from arrays); reading headers is the adapter's job
(``ecgnet.data.cinc2020``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .registry import DataError

NORMAL_CLASS = "426783006"
EQUIVALENT_CLASSES = (("713427006", "59118001"), ("284470004", "63593006"), ("427172004", "17338001"))
WEIGHTS_CSV = Path(__file__).parent / "data" / "resources" / "cinc2020_weights.csv"


def replace_equivalent_classes(codes: Iterable[str]) -> list[str]:
    """Each code -> the representative (first) code of its equivalence set; others unchanged."""
    representative = {code: group[0] for group in EQUIVALENT_CLASSES for code in group}
    return [representative.get(code, code) for code in codes]


def load_weights(path: str | Path = WEIGHTS_CSV) -> tuple[list[str], np.ndarray]:
    """-> (classes, weights): representative SNOMED CT codes in file order and the (C, C) reward
    matrix restricted to them (24 x 24 for the official file)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: unreadable weights table ({err})") from None
    rows = [str(r).strip() for r in table.index]
    cols = [str(c).strip() for c in table.columns]
    if rows != cols:
        raise DataError(f"{path}: row and column codes differ; restore the official weights.csv")
    values = table.to_numpy(dtype=np.float64)
    rows = replace_equivalent_classes(rows)
    classes = list(dict.fromkeys(rows))
    first = [rows.index(c) for c in classes]
    for j, code in enumerate(rows):
        k = first[classes.index(code)]
        if not (np.array_equal(values[j], values[k]) and np.array_equal(values[:, j], values[:, k])):
            raise DataError(f"{path}: equivalent classes {code} and {table.index[j]} have different weights")
    return classes, values[np.ix_(first, first)]


def multi_hot(code_sets: Sequence[Iterable[str]], classes: Sequence[str]) -> np.ndarray:
    """Code sets (one per record, e.g. a header's Dx codes) -> (N, C) bool over ``classes``;
    equivalent codes share a column and codes outside ``classes`` are ignored."""
    column = {c: k for k, c in enumerate(classes)}
    out = np.zeros((len(code_sets), len(classes)), dtype=bool)
    for i, codes in enumerate(code_sets):
        for code in replace_equivalent_classes(codes):
            if code in column:
                out[i, column[code]] = True
    return out


def modified_confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """(N, C) labels and outputs (0/1) -> (C, C): rows are labels, columns outputs; each record
    adds 1 / max(1, |labels ∪ outputs|) for every (positive label, positive output) pair."""
    labels, outputs = np.asarray(labels, dtype=bool), np.asarray(outputs, dtype=bool)
    normalization = np.maximum((labels | outputs).sum(axis=1), 1).astype(np.float64)
    return (labels / normalization[:, None]).T @ outputs.astype(np.float64)


def challenge_metric(weights: np.ndarray, labels: np.ndarray, outputs: np.ndarray, classes: Sequence[str],
                     normal_class: str = NORMAL_CLASS) -> float:
    """The normalised challenge score of binary ``outputs`` (N, C) against ``labels`` (N, C);
    1 for perfect outputs, 0 for always answering ``normal_class`` only."""
    labels, outputs = np.asarray(labels, dtype=bool), np.asarray(outputs, dtype=bool)
    if labels.shape != outputs.shape or labels.shape[1:] != (len(classes),) or weights.shape != (len(classes),) * 2:
        raise ValueError(f"shapes differ: labels {labels.shape}, outputs {outputs.shape}, "
                         f"weights {weights.shape}, {len(classes)} classes")
    observed = np.nansum(weights * modified_confusion_matrix(labels, outputs))
    correct = np.nansum(weights * modified_confusion_matrix(labels, labels))
    inactive_outputs = np.zeros_like(labels)
    inactive_outputs[:, list(classes).index(normal_class)] = True
    inactive = np.nansum(weights * modified_confusion_matrix(labels, inactive_outputs))
    if correct == inactive:
        return 0.0
    return float((observed - inactive) / (correct - inactive))
