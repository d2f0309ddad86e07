"""``cinc17``: the PhysioNet/Computing in Cardiology Challenge 2017 training set (AF classification
from a short single-lead ECG; Clifford et al., CinC 2017).

Layout read (the official ``training2017.zip``, unpacked under ``root``)::

    root/training2017/REFERENCE.csv      record,label (no header); label in N, A, O, ~
    root/training2017/AXXXXX.mat         MATLAB v4, variable ``val``: int16 (1, n), 300 Hz, 9-61 s
    root/training2017/AXXXXX.hea         WFDB header: rate, gain (1000/mV), baseline

Classes, in this order: N (normal sinus rhythm), A (atrial fibrillation), O (other rhythm),
~ (too noisy to classify); one label per record (int64). Records differ in length, so
``record_length_s`` is None and the framework trains on random crops and scores whole records
by averaging sliding windows.

The challenge test labels were never published, so every record is assigned to train / val /
test by a fixed, label-stratified 70/10/20 split of all 8,528 training records, generated once
by ``tools/make_cinc17_split.py`` (:func:`make_split`) and shipped as
``ecgnet/data/resources/cinc17_split.csv`` (``record,split``). Its parts are the predefined
folds 1 (train), 2 (val) and 3 (test). CinC 2017 publishes no patient ids, so each record is
its own group: recordings of one person may fall on both sides of the split, which no split of
this dataset can prevent.

Records the split file lists but the disk lacks (e.g. the whole set minus a subset) are left
out and reported; a labelled record on disk that the split file does not list is an error,
because its split would be a guess and silently dropping it would change the dataset.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import scipy.io
import wfdb
from sklearn.metrics import f1_score

from ..registry import DATASETS, ConfigError, DataError
from .base import ECGAdapter, RecordSet
from .cache import file_fingerprint

log = logging.getLogger(__name__)

CLASSES = ["N", "A", "O", "~"]
SPLITS = {"train": 1, "val": 2, "test": 3}          # split name -> predefined fold number
FS = 300.0
SHIPPED_SPLIT = Path(__file__).with_name("resources") / "cinc17_split.csv"
READER_VERSION = 1                                   # bump when load() changes what it returns
SETUP_HINT = "download it with experiments/cinc17/setup.sh"
ABSENT_FROM_REFERENCE = "absent: in the split file, not in REFERENCE.csv"
ABSENT_FILES = "absent: in REFERENCE.csv, .mat or .hea missing"


def read_reference(path: Path) -> pd.DataFrame:
    """REFERENCE.csv -> DataFrame (record, label) in file order; DataError on a malformed file."""
    try:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err}); {SETUP_HINT}") from None
    if table.shape[1] != 2:
        raise DataError(f"{path}: expected 2 columns (record,label, no header), found {table.shape[1]}")
    table.columns = ["record", "label"]
    table["record"] = table["record"].str.strip()
    table["label"] = table["label"].str.strip()
    bad = table[~table["label"].isin(CLASSES)]
    if len(bad):
        row = bad.index[0]
        raise DataError(f"{path}: line {row + 1}: label {table.at[row, 'label']!r} of {table.at[row, 'record']} "
                        f"is not one of {' '.join(CLASSES)}; correct that line or restore the file "
                        "(experiments/cinc17/setup.sh)")
    dup = table["record"][table["record"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: record {dup.iloc[0]} is listed twice")
    return table


def read_split(path: Path) -> dict[str, str]:
    """Split file (record,split with a header) -> {record: 'train' | 'val' | 'test'}."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found; generate one with tools/make_cinc17_split.py "
                        "or leave data.split_file unset for the shipped one")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable split file ({err})") from None
    if list(table.columns) != ["record", "split"]:
        raise DataError(f"{path}: expected the columns record,split, found {','.join(map(str, table.columns))}")
    bad = table[~table["split"].isin(SPLITS)]
    if len(bad):
        row = bad.index[0]
        raise DataError(f"{path}: line {row + 2}: split {table.at[row, 'split']!r} is not one of train, val, test")
    dup = table["record"][table["record"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: record {dup.iloc[0]} is listed twice")
    return dict(zip(table["record"], table["split"]))


def make_split(reference: Path, seed: int = 2017, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> pd.DataFrame:
    """A label-stratified train/val/test split of every record in ``reference``.

    Per class (in the order N, A, O, ~) the sorted record ids are permuted by one
    ``numpy.random.RandomState(seed)``; the first round(f_train * n) go to train, the next
    round(f_val * n) to val, the rest to test. RandomState's stream is frozen across numpy
    versions (unlike ``default_rng``), so the same REFERENCE.csv and seed give the same file
    anywhere. Returns (record, split) sorted by record.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"--fractions: need three non-negative shares (train val test) summing to 1, "
                          f"got {list(fractions)}")
    table = read_reference(Path(reference))
    rng = np.random.RandomState(seed)
    rows = []
    for label in CLASSES:
        ids = np.sort(table.loc[table["label"] == label, "record"].to_numpy())
        ids = ids[rng.permutation(len(ids))]
        n_train, n_val = int(round(fractions[0] * len(ids))), int(round(fractions[1] * len(ids)))
        for k, rid in enumerate(ids):
            rows.append((rid, "train" if k < n_train else "val" if k < n_train + n_val else "test"))
    return pd.DataFrame(rows, columns=["record", "split"]).sort_values("record", ignore_index=True)


def write_split_file(reference: str | Path, out: str | Path, seed: int = 2017,
                     fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> pd.DataFrame:
    """Generate the split of ``reference`` (see :func:`make_split`), write it to ``out`` as
    ``record,split`` and print the per-class counts."""
    split = make_split(Path(reference), seed, fractions)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(out, index=False, lineterminator="\n")
    labels = read_reference(Path(reference)).set_index("record")["label"]
    counts = pd.crosstab(split["split"], split["record"].map(labels)).reindex(
        index=list(SPLITS), columns=CLASSES, fill_value=0)
    print(f"{out}: {len(split)} records (seed {seed})\n{counts.to_string()}")
    return split


def challenge_f1(true_idx: np.ndarray, pred_idx: np.ndarray) -> tuple[float, np.ndarray]:
    """The CinC 2017 score: mean of the F1 of N, A and O (noisy ~ is not averaged), and the
    four per-class F1 values. Class indices follow ``CLASSES``.

    F1 = 2 TP / (2 TP + FP + FN) per class, as the official score2017Challenge.m computes it
    (2 N_n / (sum N + sum n)); a class that is neither present nor predicted scores 0 here.
    """
    per_class = f1_score(true_idx, pred_idx, labels=list(range(len(CLASSES))), average=None, zero_division=0)
    return float(np.mean(per_class[:3])), per_class


@DATASETS.register("cinc17")
class CinC2017(ECGAdapter):
    """
    Args:
        root: folder holding ``training2017/`` (as unpacked from PhysioNet's training2017.zip).
        split_file: ``record,split`` csv (split in train, val, test); null = the shipped fixed
            70/10/20 split of the 8,528 records (``ecgnet/data/resources/cinc17_split.csv``).
        strict: an unreadable record stops the run instead of being skipped and counted.
    """

    record_length_s = None     # 9-61 s; training crops and evaluation windows come from ``input``

    def __init__(self, root: str, split_file: Optional[str] = None, strict: bool = False):
        self.root = Path(root).expanduser()
        self.folder = self.root / "training2017"
        self.reference = self.folder / "REFERENCE.csv"
        if not self.reference.is_file():
            raise DataError(f"{root}: CinC 2017 not found (no training2017/REFERENCE.csv); {SETUP_HINT}")
        self.split_file = SHIPPED_SPLIT if split_file is None else Path(split_file).expanduser()
        self.strict = strict
        self._records: Optional[RecordSet] = None

    def records(self) -> RecordSet:
        if self._records is None:
            self._records = self._read_records()
        return self._records

    def _read_records(self) -> RecordSet:
        labels = read_reference(self.reference)
        split = read_split(self.split_file)
        unlisted = [rid for rid in labels["record"] if rid not in split]
        if unlisted:
            raise DataError(f"{self.split_file}: {len(unlisted)} record(s) of {self.reference} are not in the split "
                            f"file (e.g. {unlisted[0]}); make a split of this data with tools/make_cinc17_split.py "
                            f"--reference {self.reference} and set data.split_file")
        labelled = set(labels["record"])
        skipped = {}
        not_in_reference = sorted(rid for rid in split if rid not in labelled)
        if not_in_reference:
            skipped[ABSENT_FROM_REFERENCE] = not_in_reference
        labels = labels.sort_values("record", ignore_index=True)
        present = np.array([(self.folder / f"{rid}.mat").is_file() and (self.folder / f"{rid}.hea").is_file()
                            for rid in labels["record"]], dtype=bool)
        if not present.all():
            skipped[ABSENT_FILES] = labels.loc[~present, "record"].tolist()
        labels = labels[present]
        ids = labels["record"].tolist()
        return RecordSet(ids=ids, groups=list(ids),   # no patient ids are published: one group per record
                         labels=labels["label"].map(CLASSES.index).to_numpy(np.int64),
                         class_names=list(CLASSES), fs=FS, leads=["ECG"],
                         folds=np.array([SPLITS[split[rid]] for rid in ids], np.int64), skipped=skipped)

    def load(self, index: int) -> np.ndarray:
        """Record ``index`` in mV as float32 (1, samples): (val - baseline) / gain from the header."""
        rid = self.records().ids[index]
        mat, hea = self.folder / f"{rid}.mat", self.folder / f"{rid}.hea"
        try:
            header = wfdb.rdheader(str(self.folder / rid))
        except (OSError, ValueError, IndexError) as err:
            raise DataError(f"{hea}: unreadable header ({err})") from None
        try:
            val = scipy.io.loadmat(str(mat))["val"]
        except KeyError:
            raise DataError(f"{mat}: no variable 'val'") from None
        except (OSError, ValueError, IndexError, scipy.io.matlab.MatReadError) as err:   # IndexError: a few bytes
            raise DataError(f"{mat}: unreadable ({err})") from None
        if header.n_sig != 1 or header.fs != FS:
            raise DataError(f"{hea}: expected 1 signal at {FS:g} Hz, found {header.n_sig} at {header.fs} Hz")
        if val.ndim != 2 or val.shape[0] != 1 or val.shape[1] != header.sig_len:
            raise DataError(f"{mat}: 'val' has shape {val.shape}, the header says (1, {header.sig_len}); "
                            "the file is truncated or does not belong to the header")
        gain = header.adc_gain[0] or 200.0      # WFDB: a gain of 0 means the default, 200 per unit
        return ((val.astype(np.float32) - header.baseline[0]) / gain).astype(np.float32)

    def cache_key(self) -> str:
        records = self.records()
        sources = [self.folder / f"{rid}.{ext}" for rid in records.ids for ext in ("mat", "hea")]
        return json.dumps({"reader": READER_VERSION, "reference": file_fingerprint([self.reference]),
                           "split_file": file_fingerprint([self.split_file]), "records": file_fingerprint(sources)})

    def dataset_metrics(self, y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray) -> dict:
        """``cinc17_f1``: the challenge score (mean F1 of N, A, O); ``f1_noisy``: F1 of ~."""
        score, per_class = challenge_f1(y_true.argmax(1), decisions.argmax(1))
        return {"cinc17_f1": score, "f1_noisy": float(per_class[3])}
