"""``ptbxl``: PTB-XL (Wagner et al. 2020), 21,799 12-lead 10 s ECGs of 18,869 patients.

Reads the PhysioNet layout as published: ``ptbxl_database.csv`` (one row per record; ``scp_codes``
is a dict literal ``{statement: likelihood}``), ``scp_statements.csv`` (the 71 SCP-ECG statements
and their aggregation columns) and ``records100/`` (``fs: 100``, column ``filename_lr``) or
``records500/`` (``fs: 500``, ``filename_hr``) with wfdb.

Label tasks (multi-label, multi-hot) follow the PTB-XL benchmark (Strodthoff et al. 2021,
helme/ecg_ptbxl_benchmarking ``utils.compute_label_aggregations`` and ``select_data``):

* every statement of a record counts, whatever its likelihood (0 included);
* ``all``: every statement; ``diagnostic``: statements with ``diagnostic == 1``;
  ``subdiagnostic`` / ``superdiagnostic``: those mapped to their ``diagnostic_subclass`` /
  ``diagnostic_class``; ``form`` / ``rhythm``: statements with ``form == 1`` / ``rhythm == 1``;
* classes are sorted (as ``MultiLabelBinarizer``); ``min_count`` keeps classes with at least that
  many records (the benchmark's ``min_samples = m`` keeps counts above m, i.e. ``min_count: m+1``;
  both default to keeping every class; here it applies to ``diagnostic`` too);
* records left with no label are dropped, listed in ``RecordSet.skipped["no <task> label"]``.

Folds are ``strat_fold`` (1-10, patient-disjoint, recommended: 1-8 train, 9 val, 10 test) and
groups are ``patient_id``.

Task ``identification`` (who is this?; single-label, one class per patient): patients with at
least ``min_records_per_patient`` records are the classes (ids sorted numerically); the others'
records are dropped. Each patient's records are sorted by (``recording_date``, ``ecg_id``): the
latest goes to fold 3 (test), the one before it to fold 2 (val) when the patient has 3 or more
records, the rest to fold 1 (train). So every patient is enrolled with its earlier ECGs and
identified on a later one, and every test (and val) patient has at least one training record;
patients with exactly 2 records have none in val (``min_records_per_patient: 3`` gives every
patient one record in each split). Use ``split: {type: predefined, train_folds: [1], val_folds:
[2], test_folds: [3]}``. Because one patient is, by design, on every side of this split, the
groups are the record ids rather than the patients (the patient-disjointness check of the splits
then only guards against a record appearing twice); a random or k-fold split of this task would
not guarantee training records for every patient. Folds are assigned from the csv and the files
on disk; a record that then fails to load (corrupt, or no beat in ``segment: qrs``) is dropped
afterwards by the framework and logged, so its patient may lose its only training record.

``background_patients: true`` (identification) also keeps the patients with fewer records, as
classes of their own whose records all train (fold 1) and are never validated or tested: ~16,800
more people to tell apart, as face recognition trains on identities other than the gallery's.
Their classes follow the enrolled patients' (both in numerical order), so class k is the same
patient with and without them for k below the number of enrolled patients. Such a model is
meant to be pre-training (its validation accuracy picks among all patients, a harder question
than the closed set's); enrol the closed set on its backbone with ``model.init_from``.

``segment: qrs`` cuts each record to ``segment_s`` seconds centred on one beat: R peaks are
detected on lead II with ``wfdb.processing.gqrs_detect`` (``xqrs_detect`` also marked T waves as
beats on 100 Hz PTB-XL records we tried), the middle detection (lower median of the sorted peaks)
is the centre, and the window is shifted inwards where it would leave the record. A record
without a detected beat raises DataError, so it is counted and skipped like an unreadable one.

Files listed in the csv but absent from disk are left out (``skipped["file missing on disk"]``);
an unreadable .hea/.dat raises DataError from ``load``, and so does a record that is not one
complete 10 s PTB-XL record: a header that gives another length, a ``.dat`` whose size does not
match its header (truncated, or longer than the header says, which wfdb would silently cut).
The framework counts and skips such records (an error with ``strict``); missing (NaN) samples
are left to its QC (``preprocess.qc``).
"""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import wfdb
import wfdb.processing

