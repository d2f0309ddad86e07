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

* ``windowing: windows`` (default) cuts each record into non-overlapping segments of
  ``segment_s`` seconds (any remainder is dropped; ``window_s`` is the old name of the setting,
  still read); a segment is one sample with its record's labels, id ``<record_id>#w<k>`` (k from
  0) and its record's patient as group. Records shorter than one segment are listed in
  ``skipped["shorter than one window"]``. ``windowing: full`` serves whole records of any length;
  ``input.window_s`` then takes random crops in training and sliding windows in evaluation.
* ``fs``: the standard rate (default: the file's ``fs`` attribute). A record at another rate
  (``/fs``) is resampled to it (``fs_policy: resample``, polyphase) or left out
  (``fs_policy: reject``, ``skipped["qc: non-standard fs"]``).
* ``qc``: signal quality control (:mod:`ecgnet.data.qc`: missing or flat lead, NaN/inf samples,
  amplitude artefact, high-frequency noise, empty record), one streaming pass over the file in
  ``records()`` (:mod:`ecgnet.data.hdf5_qc`: a block of records at a time, never the whole file);
  each rejected record is listed under its first failing reason in ``RecordSet.skipped`` (logged
  with counts).
  ``enabled: false`` turns it off (empty records are still left out). The result is cached as a
  small JSON file in ``qc_cache`` keyed by the file's fingerprint (name, size, mtime) and the QC
  settings. With ``strict: true`` any rejected record is an error.

Reading is lazy (``lazy = True``): ``load(i)`` reads one record or segment from the file and
``load_span(i, start, stop)`` only part of it, plus what resampling it needs (training crops and
evaluation windows of long records, with the band-pass margin ``dataset.LazySignals`` adds), and
nothing is kept, so memory stays flat however large the file; each process (DataLoader worker)
opens its own read-only file handle on first access. :mod:`ecgnet.data.hdf5_layout` checks the
file against the layout.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Literal, Optional

import h5py
import numpy as np

from ..registry import DATASETS, ConfigError, DataError
from .base import ECGAdapter, RecordSet
from .cache import file_fingerprint
from .hdf5_layout import PACK_HINT, Layout, read_layout
from .hdf5_qc import qc_reasons
# the reasons are re-exported: hdf5.REASON_* name the keys of RecordSet.skipped
from .qc import (REASON_AMPLITUDE, REASON_EMPTY, REASON_FLAT, REASON_FS, REASON_HF,  # noqa: F401
                 REASON_NONFINITE, QCSettings)
from .transforms import crop_or_pad, resample_span, resampled_length

log = logging.getLogger(__name__)

HANDLE_CACHE_BYTES = 4 << 20       # h5py chunk cache per open file

REASON_SHORT = "shorter than one window"


@DATASETS.register("hdf5", renamed={"window_s": "segment_s"})
class HDF5Dataset(ECGAdapter):
    """
    Args:
        root: the .h5 file (ecgnet layout, see the module docstring).
        windowing: ``windows`` (non-overlapping ``segment_s`` segments, ids ``<record>#w<k>``) or
            ``full`` (whole records, any length).
        segment_s: length in seconds of the segments each record is cut into with
            ``windowing: windows`` (not what the network sees: that is ``input.window_s``).
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

    def __init__(self, root: str, windowing: Literal["windows", "full"] = "windows", segment_s: float = 10.0,
                 fs: Optional[float] = None, fs_policy: Literal["resample", "reject"] = "resample",
                 qc: Optional[dict] = None, qc_cache: Optional[str] = "~/.cache/ecgnet/hdf5-qc",
                 strict: bool = False, eval_unit: Literal["patient", "record"] = "patient"):
        if segment_s <= 0:
            raise ConfigError(f"data.segment_s: must be > 0 seconds, got {segment_s}")
        if fs is not None and fs <= 0:
            raise ConfigError(f"data.fs: must be > 0 Hz or null, got {fs}")
        self.qc = QCSettings.from_cfg(qc)
        self.path = Path(os.path.expanduser(root))
        if not self.path.is_file():
            raise DataError(f"{root}: HDF5 file not found; {PACK_HINT}")
        self.windowing, self.segment_s, self.fs_policy, self.strict = windowing, segment_s, fs_policy, strict
        self.qc_cache, self.eval_unit = qc_cache, eval_unit
        self._fs = fs
        self.record_length_s = segment_s if windowing == "windows" else None
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
            for reason, idx in qc_reasons(layout, self.qc, check, self.qc_cache).items():
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
            rec, start, short = self._segments(layout, keep)
            if short:
                skipped[REASON_SHORT] = [layout.ids[i] for i in short]
            self.record_length_s = self.segment_s
        else:
            rec, start = keep, np.zeros(len(keep), np.int64)
            same = not nonstandard.any() and not layout.variable
            self.record_length_s = float(layout.lengths[0] / self.fs) if same and layout.n else None
        self._rec, self._start = rec.astype(np.int64), start.astype(np.int64)
        if self.windowing == "windows":
            ids = [f"{layout.ids[r]}#w{s // self._source_segment(r)}" for r, s in zip(rec, start)]
        else:
            ids = [layout.ids[r] for r in rec]
        if not ids:
            counts = ", ".join(f"{len(v)} {k}" for k, v in skipped.items())
            raise DataError(f"{self.path}: no record left of {layout.n} ({counts}); check the file, "
                            f"relax data.qc or shorten data.segment_s")
        groups = layout.patient_ids or layout.ids
        log.info("%s: %d of %d records pass QC%s", self.path, len(keep), layout.n,
                 f"; {len(ids)} segments of {self.segment_s:g} s" if self.windowing == "windows" else "")
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

    def _source_segment(self, r: int) -> int:
        """Segment length in samples at record r's own rate."""
        return int(round(self.segment_s * float(self.layout.record_fs[r])))

    def _segments(self, layout: Layout, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(record, start in samples at its own rate) of every segment, and the records too short for one."""
        rec, start, short = [], [], []
        for r in keep:
            w = self._source_segment(r)
            count = int(layout.lengths[r]) // w if w > 0 else 0
            if count == 0:
                short.append(int(r))
            rec.extend([r] * count)
            start.extend(range(0, count * w, w))
        return np.asarray(rec, np.int64), np.asarray(start, np.int64), short

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
        return self.load_span(index, 0, self.num_samples(index))

    def load_span(self, index: int, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) (at ``fs``) of item ``index``, reading only those from the file, or
        the source samples they are resampled from when the record has another rate."""
        self.records()
        r, offset = int(self._rec[index]), int(self._start[index])    # offset: segment start at r's rate
        stop = min(stop, self.num_samples(index))
        source_length = self._source_segment(r) if self.windowing == "windows" else int(self.layout.lengths[r])
        x = resample_span(lambda a, b: self._read(r, offset + a, offset + b), source_length, start, stop,
                          float(self.layout.record_fs[r]), self.fs)
        # a resampled segment a sample short of segment_s * fs is zero-padded, as num_samples says
        return np.ascontiguousarray(crop_or_pad(x, stop - start))

    def num_samples(self, index: int) -> int:
        self.records()
        r = int(self._rec[index])
        if self.windowing == "windows":
            same = float(self.layout.record_fs[r]) == self.fs
            return self._source_segment(r) if same else int(round(self.segment_s * self.fs))
        return resampled_length(int(self.layout.lengths[r]), float(self.layout.record_fs[r]), self.fs)

    def cache_key(self) -> str:
        return json.dumps({"file": file_fingerprint([self.path]), "windowing": self.windowing,
                           "segment_s": self.segment_s, "fs": self._fs, "fs_policy": self.fs_policy,
                           "qc": dataclasses.asdict(self.qc)}, sort_keys=True)
