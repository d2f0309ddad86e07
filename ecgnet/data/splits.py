"""Patient-grouped, stratified splits.

Stratification runs on patients, not records: each patient's label vector is the
union of its records' labels, and iterative stratification (Sechidis et al. 2011,
via ``iterstrat``) assigns whole patients, so no patient lands on two sides and
multi-label class proportions stay close. Single-label tasks use the same code on
one-hot labels, where it reduces to ordinary stratification.
"""
from __future__ import annotations

import logging

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from ..registry import ConfigError, DataError
from .base import RecordSet

log = logging.getLogger(__name__)


def _patients(records: RecordSet, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (patient ids, patient label union (P, C), record -> patient position)."""
    groups = np.asarray(records.groups, dtype=object)[index]
    patients, inverse = np.unique(groups.astype(str), return_inverse=True)
    y = np.zeros((len(patients), records.num_classes), np.int64)
    np.maximum.at(y, inverse, records.multi_hot(index).astype(np.int64))
    return patients, y, inverse


def holdout(records: RecordSet, index: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (kept, held out ~fraction), grouped by patient, stratified by label."""
    if not 0 < fraction < 1:
        raise ConfigError(f"split: a fraction must be between 0 and 1, got {fraction}")
    patients, y, inverse = _patients(records, index)
    held = int(np.ceil(fraction * len(patients)))   # how sklearn sizes the held-out part
    if len(patients) < 2 or held >= len(patients):
        raise DataError(f"split: cannot hold out {fraction:g} of {len(patients)} patient(s) and keep some; "
                        "lower the fraction or use more data")
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    keep_p, held_p = next(splitter.split(np.zeros(len(patients)), y))
    held_mask = np.isin(inverse, held_p)
    return np.sort(index[~held_mask]), np.sort(index[held_mask])


def kfold(records: RecordSet, index: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, val) pairs over ``index``; every patient is in exactly one val fold."""
    patients, y, inverse = _patients(records, index)
    if k < 2 or k > len(patients):
        raise ConfigError(f"--folds: need 2 <= K <= {len(patients)} patients, got {k}")
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    out = []
    for _, val_p in splitter.split(np.zeros(len(patients)), y):
        val_mask = np.isin(inverse, val_p)
        out.append((np.sort(index[~val_mask]), np.sort(index[val_mask])))
    return out


def _predefined(records: RecordSet, cfg: dict) -> dict[str, np.ndarray]:
    if records.folds is None:
        raise ConfigError("split.type: 'predefined' needs a dataset with its own folds; use 'random'")
    chosen = {part: cfg[f"{part}_folds"] for part in ("train", "val", "test")}
    for part in ("train", "test"):
        if chosen[part] is None:
            raise ConfigError(f"split.{part}_folds: required with split.type 'predefined', e.g. [10]")
    # a fold named in two parts would put the same records on both sides
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(chosen[a] or []) & set(chosen[b] or []), key=str)
        if shared:
            raise ConfigError(f"split.{b}_folds: fold(s) {shared} are also in split.{a}_folds; "
                              "give each fold to one part only")
    values, counts = np.unique(records.folds, return_counts=True)
    available = ", ".join(f"{v} ({c})" for v, c in zip(values.tolist(), counts.tolist()))
    out = {}
    for part, folds in chosen.items():
        if folds is None:                      # no validation fold: hold out val_fraction of train
            out[part] = None
            continue
        out[part] = np.flatnonzero(np.isin(records.folds, folds))
        if not len(out[part]):
            raise ConfigError(f"split.{part}_folds: {list(folds)} select no records; the dataset's folds "
                              f"(records) are {available}")
    if out["val"] is None:
        out["train"], out["val"] = holdout(records, out["train"], cfg["val_fraction"], cfg["seed"] + 1)
    return out


def make_splits(records: RecordSet, cfg: dict, kfolds: int = 0) -> dict:
    """Split per the ``split`` section. Returns ``{"test": idx, "folds": [(train, val), ...]}``:
    one (train, val) pair normally, K pairs for k-fold, always against the same test set."""
    everything = np.arange(len(records.ids))
    if cfg["type"] == "predefined":
        parts = _predefined(records, cfg)
        pool = np.union1d(parts["train"], parts["val"])
        folds = [(parts["train"], parts["val"])]
        test = parts["test"]
    else:
        pool, test = holdout(records, everything, cfg["test_fraction"], cfg["seed"])
        # val_fraction is of the whole dataset, so rescale it to the remaining pool
        val_share = cfg["val_fraction"] / (1 - cfg["test_fraction"])
        folds = [holdout(records, pool, val_share, cfg["seed"] + 1)]
    if kfolds and kfolds > 1:
        folds = kfold(records, pool, kfolds, cfg["seed"])
    for k, (train, val) in enumerate(folds):
        for name, part in (("train", train), ("val", val), ("test", test)):
            if len(part) == 0:
                where = f"fold {k} of --folds {kfolds} has" if kfolds and kfolds > 1 else "the split has"
                raise DataError(f"split: {where} no {name} records ({len(everything)} records in all); "
                                f"change the split settings ({cfg['type']}) or use more data")
        assert_disjoint(records, {"train": train, "val": val, "test": test})
    return {"test": test, "folds": folds}


def assert_disjoint(records: RecordSet, parts: dict[str, np.ndarray]) -> None:
    """Raise if a record or a patient appears in two parts."""
    groups = np.asarray(records.groups, dtype=object)
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = set(groups[parts[a]]) & set(groups[parts[b]])
            if shared or np.intersect1d(parts[a], parts[b]).size:
                raise DataError(f"split: patients {sorted(shared)[:5]} are in both {a} and {b}")