from ..registry import DATASETS, ConfigError, DataError
from .base import ECGAdapter, RecordSet
from .cache import file_fingerprint

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
LABEL_TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
RECORD_S = 10.0
FOLD_TRAIN, FOLD_VAL, FOLD_TEST = 1, 2, 3          # identification folds
DATABASE_COLUMNS = ("patient_id", "recording_date", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
STATEMENT_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")
SETUP = "experiments/ptbxl/setup.sh"


def read_database(path: Path) -> pd.DataFrame:
    """``ptbxl_database.csv`` indexed by ecg_id, ``scp_codes`` parsed to dicts."""
    df = _read_csv(path, "ecg_id", DATABASE_COLUMNS)
    codes = []
    for ecg_id, text in df["scp_codes"].items():
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, dict):
            raise DataError(f"{path}: ecg_id {ecg_id} has scp_codes {text!r}, not a dict literal; "
                            f"restore the file with {SETUP}")
        codes.append(value)
    df["scp_codes"] = codes
    if df["patient_id"].isna().any():
        raise DataError(f"{path}: {int(df['patient_id'].isna().sum())} row(s) without patient_id; "
                        f"restore the file with {SETUP}")
    return df


def read_statements(path: Path) -> pd.DataFrame:
    """``scp_statements.csv`` indexed by statement code."""
    return _read_csv(path, 0, STATEMENT_COLUMNS)


def _read_csv(path: Path, index_col, columns) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found; the PTB-XL folder is incomplete, download it with {SETUP}")
    try:
        df = pd.read_csv(path, index_col=index_col)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable csv ({err}); restore it with {SETUP}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; restore the file with {SETUP}")
    return df


def task_labels(scp_codes: dict, statements: pd.DataFrame, task: str) -> set[str]:
    """The labels one record has for a label task (benchmark ``compute_label_aggregations``)."""
    if task == "all":
        return set(scp_codes)
    column = "form" if task == "form" else "rhythm" if task == "rhythm" else "diagnostic"
    codes = [c for c in scp_codes if c in statements.index and statements.at[c, column] == 1.0]
    if task in ("diagnostic", "form", "rhythm"):
        return set(codes)
    target = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
    return {statements.at[c, target] for c in codes if not pd.isna(statements.at[c, target])}


def identification_folds(df: pd.DataFrame) -> pd.Series:
    """Fold per record (1 train, 2 val, 3 test) for the records of ``df``: per patient, sorted by
    (recording_date, ecg_id), the last is test, the one before is val when there are 3 or more."""
    order = df.assign(_date=pd.to_datetime(df["recording_date"], errors="coerce"), _id=df.index)
    order = order.sort_values(["patient_id", "_date", "_id"], na_position="first")
    position_from_end = order.groupby("patient_id").cumcount(ascending=False)
    count = order.groupby("patient_id")["_id"].transform("size")
    folds = np.where(position_from_end == 0, FOLD_TEST,
                     np.where((position_from_end == 1) & (count >= 3), FOLD_VAL, FOLD_TRAIN))
    return pd.Series(folds, index=order.index).reindex(df.index)


