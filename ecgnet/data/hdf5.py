"""``hdf5``: any ECG dataset packed into one file in ecgnet's HDF5 layout, read lazily.

The layout (``format = "ecgnet-hdf5"``, ``version = 1``; written by ``tools/pack_hdf5.py`` /
:mod:`ecgnet.data.pack`, or by your own h5py code)::

    root attributes
      format       "ecgnet-hdf5"
      version      1
      fs           sampling rate in Hz of every record (unless /fs overrides it)
      leads        lead names, length L (e.g. I II III aVR aVL aVF V1 ... V6)
      class_names  class names, length C
    fixed length (every record has T samples)
      /signals     float32 [N, T, L] in mV, chunked one record per chunk (chunks=(1, T, L))
    variable length
      /signals     float32 [sum of T_i, L] in mV, records concatenated along time (chunked by rows)
      /offsets     int64 [N + 1]: record i is /signals[offsets[i]:offsets[i + 1]]; offsets[0] = 0
    labels
      /labels      [N, C] multi-hot 0/1 (uint8, bool or float)  or  [N] int class index (single-label)
      /record_id   [N] utf-8 strings, unique
      /patient_id  [N] utf-8 strings (optional; splits never put one patient on two sides;
                   without it each record is its own group)
      /fold        [N] int (optional; predefined folds for ``split.type: predefined``)
      /fs          [N] float (optional; a record's own rate when it differs from the attribute)

Settings:

* ``windowing: windows`` (default) cuts each record into non-overlapping ``window_s`` windows
  (any remainder is dropped); a window is one sample with its record's labels, id
  ``<record_id>#w<k>`` (k from 0) and its record's patient as group. Records shorter than one
  window are listed in ``skipped["shorter than one window"]``. ``windowing: full`` serves whole
  records of any length; ``input.window_s`` then takes random crops in training and sliding
  windows in evaluation.
* ``fs``: the standard rate (default: the file's ``fs`` attribute). A record at another rate
  (``/fs``) is resampled to it (``fs_policy: resample``, polyphase) or left out
  (``fs_policy: reject``, ``skipped["qc: non-standard fs"]``).
* ``qc``: signal quality control (:mod:`ecgnet.data.qc`: missing or flat lead, NaN/inf samples,
  amplitude artefact, high-frequency noise, empty record), one streaming pass over the file in
  ``records()`` (a block of records at a time, never the whole file); each rejected record is
  listed under its first failing reason in ``RecordSet.skipped`` (logged with counts).
  ``enabled: false`` turns it off (empty records are still left out). The result is cached as a
  small JSON file in ``qc_cache`` keyed by the file's fingerprint (name, size, mtime) and the QC
  settings. With ``strict: true`` any rejected record is an error.

Reading is lazy (``lazy = True``): ``load(i)`` reads one record or window from the file, and
nothing is kept, so memory stays flat however large the file; each process (DataLoader
worker) opens its own read-only file handle on first access.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import h5py
import numpy as np

from ..registry import DATASETS, ConfigError, DataError
from .base import ECGAdapter, RecordSet
from .cache import file_fingerprint
# the reasons are re-exported: hdf5.REASON_* name the keys of RecordSet.skipped
from .qc import (REASON_AMPLITUDE, REASON_EMPTY, REASON_FLAT, REASON_FS, REASON_HF,  # noqa: F401
                 REASON_NONFINITE, QCSettings, qc_record)
from .transforms import crop_or_pad, resample, resampled_length

log = logging.getLogger(__name__)

FORMAT = "ecgnet-hdf5"
VERSION = 1
QC_VERSION = 1
QC_BLOCK_BYTES = 16 << 20          # the QC pass reads at most this much at once (or one record)
HANDLE_CACHE_BYTES = 4 << 20       # h5py chunk cache per open file
PACK_HINT = "write it with tools/pack_hdf5.py (see experiments/pediatric/README.md)"

REASON_SHORT = "shorter than one window"


@dataclass
class Layout:
    """What ``read_layout`` found in a file: everything but the samples."""
    path: Path
    variable: bool
    fs: float                        # root attribute
    leads: list[str]
    class_names: list[str]
    ids: list[str]
    patient_ids: Optional[list[str]]
    labels: np.ndarray               # (N, C) float32 or (N,) int64
    lengths: np.ndarray              # (N,) samples per record at its own rate
    offsets: Optional[np.ndarray]    # (N + 1,) int64, variable layout only
    record_fs: np.ndarray            # (N,) float64
    folds: Optional[np.ndarray]

    @property
    def n(self) -> int:
        return len(self.ids)


def _strings(value, where: str) -> list[str]:
    arr = np.atleast_1d(np.asarray(value, dtype=object))
    if arr.ndim != 1 or not all(isinstance(v, (str, bytes)) for v in arr):
        raise DataError(f"{where}: expected a list of strings, got {value!r}")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in arr]


def _string_dataset(f: h5py.File, name: str, n: int, path: Path) -> list[str]:
    ds = f[name]
    if ds.shape != (n,) or h5py.check_string_dtype(ds.dtype) is None:
        raise DataError(f"{path}:/{name}: expected [{n}] utf-8 strings, got {ds.dtype} {ds.shape}; {PACK_HINT}")
    return [str(s) for s in ds.asstr()[()]]


def _attr(f: h5py.File, name: str, path: Path, what: str):
    """A root attribute as a plain Python value (numpy scalars unwrapped, bytes decoded)."""
    if name not in f.attrs:
        raise DataError(f"{path}: root attribute '{name}' missing; expected {what}; {PACK_HINT}")
    value = f.attrs[name]
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def _labels(f: h5py.File, n: int, num_classes: int, path: Path) -> np.ndarray:
    expected = f"[{n}, {num_classes}] multi-hot 0/1 or [{n}] int class index"
    if "labels" not in f:
        raise DataError(f"{path}:/labels: missing; expected {expected}; {PACK_HINT}")
    ds = f["labels"]
    if ds.dtype.kind not in "biuf" or ds.shape not in ((n, num_classes), (n,)):
        raise DataError(f"{path}:/labels: is {ds.dtype} {ds.shape}, expected {expected} "
                        f"(C = len(class_names)); {PACK_HINT}")
    y = ds[()]
    if y.ndim == 2:
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"{path}:/labels: multi-hot labels must be 0 or 1")
        return y.astype(np.float32)
    if y.dtype.kind not in "iu" or (n and (y.min() < 0 or y.max() >= num_classes)):
        raise DataError(f"{path}:/labels: single-label classes must be integers in [0, {num_classes})")
    return y.astype(np.int64)


def read_layout(path: str | Path) -> Layout:
    """Open ``path`` and check it against the layout; DataError naming the dataset otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: HDF5 file not found; {PACK_HINT}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err}); {PACK_HINT}") from None
    with f:
        fmt = _attr(f, "format", path, f"'{FORMAT}'")
        if fmt != FORMAT:
            raise DataError(f"{path}: root attribute 'format' is {fmt!r}, expected '{FORMAT}'; {PACK_HINT}")
        version = _attr(f, "version", path, f"{VERSION}")
        if version != VERSION:
            raise DataError(f"{path}: layout version {version!r}, this ecgnet reads version {VERSION}; {PACK_HINT}")
        fs = float(_attr(f, "fs", path, "the sampling rate in Hz"))
        if not fs > 0:
            raise DataError(f"{path}: root attribute 'fs' is {fs}, expected a rate > 0 in Hz")
        leads = _strings(_attr(f, "leads", path, "a list of lead names"), f"{path}: root attribute 'leads'")
        class_names = _strings(_attr(f, "class_names", path, "a list of class names"),
                               f"{path}: root attribute 'class_names'")
        if "record_id" not in f:
            raise DataError(f"{path}:/record_id: missing; expected [N] utf-8 strings; {PACK_HINT}")
        n = f["record_id"].shape[0] if f["record_id"].ndim == 1 else -1
        ids = _string_dataset(f, "record_id", n, path)
        if len(set(ids)) != n:
            raise DataError(f"{path}:/record_id: record ids are not unique")
        patient_ids = _string_dataset(f, "patient_id", n, path) if "patient_id" in f else None
        labels = _labels(f, n, len(class_names), path)
        if "signals" not in f:
            raise DataError(f"{path}:/signals: missing; expected float32 [N, T, L] or [sum T, L] with /offsets")
        sig = f["signals"]
        variable = sig.ndim == 2
        if sig.ndim not in (2, 3) or sig.shape[-1] != len(leads) or (sig.ndim == 3 and sig.shape[0] != n) \
                or sig.dtype.kind != "f":
            raise DataError(f"{path}:/signals: is {sig.dtype} {sig.shape}, expected float [{n}, T, {len(leads)}] "
                            f"or [sum T, {len(leads)}] with /offsets (L = len(leads)); {PACK_HINT}")
        if variable:
            offsets = _offsets(f, n, sig.shape[0], path)
            lengths = np.diff(offsets)
        else:
            offsets, lengths = None, np.full(n, sig.shape[1], np.int64)
        record_fs = np.full(n, fs)
        if "fs" in f:
            if f["fs"].shape != (n,) or f["fs"].dtype.kind not in "iuf" or not (f["fs"][()] > 0).all():
                raise DataError(f"{path}:/fs: expected [{n}] rates > 0 in Hz, got {f['fs'].dtype} {f['fs'].shape}")
            record_fs = f["fs"][()].astype(np.float64)
        folds = None
        if "fold" in f:
            if f["fold"].shape != (n,) or f["fold"].dtype.kind not in "iu":
                raise DataError(f"{path}:/fold: expected [{n}] int, got {f['fold'].dtype} {f['fold'].shape}")
            folds = f["fold"][()].astype(np.int64)
    return Layout(path, variable, fs, leads, class_names, ids, patient_ids, labels, lengths, offsets,
                  record_fs, folds)


