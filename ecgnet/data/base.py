"""The adapter contract every dataset implements.

An adapter reads one dataset in its published layout and exposes:
``records()`` -> a :class:`RecordSet` (ids, patient ids, labels, class names,
sampling rate, leads, optional predefined folds) and ``load(i)`` -> one record's
signal as float32 ``(leads, samples)`` at the source rate. Everything after that
(splits, resampling, filtering, normalisation, windows, augmentation, sampling)
is shared code, so a new dataset is one file with one registered class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..registry import DataError


@dataclass
class RecordSet:
    ids: list[str]
    groups: list[str]              # patient ids; splits never put one patient on both sides
    labels: np.ndarray             # (N, C) float32 multi-hot, or (N,) int64 class index
    class_names: list[str]
    fs: float                      # source sampling rate in Hz
    leads: list[str]
    folds: Optional[np.ndarray] = None   # predefined fold per record (e.g. PTB-XL strat_fold)
    skipped: dict = field(default_factory=dict)   # reason -> [record ids] left out while reading
    #: what evaluation scores one prediction per, when a record is a piece of something larger
    #: (HDF5 windows of one recording or patient): records with the same unit are combined by
    #: ``eval.aggregate`` before any metric. None: every record is its own unit.
    units: Optional[list[str]] = None
    #: per-record numbers beside the signal (e.g. a beat's RR intervals), (N, F) float32, given to
    #: the model as its second input (``models.fusion``); None: the signal only
    features: Optional[np.ndarray] = None
    feature_names: Optional[list[str]] = None

    def __post_init__(self):
        n = len(self.ids)
        if n == 0:
            raise DataError("the dataset has no records; check the data settings and the folder")
        if len(self.groups) != n or len(self.labels) != n or (self.folds is not None and len(self.folds) != n):
            raise DataError(f"record set is inconsistent: {n} ids, {len(self.groups)} groups, "
                            f"{len(self.labels)} labels")
        if self.units is not None and len(self.units) != n:
            raise DataError(f"record set is inconsistent: {n} ids, {len(self.units)} evaluation units")
        if (self.features is None) != (self.feature_names is None):
            raise DataError("record set is inconsistent: features and feature_names go together")
        if self.features is not None and self.features.shape != (n, len(self.feature_names)):
            raise DataError(f"record set is inconsistent: {n} records, {len(self.feature_names)} feature names, "
                            f"features of shape {self.features.shape}")
        if len(set(self.ids)) != n:
            raise DataError("record ids are not unique")
        if self.labels.ndim == 2 and self.labels.shape[1] != len(self.class_names):
            raise DataError(f"{self.labels.shape[1]} label columns but {len(self.class_names)} class names")

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def multi_hot(self, index: np.ndarray | None = None) -> np.ndarray:
        """Labels as (n, C) 0/1 float32, whatever the task type."""
        labels = self.labels if index is None else self.labels[index]
        if self.multilabel:
            return labels.astype(np.float32)
        out = np.zeros((len(labels), self.num_classes), np.float32)
        out[np.arange(len(labels)), labels] = 1
        return out

    def class_counts(self, index: np.ndarray) -> list[int]:
        return self.multi_hot(index).sum(0).astype(int).tolist()

    def select(self, keep: np.ndarray, reason: str | None = None) -> "RecordSet":
        """The records at positions ``keep``; the others are added to ``skipped[reason]``."""
        keep = np.asarray(keep, dtype=np.int64)
        skipped = {k: list(v) for k, v in self.skipped.items()}
        if reason is not None:
            dropped = sorted(set(range(len(self.ids))) - set(keep.tolist()))
            if dropped:
                skipped.setdefault(reason, []).extend(self.ids[i] for i in dropped)
        return RecordSet(ids=[self.ids[i] for i in keep], groups=[self.groups[i] for i in keep],
                         labels=self.labels[keep], class_names=self.class_names, fs=self.fs, leads=self.leads,
                         folds=None if self.folds is None else self.folds[keep], skipped=skipped,
                         units=None if self.units is None else [self.units[i] for i in keep],
                         features=None if self.features is None else self.features[keep],
                         feature_names=self.feature_names)


class ECGAdapter:
    """Base class of dataset adapters; subclasses are registered in ``DATASETS``."""

    #: length of a record in seconds when every record has the same length, else None
    record_length_s: Optional[float] = None

    def records(self) -> RecordSet:
        raise NotImplementedError

    def load(self, index: int) -> np.ndarray:
        """Signal of record ``index`` as float32 (leads, samples) at ``records().fs``."""
        raise NotImplementedError

    #: read errors become a hard error instead of a counted skip
    strict: bool = False

    #: unit of the signals ``load`` returns: ``"mV"`` (physical; signal QC applies its mV
    #: thresholds) or anything else, e.g. ``"normalized"`` for beats scaled to [0, 1] (QC then
    #: checks only for missing, constant and NaN leads)
    signal_units: str = "mV"

    #: records are read on access (``dataset.LazySignals``) instead of loaded or cached whole;
    #: such an adapter implements ``num_samples`` and screens its records in ``records()``
    lazy: bool = False

    def num_samples(self, index: int) -> int:
        """Length of record ``index`` at the source rate, without reading its samples (lazy adapters)."""
        raise NotImplementedError

    def load_span(self, index: int, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of ``load(index)``; a lazy adapter overrides it to read only those
        (training crops and evaluation windows of long records), this default reads the whole record."""
        return self.load(index)[:, start:stop]

    def cache_key(self) -> Optional[str]:
        """A string that changes whenever the source files or reading settings change
        (see ``cache.file_fingerprint``); None disables the preprocessing cache (e.g. for
        generated data)."""
        return None

    def dataset_metrics(self, y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray) -> dict:
        """Extra metrics of this dataset (e.g. a challenge score), merged into every report.
        y_true, decisions: (N, C) 0/1; probs: (N, C)."""
        return {}
