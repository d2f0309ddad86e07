"""``kaggle_csv``: the Kaggle "ECG Heartbeat Categorization" CSVs (Kachuee et al. 2018).

Each row is one heartbeat: 187 samples at 125 Hz, amplitude in [0, 1], zero-padded at the
end, then the class label; no header. Two flavours:

* ``mitbih``: ``mitbih_train.csv`` / ``mitbih_test.csv``, labels 0-4 = AAMI N, S, V, F, Q.
  Fold 1 is the train file and fold 2 the test file (``split: {type: predefined,
  train_folds: [1], test_folds: [2]}``; validation is held out of the train file).
* ``ptbdb``: ``ptbdb_normal.csv`` / ``ptbdb_abnormal.csv``, labels 0 normal, 1 abnormal.
  The two files are one pool without folds; use ``split: {type: random}``.

The CSVs carry no patient or record ids, so every row is its own group: any split of them
is a split of *beats*, and beats of one patient end up in train and test (for mitbih the
published train/test files were made that way too). Scores on these files are intra-patient
scores; see experiments/mitdb/README.md. Record ids are ``"<file>:<row>"`` (row from 0).

The mitbih files can be rebuilt from raw PhysioNet mitdb with tools/mitdb_to_kaggle_csv.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import pandas as pd

from ..metrics import aami_metrics, is_aami
from ..registry import DATASETS, ConfigError, DataError
from .base import ECGAdapter, RecordSet
from .cache import file_fingerprint

SAMPLES = 187
FS = 125.0
FLAVOURS = {   # flavour -> (files, class names, lead)
    "mitbih": (("mitbih_train.csv", "mitbih_test.csv"), ("N", "S", "V", "F", "Q"), "MLII"),
    "ptbdb": (("ptbdb_normal.csv", "ptbdb_abnormal.csv"), ("normal", "abnormal"), "II"),
}
SKIP_LABEL = "row with a label that is not a class index"


def write_kaggle_csv(path: Path, beats: np.ndarray, labels: np.ndarray) -> None:
    """Write rows of ``beats`` (n, 187) followed by their label, in the Kaggle files' number format."""
    beats = np.asarray(beats, np.float64)
    if beats.ndim != 2 or beats.shape[1] != SAMPLES:
        raise ValueError(f"expected beats of shape (n, {SAMPLES}), got {beats.shape}")
    rows = np.hstack([beats, np.asarray(labels, np.float64)[:, None]])
    np.savetxt(path, rows, fmt="%.18e", delimiter=",")


def read_kaggle_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """-> (beats float32 (n, 187), labels float64 (n,)) of one file; DataError names a malformed file."""
    try:
        table = pd.read_csv(path, header=None, dtype=np.float64)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a Kaggle heartbeat CSV ({str(err).splitlines()[0]}); every row holds "
                        f"{SAMPLES} samples and a label") from None
    if table.shape[1] != SAMPLES + 1:
        raise DataError(f"{path}: {table.shape[1]} columns, expected {SAMPLES} samples + 1 label; check data.root "
                        "and data.files point at the Kaggle heartbeat CSVs")
    values = table.to_numpy()
    return values[:, :SAMPLES].astype(np.float32), values[:, SAMPLES]


@DATASETS.register("kaggle_csv")
class KaggleHeartbeatCSV(ECGAdapter):
    """
    Args:
        root: folder holding the CSV files.
        flavour: ``mitbih`` (files = train, test; folds 1, 2) or ``ptbdb`` (one pool, no folds).
        files: CSV names inside root (default per flavour, see the module docstring).
        class_names: names of labels 0, 1, ... (default per flavour).
    """

    signal_units = "normalized"     # the published beats are scaled to [0, 1]

    record_length_s = SAMPLES / FS

    def __init__(self, root: str, flavour: Literal["mitbih", "ptbdb"] = "mitbih",
                 files: Optional[Sequence[str]] = None, class_names: Optional[Sequence[str]] = None,
                 strict: bool = False):
        default_files, default_classes, self.lead = FLAVOURS[flavour]
        self.root = Path(os.path.expanduser(root))
        self.flavour, self.strict = flavour, strict
        self.files = list(default_files if files is None else files)
        self.class_names = list(default_classes if class_names is None else class_names)
        if not self.files:
            raise ConfigError("data.files: give at least one CSV file name")
        if len(self.class_names) < 2:
            raise ConfigError(f"data.class_names: need at least two classes, got {self.class_names}")
        self._records: Optional[RecordSet] = None
        self._beats: Optional[np.ndarray] = None

    def _paths(self) -> list[Path]:
        if not self.root.is_dir():
            how = ("download mitbih_*.csv from Kaggle (shayanfazeli/heartbeat) or build them with "
                   "experiments/mitdb/setup.sh" if self.flavour == "mitbih" else
                   "download ptbdb_*.csv from Kaggle (shayanfazeli/heartbeat)")
            raise DataError(f"{self.root}: Kaggle heartbeat CSVs not found; {how}")
        paths = [self.root / f for f in self.files]
        for path in paths:
            if not path.is_file():
                raise DataError(f"{path}: not found; check data.files or download the Kaggle heartbeat CSVs")
        return paths

    def records(self) -> RecordSet:
        if self._records is None:
            self._records = self._read()
        return self._records

    def _read(self) -> RecordSet:
        beats, ids, labels, folds, skipped = [], [], [], [], {}
        for k, path in enumerate(self._paths()):
            x, y = read_kaggle_csv(path)
            valid = np.isfinite(y) & (y == np.round(y)) & (y >= 0) & (y < len(self.class_names))
            rows = np.flatnonzero(valid)
            if len(rows) < len(y):
                skipped.setdefault(SKIP_LABEL, []).extend(f"{path.name}:{r}" for r in np.flatnonzero(~valid))
            beats.append(x[rows])
            ids += [f"{path.name}:{r}" for r in rows]
            labels.append(y[rows].astype(np.int64))
            folds += [k + 1] * len(rows)
        self._beats = np.concatenate(beats)
        return RecordSet(ids=ids, groups=list(ids), labels=np.concatenate(labels), class_names=self.class_names,
                         fs=FS, leads=[self.lead],
                         folds=np.asarray(folds, np.int64) if self.flavour == "mitbih" else None,
                         skipped=skipped)

    def load(self, index: int) -> np.ndarray:
        """Row ``index`` as float32 (1, 187)."""
        records = self.records()
        beat = self._beats[index]
        if not np.isfinite(beat).all():
            raise DataError(f"{self.root / records.ids[index].rsplit(':', 1)[0]}: row "
                            f"{records.ids[index].rsplit(':', 1)[1]} has missing or non-numeric samples")
        return beat[None].copy()

    def cache_key(self) -> str:
        settings = {"flavour": self.flavour, "files": self.files, "class_names": self.class_names, "version": 1}
        return json.dumps({"files": file_fingerprint(self._paths()), "settings": settings}, sort_keys=True)

    def dataset_metrics(self, y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray) -> dict:
        """SVEB/VEB sensitivity, +P and FPR as inter-patient papers report them (AAMI classes only)."""
        names = self.records().class_names
        return aami_metrics(y_true, decisions, names) if is_aami(names, False) else {}