def _offsets(f: h5py.File, n: int, total: int, path: Path) -> np.ndarray:
    expected = f"int64 [{n + 1}] from 0 to {total}, non-decreasing"
    if "offsets" not in f:
        raise DataError(f"{path}:/offsets: missing; a 2-D /signals [sum T, L] needs {expected}; {PACK_HINT}")
    ds = f["offsets"]
    if ds.shape != (n + 1,) or ds.dtype.kind not in "iu":
        raise DataError(f"{path}:/offsets: is {ds.dtype} {ds.shape}, expected {expected}")
    offsets = ds[()].astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != total or (np.diff(offsets) < 0).any():
        raise DataError(f"{path}:/offsets: must be {expected}")
    return offsets


# ---- quality control ----

def _blocks(layout: Layout, row_bytes: int) -> list[tuple[int, int]]:
    """Consecutive record ranges of at most QC_BLOCK_BYTES each (or one record)."""
    out, start, size = [], 0, 0
    for i, length in enumerate(layout.lengths):
        rec = int(length) * row_bytes
        if i > start and size + rec > QC_BLOCK_BYTES:
            out.append((start, i))
            start, size = i, 0
        size += rec
    if start < layout.n:
        out.append((start, layout.n))
    return out


def run_qc(layout: Layout, qc: QCSettings, check: np.ndarray) -> dict[str, list[int]]:
    """Stream the records with ``check[i]`` through ``qc_record``: reason -> record positions."""
    reasons: dict[str, list[int]] = {}
    with h5py.File(layout.path, "r") as f:
        sig = f["signals"]
        row_bytes = len(layout.leads) * sig.dtype.itemsize
        for start, stop in _blocks(layout, row_bytes):
            if not check[start:stop].any():
                continue
            try:
                if layout.variable:
                    block = sig[layout.offsets[start]:layout.offsets[stop]]
                else:
                    block = sig[start:stop]
            except OSError as err:
                raise DataError(f"{layout.path}:/signals: records {start}-{stop - 1} unreadable ({err})") from None
            for i in range(start, stop):
                if not check[i]:
                    continue
                if layout.variable:
                    x = block[layout.offsets[i] - layout.offsets[start]:layout.offsets[i + 1] - layout.offsets[start]]
                else:
                    x = block[i - start]
                reason = qc_record(x, float(layout.record_fs[i]), qc)
                if reason:
                    reasons.setdefault(reason, []).append(i)
    return reasons