def qrs_segment(x: np.ndarray, fs: float, length: int) -> np.ndarray | None:
    """``length`` samples of ``x`` (leads, samples) centred on the middle R peak detected on
    lead II; None when no beat is detected."""
    peaks = np.sort(wfdb.processing.gqrs_detect(sig=x[LEADS.index("II")].astype(np.float64), fs=fs))
    if len(peaks) == 0:
        return None
    centre = int(peaks[(len(peaks) - 1) // 2])
    start = min(max(centre - length // 2, 0), x.shape[1] - length)
    return x[:, start:start + length]


def _patient(pid: float) -> str:
    return str(int(pid)) if float(pid).is_integer() else str(pid)


@DATASETS.register("ptbxl")
class PTBXL(ECGAdapter):
    """
    Args:
        root: the PTB-XL folder (holding ptbxl_database.csv, scp_statements.csv, records100/).
        task: label set (see the module docstring) or ``identification``.
        fs: 100 reads records100/ (filename_lr), 500 reads records500/ (filename_hr).
        min_count: label tasks keep classes with at least this many records (0 = all).
        min_records_per_patient: identification keeps patients with at least this many records.
        segment: ``full`` 10 s records, or ``qrs``: ``segment_s`` seconds around a detected beat.
        strict: an unreadable record is an error instead of a counted skip.
        background_patients: identification also trains on the other patients (see the module docstring).
    """

    record_length_s = RECORD_S

    def __init__(self, root: str, task: Literal["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form",
                                                "rhythm", "identification"] = "superdiagnostic",
                 fs: Literal[100, 500] = 100, min_count: int = 0, min_records_per_patient: int = 2,
                 segment: Literal["full", "qrs"] = "full", segment_s: float = 2.0, strict: bool = False,
                 background_patients: bool = False):
        if min_count < 0:
            raise ConfigError(f"data.min_count: must be 0 or more, got {min_count}")
        if min_records_per_patient < 2:
            raise ConfigError("data.min_records_per_patient: identification needs at least 2 records per "
                              f"patient (one to train on, one to test), got {min_records_per_patient}")
        if background_patients and task != "identification":
            raise ConfigError(f"data.background_patients: only for task identification (it adds patients as "
                              f"classes), not {task}; remove it")
        if not 0 < segment_s <= RECORD_S:
            raise ConfigError(f"data.segment_s: must be in (0, {RECORD_S:g}] seconds, got {segment_s}")
        self.root, self.task, self.fs, self.strict = Path(root).expanduser(), task, int(fs), strict
        self.min_count, self.min_records_per_patient = min_count, min_records_per_patient
        self.segment, self.segment_s = segment, segment_s
        self.background_patients = background_patients
        if segment == "qrs":
            self.record_length_s = segment_s
        if not self.root.is_dir():
            raise DataError(f"{root}: PTB-XL not found; download it with {SETUP}")
        self.database, self.statements = self.root / "ptbxl_database.csv", self.root / "scp_statements.csv"
        if not (self.root / f"records{self.fs}").is_dir():
            raise DataError(f"{self.root / f'records{self.fs}'}: not found; download PTB-XL with {SETUP} "
                            f"or set data.fs to the rate you have")
        self._records, self.paths = self._build()

    def _build(self) -> tuple[RecordSet, list[Path]]:
        df = read_database(self.database)
        statements = read_statements(self.statements)
        column = "filename_lr" if self.fs == 100 else "filename_hr"
        paths = [self.root / str(f) for f in df[column]]
        on_disk = np.array([Path(f"{p}.hea").is_file() and Path(f"{p}.dat").is_file() for p in paths])
        skipped = {}
        if not on_disk.all():
            skipped["file missing on disk"] = [str(i) for i in df.index[~on_disk]]
        df = df[on_disk]
        if self.task == "identification":
            df, labels, class_names, folds, dropped = self._identification(df)
            groups = [str(i) for i in df.index]
            reason = f"patient has fewer than {self.min_records_per_patient} records"
        else:
            df, labels, class_names, folds, dropped = self._labels(df, statements)
            groups = [_patient(p) for p in df["patient_id"]]
            reason = f"no {self.task} label"
        if dropped:
            skipped[reason] = dropped
        records = RecordSet(ids=[str(i) for i in df.index], groups=groups, labels=labels, class_names=class_names,
                            fs=float(self.fs), leads=list(LEADS), folds=folds, skipped=skipped)
        return records, [self.root / str(f) for f in df[column]]

    def _labels(self, df: pd.DataFrame, statements: pd.DataFrame):
        sets = [task_labels(codes, statements, self.task) for codes in df["scp_codes"]]
        counts = pd.Series([c for s in sets for c in s], dtype=object).value_counts()
        class_names = sorted(str(c) for c in counts.index[counts >= self.min_count])
        sets = [s & set(class_names) for s in sets]
        keep = np.array([bool(s) for s in sets], dtype=bool)
        dropped = [str(i) for i in df.index[~keep]]
        labels = np.zeros((int(keep.sum()), len(class_names)), np.float32)
        column = {name: k for k, name in enumerate(class_names)}
        for row, s in enumerate(s for s, k in zip(sets, keep) if k):
            labels[row, [column[c] for c in s]] = 1
        df = df[keep]
        return df, labels, class_names, df["strat_fold"].to_numpy(np.int64), dropped

    def _identification(self, df: pd.DataFrame):
        counts = df["patient_id"].map(df["patient_id"].value_counts())
        enrolled = (counts >= self.min_records_per_patient).to_numpy()
        if self.background_patients:
            dropped = []
            folds = np.full(len(df), FOLD_TRAIN, np.int64)
            folds[enrolled] = identification_folds(df[enrolled]).to_numpy(np.int64)
        else:
            dropped = [str(i) for i in df.index[~enrolled]]
            df, enrolled = df[enrolled], enrolled[enrolled]
            folds = identification_folds(df).to_numpy(np.int64)
        patients = sorted(df["patient_id"][enrolled].unique()) + sorted(df["patient_id"][~enrolled].unique())
        class_names = [_patient(p) for p in patients]
        labels = df["patient_id"].map({p: k for k, p in enumerate(patients)}).to_numpy(np.int64)
        return df, labels, class_names, folds, dropped

    def records(self) -> RecordSet:
        return self._records

    def load(self, index: int) -> np.ndarray:
        path = self.paths[index]
        try:
            signal, meta = wfdb.rdsamp(str(path))
        except (OSError, ValueError) as err:    # wfdb: FileNotFoundError, HeaderSyntaxError, short .dat
            problem = self._length_problem(path)   # wfdb's own message for a short .dat is a numpy one
            raise DataError(f"{path}: {problem}" if problem else f"{path}.dat/.hea: unreadable ({err})") from None
        problem = self._length_problem(path, meta["sig_len"], meta["n_sig"])
        if problem:
            raise DataError(f"{path}: {problem}")
        names = [str(n).upper() for n in meta["sig_name"]]
        if names != [lead.upper() for lead in LEADS] or float(meta["fs"]) != self.fs:
            raise DataError(f"{path}.hea: expected the 12 standard leads at {self.fs} Hz, got {names} "
                            f"at {meta['fs']} Hz")
        x = np.ascontiguousarray(signal.T, dtype=np.float32)
        if self.segment == "qrs":       # every record is 10 s long (checked above), segment_s at most 10 s
            cut = qrs_segment(np.nan_to_num(x), self.fs, int(round(self.segment_s * self.fs)))
            if cut is None:
                raise DataError(f"{path}.dat: no beat detected on lead II (gqrs), so no QRS segment")
            x = np.ascontiguousarray(cut)
        return x

    def _length_problem(self, path: Path, sig_len: int | None = None, n_sig: int | None = None) -> str | None:
        """Why ``path`` is not one complete 10 s record, or None: the header's length, and the .dat
        size, which wfdb does not check when the file is longer than the header says."""
        if sig_len is None:
            try:
                header = wfdb.rdheader(str(path))
            except (OSError, ValueError):
                return None
            sig_len, n_sig = header.sig_len, header.n_sig
        expected = int(round(RECORD_S * self.fs))
        if sig_len != expected:
            return (f"{path.name}.hea says {sig_len} samples, a PTB-XL record has {expected} "
                    f"({RECORD_S:g} s at {self.fs} Hz)")
        dat = Path(f"{path}.dat")
        size = dat.stat().st_size if dat.is_file() else 0
        if size != sig_len * n_sig * 2:     # PTB-XL ships every record as WFDB format 16: 2 bytes a sample
            return (f"{dat.name} holds {size // (2 * n_sig)} samples per lead, {path.name}.hea says {sig_len} "
                    f"(truncated, or not this record's file); restore it with {SETUP}")
        return None

    def cache_key(self) -> str:
        files = [self.database, self.statements] + [Path(f"{p}{ext}") for p in self.paths for ext in (".hea", ".dat")]
        digest = hashlib.sha256(json.dumps(file_fingerprint(files)).encode()).hexdigest()
        settings = {"root": str(self.root.resolve()), "task": self.task, "fs": self.fs, "min_count": self.min_count,
                    "min_records_per_patient": self.min_records_per_patient, "segment": self.segment,
                    "segment_s": self.segment_s, "background_patients": self.background_patients}
        return json.dumps({"files": digest, "n_files": len(files), **settings}, sort_keys=True)