# ---- the adapter ----

@DATASETS.register("hdf5")
class HDF5Dataset(ECGAdapter):
    """
    Args:
        root: the .h5 file (ecgnet layout, see the module docstring).
        windowing: ``windows`` (non-overlapping ``window_s`` windows, ids ``<record>#w<k>``) or
            ``full`` (whole records, any length).
        window_s: window length in seconds for ``windowing: windows``.
        fs: the standard rate in Hz; null = the file's ``fs`` attribute.
        fs_policy: records at another rate are ``resample``d to ``fs`` or ``reject``ed.
        qc: QC settings (``enabled``, ``flat_std_mv``, ``max_bad_leads``, ``max_nonfinite_fraction``,
            ``amplitude_mv``, ``max_amplitude_fraction``, ``hf_cutoff_hz``, ``max_hf_ratio``).
        qc_cache: folder for the cached QC result; null recomputes it every time.
        strict: a record failing QC is an error instead of a counted skip.
        eval_unit: what evaluation scores one prediction for: ``patient`` (records and windows of
            one ``/patient_id`` combined by ``eval.aggregate``; labels are their union; without
            patient ids, or when one patient's single-label records disagree, per record) or
            ``record`` (a record's windows combined). Metrics are never per window.
    """

    lazy = True

    def __init__(self, root: str, windowing: Literal["windows", "full"] = "windows", window_s: float = 10.0,
                 fs: Optional[float] = None, fs_policy: Literal["resample", "reject"] = "resample",
                 qc: Optional[dict] = None, qc_cache: Optional[str] = "~/.cache/ecgnet/hdf5-qc",
                 strict: bool = False, eval_unit: Literal["patient", "record"] = "patient"):
        if window_s <= 0:
            raise ConfigError(f"data.window_s: must be > 0, got {window_s}")
        if fs is not None and fs <= 0:
            raise ConfigError(f"data.fs: must be > 0 Hz or null, got {fs}")
        self.qc = QCSettings.from_cfg(qc)
        self.path = Path(os.path.expanduser(root))
        if not self.path.is_file():
            raise DataError(f"{root}: HDF5 file not found; {PACK_HINT}")
        self.windowing, self.window_s, self.fs_policy, self.strict = windowing, window_s, fs_policy, strict
        self.qc_cache, self.eval_unit = qc_cache, eval_unit
        self._fs = fs
        self.record_length_s = window_s if windowing == "windows" else None
        self._records: Optional[RecordSet] = None
        self.layout: Optional[Layout] = None
        self._h5: Optional[h5py.File] = None
        self._h5_pid: Optional[int] = None

    # -- listing and QC --
    def records(self) -> RecordSet:
        if self._records is None:
            self._records = self._build()
        return self._records

    def _build(self) -> RecordSet:
        layout = read_layout(self.path)
        self.layout = layout
        self.fs = float(self._fs or layout.fs)
        nonstandard = ~np.isclose(layout.record_fs, self.fs)
        layout.record_fs = np.where(nonstandard, layout.record_fs, self.fs)   # "close" counts as standard
        reasons: dict[str, list[int]] = {}
        if self.fs_policy == "reject" and nonstandard.any():
            reasons[REASON_FS] = np.flatnonzero(nonstandard).tolist()
        check = ~nonstandard if self.fs_policy == "reject" else np.ones(layout.n, bool)
        if self.qc.enabled:
            for reason, idx in self._qc(layout, check).items():
                reasons.setdefault(reason, []).extend(idx)
        else:
            empty = np.flatnonzero(check & (layout.lengths == 0)).tolist()
            if empty:
                reasons[REASON_EMPTY] = empty
        rejected = sorted(i for idx in reasons.values() for i in idx)
        if rejected and self.strict:
            counts = ", ".join(f"{len(v)} {k}" for k, v in reasons.items())
            raise DataError(f"{self.path}: {len(rejected)} record(s) fail QC ({counts}), e.g. "
                            f"{layout.ids[rejected[0]]}; fix them, relax data.qc or set data.strict: false")
        keep = np.setdiff1d(np.arange(layout.n), rejected)
        if nonstandard[keep].any():
            log.info("%s: resampling %d record(s) at %s Hz to %g Hz", self.path, int(nonstandard[keep].sum()),
                     sorted({float(r) for r in layout.record_fs[keep][nonstandard[keep]]}), self.fs)
        skipped = {reason: [layout.ids[i] for i in idx] for reason, idx in reasons.items()}
        if self.windowing == "windows":
            rec, start, short = self._windows(layout, keep)
            if short:
                skipped[REASON_SHORT] = [layout.ids[i] for i in short]
            self.record_length_s = self.window_s
        else:
            rec, start = keep, np.zeros(len(keep), np.int64)
            same = not nonstandard.any() and not layout.variable
            self.record_length_s = float(layout.lengths[0] / self.fs) if same and layout.n else None
        self._rec, self._start = rec.astype(np.int64), start.astype(np.int64)
        if self.windowing == "windows":
            ids = [f"{layout.ids[r]}#w{s // self._source_window(r)}" for r, s in zip(rec, start)]
        else:
            ids = [layout.ids[r] for r in rec]
        if not ids:
            counts = ", ".join(f"{len(v)} {k}" for k, v in skipped.items())
            raise DataError(f"{self.path}: no record left of {layout.n} ({counts}); check the file, "
                            f"relax data.qc or shorten data.window_s")
        groups = layout.patient_ids or layout.ids
        log.info("%s: %d of %d records pass QC%s", self.path, len(keep), layout.n,
                 f"; {len(ids)} windows of {self.window_s:g} s" if self.windowing == "windows" else "")
        return RecordSet(ids=ids, groups=[groups[r] for r in rec], labels=layout.labels[rec],
                         class_names=layout.class_names, fs=self.fs, leads=layout.leads,
                         folds=None if layout.folds is None else layout.folds[rec], skipped=skipped,
                         units=self._units(layout, rec))

    def _units(self, layout: Layout, rec: np.ndarray) -> Optional[list[str]]:
        """Evaluation unit of each served item (see ``eval_unit``); None when every item is one."""
        units = [layout.ids[r] for r in rec]
        if self.eval_unit == "patient" and layout.patient_ids is not None:
            patients = [layout.patient_ids[r] for r in rec]
            single_label = layout.labels.ndim == 1
            labels_of: dict[str, set] = {}
            for p, r in zip(patients, rec):
                labels_of.setdefault(p, set()).add(int(layout.labels[r]) if single_label else 0)
            mixed = [p for p, labels in labels_of.items() if len(labels) > 1]
            if mixed:
                log.warning("%s: %d patient(s) have records with different classes (e.g. %s); scoring per "
                            "record instead of per patient", self.path, len(mixed), mixed[0])
            else:
                units = patients
        return None if len(set(units)) == len(units) else units

    def _source_window(self, r: int) -> int:
        """Window length in samples at record r's own rate."""
        return int(round(self.window_s * float(self.layout.record_fs[r])))

    def _windows(self, layout: Layout, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
        rec, start, short = [], [], []
        for r in keep:
            w = self._source_window(r)
            count = int(layout.lengths[r]) // w if w > 0 else 0
            if count == 0:
                short.append(int(r))
            rec.extend([r] * count)
            start.extend(range(0, count * w, w))
        return np.asarray(rec, np.int64), np.asarray(start, np.int64), short

    def _qc(self, layout: Layout, check: np.ndarray) -> dict[str, list[int]]:
        key = json.dumps({"v": QC_VERSION, "file": file_fingerprint([self.path]), "qc": dataclasses.asdict(self.qc),
                          "check": hashlib.sha256(np.packbits(check).tobytes()).hexdigest()}, sort_keys=True)
        cache = None
        if self.qc_cache:
            digest = hashlib.sha256(key.encode()).hexdigest()[:16]
            cache = Path(os.path.expanduser(self.qc_cache)) / f"{self.path.stem}-{digest}.json"
            if cache.is_file():
                log.info("QC result read from %s", cache)
                return {k: list(v) for k, v in json.loads(cache.read_text())["reasons"].items()}
        began = time.perf_counter()
        reasons = run_qc(layout, self.qc, check)
        log.info("QC of %d records took %.1f s", int(check.sum()), time.perf_counter() - began)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=cache.name, suffix=".tmp", dir=cache.parent)
            with os.fdopen(fd, "w") as out:
                json.dump({"key": key, "reasons": reasons}, out)
            os.replace(tmp, cache)   # readers see the whole file or none
        return reasons

    # -- lazy reading --
    def _file(self) -> h5py.File:
        """This process's read-only handle, opened on first use (a forked worker opens its own)."""
        if self._h5 is None or self._h5_pid != os.getpid():
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=HANDLE_CACHE_BYTES)
            self._h5_pid = os.getpid()
        return self._h5

    def __getstate__(self):                     # spawned workers get no handle; they open their own
        return {**self.__dict__, "_h5": None, "_h5_pid": None}

    def _read(self, r: int, start: int, stop: int) -> np.ndarray:
        sig = self._file()["signals"]
        try:
            if self.layout.variable:
                x = sig[self.layout.offsets[r] + start:self.layout.offsets[r] + stop]
            else:
                x = sig[r, start:stop]
        except OSError as err:
            raise DataError(f"{self.path}: record {self.layout.ids[r]} unreadable ({err})") from None
        x = np.ascontiguousarray(x.T, dtype=np.float32)
        if not np.isfinite(x).all():          # only within QC's allowance (or with QC off)
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return x

    def load(self, index: int) -> np.ndarray:
        self.records()
        r, start = int(self._rec[index]), int(self._start[index])
        fs_r = float(self.layout.record_fs[r])
        if self.windowing == "windows":
            x = self._read(r, start, start + self._source_window(r))
            if fs_r != self.fs:
                x = crop_or_pad(resample(x, fs_r, self.fs), int(round(self.window_s * self.fs)))
            return np.ascontiguousarray(x)
        x = self._read(r, 0, int(self.layout.lengths[r]))
        return np.ascontiguousarray(resample(x, fs_r, self.fs) if fs_r != self.fs else x)

    def num_samples(self, index: int) -> int:
        self.records()
        if self.windowing == "windows":
            r = int(self._rec[index])
            same = float(self.layout.record_fs[r]) == self.fs
            return self._source_window(r) if same else int(round(self.window_s * self.fs))
        r = int(self._rec[index])
        return resampled_length(int(self.layout.lengths[r]), float(self.layout.record_fs[r]), self.fs)

    def cache_key(self) -> str:
        return json.dumps({"file": file_fingerprint([self.path]), "windowing": self.windowing,
                           "window_s": self.window_s, "fs": self._fs, "fs_policy": self.fs_policy,
                           "qc": dataclasses.asdict(self.qc)}, sort_keys=True)
