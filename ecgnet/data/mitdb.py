"""``mitdb``: the MIT-BIH Arrhythmia Database, one adapter record per annotated heartbeat.

Each source record (48 half-hour, 2-lead, 360 Hz recordings, PhysioNet ``mitdb``) holds
~2,000 beats, each annotated at its R peak in ``<record>.atr``. An adapter record here is
one beat, with id ``"<record>:<sample>"`` (``"100:001234"``, the R-peak sample at the source
rate) and one AAMI EC57 class:

    N (N L R e j)   S (A a J S)   V (V E)   F (F)   Q (/ f Q)

Annotations of other symbols (rhythm ``+``, noise ``~``, ``|``, ``!``, ``"``, ``x``, ``[``,
``]``) are not beats and are ignored.

Beats are cut from the chosen ``lead`` after an optional zero-phase band-pass of the *whole*
record (``bandpass_hz``; the framework's ``preprocess.bandpass_hz`` would filter each 0.7 s
beat on its own, which distorts it, so leave that null) and polyphase resampling of the whole
record to ``fs``:

* ``preset: none``: ``beat_window_s = [before, after]`` seconds around the R peak, in mV (the
  old name ``window_s`` is still read).
* ``preset: kaggle``: the Kaggle "heartbeat" style of Kachuee et al. 2018 (125 Hz, 187 samples,
  amplitude in [0, 1], zero padded); see ``kaggle_beat_lengths`` and experiments/mitdb/README.md
  for the procedure and where it differs from theirs.

A beat whose window crosses the start or end of its record is zero-padded there
(``edge: pad``) or left out and listed in ``skipped`` (``edge: drop``). A beat whose R peak lies
outside the signal the header describes is always left out and listed (``SKIP_OUTSIDE``), never
zero-filled.

File checks: the ``.dat`` size is compared with the header's sample count (wfdb's own rule,
bytes per sample of the format). A ``.dat`` holding more samples than the header says is read as
far as the header says (with a warning naming the file; beats annotated past that end are left
out as above); one holding fewer is truncated, so each of that record's beats fails to load with
a message naming the file, and is counted by the framework. ``strict: true`` makes either an error.

Missing samples (NaN, WFDB's invalid-sample value) are handled before the whole-record band-pass
would spread them over the record: every gap is filled by linear interpolation, and a beat whose
window touches a gap longer than ``max_gap_s`` (default 0.02 s, 7 samples at 360 Hz: a dropout,
not a QRS, which a straight line would erase) fails to load (counted by the framework as
unreadable, with the reason); beats on or next to short gaps are kept. Each affected record is
logged once with its gap counts.

RR-interval features (``rr_features: true``): morphology alone does not separate supraventricular
ectopic beats of unseen patients from normal ones (their QRS looks normal; they come early). Each
beat then also carries ``RR_FEATURES`` (``RecordSet.features``, the model's second input, see
``models.fusion``), computed from the annotated R peaks of all beats of its record as de Chazal
et al. 2004 do: pre-RR and post-RR (s), the local average (the 10 RR intervals around the beat),
the average over the surrounding 5 minutes, and the ratios pre/average, post/average, local/average
and pre/post. ``rr_normalize: patient`` divides each feature by its mean over the beat's record
(the "normalised RR" of Mondéjar-Guerra et al. 2019), so a patient's resting rate does not look
like prematurity; the ratios already are relative.

Splits (``split_mode``):

* ``inter`` (inter-patient, de Chazal et al. 2004): fold 1 = DS1, fold 2 = DS2, the paced
  records 102, 104, 107 and 217 left out; groups are source records, so a record's beats never
  straddle train/val/test. This is the honest benchmark.
* ``intra`` (intra-patient, "Kaggle style"): every beat is its own group, so a *random split
  puts beats of the same patient in train and in test*. The network then mostly recognises
  patients it has already seen, which is why intra-patient scores (~98-99 % accuracy) are far
  higher than inter-patient ones and say little about new patients. Use it only to compare
  with the many papers that report it.

Reading: ``records()`` reads only headers and annotations. ``load(i)`` reads a source record's
signal once, keeps it (filtered and resampled) while the beats of that record are requested in
index order, as the framework does, and then moves to the next record. A source record whose
signal cannot be read makes ``load`` raise a ``DataError`` for each of its beats (read once,
counted per beat by the framework); records without ``lead`` (102 and 104 have no MLII),
with missing files or unreadable header/annotations are left out in ``records()`` and listed
in ``skipped`` by source record name.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import wfdb
from wfdb.io._signal import BYTES_PER_SAMPLE

from ..metrics import aami_metrics, is_aami
from ..registry import DATASETS, ConfigError, DataError
from .base import ECGAdapter, RecordSet
from .cache import file_fingerprint
from .transforms import bandpass, resample, resampled_length

log = logging.getLogger(__name__)

AAMI_CLASSES = ("N", "S", "V", "F", "Q")
AAMI_CLASS_OF = {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N",
                 "A": "S", "a": "S", "J": "S", "S": "S",
                 "V": "V", "E": "V",
                 "F": "F",
                 "/": "Q", "f": "Q", "Q": "Q"}

# de Chazal, O'Dwyer, Reilly 2004, IEEE TBME 51(7):1196-1206, table I.
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201", "203",
       "205", "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213", "214",
       "219", "221", "222", "228", "231", "232", "233", "234")
PACED = ("102", "104", "107", "217")

DEFAULT_BEAT_WINDOW_S = (0.25, 0.45)
KAGGLE_FS = 125.0
KAGGLE_SAMPLES = 187
KAGGLE_RR_WINDOW_S = 10.0      # T is the median RR interval of the 10 s window holding the beat
KAGGLE_PERIODS = 1.2           # a beat runs from its R peak for 1.2 T
RR_FEATURES = ("pre_rr_s", "post_rr_s", "local_rr_s", "average_rr_s", "pre_over_average", "post_over_average",
               "local_over_average", "pre_over_post")
RR_LOCAL_INTERVALS = 10        # de Chazal et al. 2004: the 10 RR intervals around the beat
RR_AVERAGE_WINDOW_S = 300.0    # ... and the RR intervals of the surrounding 5 minutes

SKIP_MISSING = "source record with missing files"
SKIP_UNREADABLE = "source record with unreadable header or annotations"
SKIP_EDGE = "beat window crosses the record edge"
SKIP_OUTSIDE = "beat annotated outside the signal the header describes"
SKIP_PACED = "paced source record (not in DS1/DS2)"
SKIP_NOT_DS = "source record not in DS1/DS2"


def kaggle_beat_lengths(r_peaks: np.ndarray, fs: float) -> np.ndarray:
    """Segment length (samples) of each beat in the Kaggle style: 1.2 x T, at most 187, where T
    is the median RR interval of the beats in the same non-overlapping 10 s window (counted from
    the record start). A window with fewer than two beats uses the record's median RR.

    r_peaks: sorted R-peak positions at ``fs`` (samples)."""
    r_peaks = np.asarray(r_peaks, np.int64)
    rr = np.diff(r_peaks)
    fallback = float(np.median(rr)) if len(rr) else KAGGLE_SAMPLES / KAGGLE_PERIODS
    window = r_peaks // int(round(KAGGLE_RR_WINDOW_S * fs))
    period = np.full(len(r_peaks), fallback)
    for w in np.unique(window):
        members = window == w
        if members.sum() >= 2:
            period[members] = np.median(np.diff(r_peaks[members]))
    return np.minimum(np.round(KAGGLE_PERIODS * period).astype(np.int64), KAGGLE_SAMPLES)


def rr_interval_features(r_peaks: np.ndarray, fs: float, normalize: Literal["none", "patient"] = "none"
                         ) -> np.ndarray:
    """``RR_FEATURES`` of every beat of one record, (beats, 8) float32.

    r_peaks: sorted R-peak samples of all annotated beats of the record, at ``fs``. The first
    beat has no pre-RR and the last no post-RR: each takes its one neighbouring interval. A record
    of one beat has no intervals and gets zeros (nothing to compare with)."""
    t = np.asarray(r_peaks, np.float64) / fs
    n = len(t)
    if n < 2:
        return np.zeros((n, len(RR_FEATURES)), np.float32)
    rr = np.maximum(np.diff(t), 1.0 / fs)             # rr[k]: beat k -> beat k + 1 (two beats on one sample: 1)
    pre = np.concatenate([rr[:1], rr])
    post = np.concatenate([rr, rr[-1:]])
    # local: the mean of the RR_LOCAL_INTERVALS intervals centred on the beat (fewer at the record's ends)
    csum = np.concatenate([[0.0], np.cumsum(rr)])
    lo = np.clip(np.arange(n) - RR_LOCAL_INTERVALS // 2, 0, len(rr))
    hi = np.clip(lo + RR_LOCAL_INTERVALS, 0, len(rr))
    lo = np.maximum(hi - RR_LOCAL_INTERVALS, 0)
    local = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    # average: intervals that start within +-2.5 min of the beat (the whole record when shorter)
    start = np.searchsorted(t[:-1], t - RR_AVERAGE_WINDOW_S / 2, side="left")
    stop = np.searchsorted(t[:-1], t + RR_AVERAGE_WINDOW_S / 2, side="right")
    average = (csum[stop] - csum[start]) / np.maximum(stop - start, 1)
    features = np.stack([pre, post, local, average, pre / average, post / average, local / average, pre / post], 1)
    if normalize == "patient":
        features = features / features.mean(0, keepdims=True)
    return features.astype(np.float32)


def dat_frames(folder: Path, header, file_name: str) -> Optional[int]:
    """Frames (samples per signal) that signal file ``file_name`` of a WFDB ``header`` holds, from
    its size, as wfdb infers a length a header leaves out; None for compressed (FLAC) formats."""
    signals = [k for k, f in enumerate(header.file_name) if f == file_name]
    bytes_per_sample = BYTES_PER_SAMPLE.get(str(header.fmt[signals[0]]), 0)
    if not bytes_per_sample:
        return None
    per_frame = sum((header.samps_per_frame or [1] * len(header.file_name))[k] or 1 for k in signals)
    offset = (header.byte_offset or [0] * len(header.file_name))[signals[0]] or 0
    return int((os.path.getsize(folder / file_name) - offset) // (bytes_per_sample * per_frame))


def gap_runs(missing: np.ndarray) -> np.ndarray:
    """(start, stop) of each run of True in a 1-D boolean array, shape (runs, 2)."""
    edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def minmax01(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a flat segment becomes zeros."""
    low, high = float(x.min()), float(x.max())
    return ((x - low) / (high - low) if high > low else np.zeros_like(x)).astype(np.float32)


@DATASETS.register("mitdb", renamed={"window_s": "beat_window_s"})
class MITDB(ECGAdapter):
    """
    Args:
        root: folder with RECORDS and <record>.hea/.dat/.atr (the PhysioNet layout).
        lead: signal name to cut beats from; records without it are left out (listed in skipped).
        preset: ``none`` (beat_window_s around the R peak, mV) or ``kaggle`` (Kachuee et al. 2018 style).
        beat_window_s: [before, after] the R peak in seconds that make one beat (preset none; default
            [0.25, 0.45]); ``input.window_s`` then defaults to their sum.
        fs: target rate in Hz (default: 360, the source rate; 125 with the kaggle preset).
        edge: ``pad`` (zero-pad beats at a record edge) or ``drop`` (leave them out).
        bandpass_hz: [low, high] zero-phase Butterworth on the whole record before cutting; null = off.
        split_mode: ``inter`` (DS1 = fold 1, DS2 = fold 2, grouped by record) or ``intra``
            (beats grouped individually: a random split mixes each patient's beats).
        record_names: only these source records (default: all in RECORDS).
        max_gap_s: missing (NaN) runs up to this long are interpolated and their beats kept; beats
            touching a longer run are dropped (counted).
        strict: a bad file is an error instead of a counted skip.
        rr_features: give each beat ``RR_FEATURES`` from the annotated R peaks (the model's second input).
        rr_normalize: ``patient`` divides each RR feature by its mean over the beat's record; ``none``.
        beat_template: add a second input lead, ``<lead>_template``: the sample-wise median of all the
            record's beats (cut as the beat is), i.e. the patient's dominant beat. The model then sees
            each beat beside its own patient's usual beat, a patient-relative view of morphology for
            inter-patient work (preset none only).
    """

    def __init__(self, root: str, lead: str = "MLII", preset: Literal["none", "kaggle"] = "none",
                 beat_window_s: Optional[Sequence[float]] = None, fs: Optional[float] = None,
                 edge: Literal["pad", "drop"] = "pad", bandpass_hz: Optional[Sequence[float]] = None,
                 filter_order: int = 3, split_mode: Literal["intra", "inter"] = "inter",
                 record_names: Optional[Sequence[str]] = None, max_gap_s: float = 0.02, strict: bool = False,
                 rr_features: bool = False, rr_normalize: Literal["none", "patient"] = "none",
                 beat_template: bool = False):
        if preset == "kaggle":
            if beat_window_s is not None:
                raise ConfigError("data.beat_window_s: the kaggle preset cuts R peak -> R peak + 1.2 x median RR "
                                  "(187 samples); remove beat_window_s or use preset: none")
            if fs is not None and fs != KAGGLE_FS:
                raise ConfigError(f"data.fs: the kaggle preset is defined at {KAGGLE_FS:g} Hz; remove fs")
        beat_window_s = tuple(DEFAULT_BEAT_WINDOW_S if beat_window_s is None else beat_window_s)
        if len(beat_window_s) != 2 or min(beat_window_s) < 0 or sum(beat_window_s) <= 0:
            raise ConfigError(f"data.beat_window_s: give [before, after] seconds around the R peak, "
                              f"got {list(beat_window_s)}")
        if fs is not None and fs <= 0:
            raise ConfigError(f"data.fs: must be positive, got {fs}")
        if bandpass_hz is not None and len(bandpass_hz) != 2:
            raise ConfigError(f"data.bandpass_hz: give [low, high] in Hz or null, got {bandpass_hz}")
        if max_gap_s < 0:
            raise ConfigError(f"data.max_gap_s: must be 0 or more seconds, got {max_gap_s}")
        if rr_normalize not in ("none", "patient"):
            raise ConfigError(f"data.rr_normalize: none or patient, got {rr_normalize!r}")
        if rr_normalize != "none" and not rr_features:
            raise ConfigError("data.rr_normalize: set data.rr_features: true as well (there is nothing to normalise)")
        self.rr_features, self.rr_normalize = bool(rr_features), rr_normalize
        if beat_template and preset == "kaggle":
            raise ConfigError("data.beat_template: the kaggle preset's beats differ in length (1.2 x the local RR); "
                              "use preset: none, or beat_template: false")
        self.beat_template = bool(beat_template)
        self._templates: dict[int, np.ndarray] = {}    # source index -> median beat
        self.root = Path(os.path.expanduser(root))
        self.lead, self.preset, self.edge, self.split_mode = lead, preset, edge, split_mode
        self.fs = KAGGLE_FS if preset == "kaggle" else float(fs or 360.0)
        if preset == "kaggle":
            self.signal_units = "normalized"   # beats scaled to [0, 1] as the published CSVs
        self.bandpass_hz = None if bandpass_hz is None else [float(f) for f in bandpass_hz]
        self.filter_order, self.strict, self.max_gap_s = filter_order, strict, float(max_gap_s)
        self.record_names = None if record_names is None else [str(r) for r in record_names]
        if preset == "kaggle":
            self.before, self.length = 0, KAGGLE_SAMPLES
        else:
            self.before = int(round(beat_window_s[0] * self.fs))
            self.length = self.before + int(round(beat_window_s[1] * self.fs))
        self.beat_window_s = None if preset == "kaggle" else list(beat_window_s)
        self.record_length_s = self.length / self.fs
        self._records: Optional[RecordSet] = None
        self._sources: list[dict] = []          # per source record: name, path, fs, dat file
        self._current: tuple[int, object] = (-1, None)   # (source index, (signal, long-gap count) or DataError)

    # ---- record list ----
    def records(self) -> RecordSet:
        if self._records is None:
            self._records = self._scan()
        return self._records

    def _names(self) -> list[str]:
        if not self.root.is_dir():
            raise DataError(f"{self.root}: MIT-BIH Arrhythmia Database not found; "
                            "download it with experiments/mitdb/setup.sh")
        listing = self.root / "RECORDS"
        if not listing.is_file():
            raise DataError(f"{listing}: not found; the folder is not a complete mitdb download, "
                            "rerun experiments/mitdb/setup.sh")
        names = listing.read_text().split()
        if self.record_names is not None:
            unknown = sorted(set(self.record_names) - set(names))
            if unknown:
                raise ConfigError(f"data.record_names: {unknown} not listed in {listing}")
            names = [n for n in names if n in self.record_names]
        return names

    def _select(self, names: list[str], skipped: dict) -> list[str]:
        if self.split_mode == "intra":
            return names
        for reason, left in ((SKIP_PACED, [n for n in names if n in PACED]),
                             (SKIP_NOT_DS, [n for n in names if n not in PACED + DS1 + DS2])):
            if left:
                skipped.setdefault(reason, []).extend(left)
        return [n for n in names if n in DS1 + DS2]

    def _read_meta(self, name: str, skipped: dict):
        """-> (header, annotation), or None when the record is left out (and listed in skipped)."""
        path = self.root / name
        missing = [f"{name}{ext}" for ext in (".hea", ".atr") if not (self.root / f"{name}{ext}").is_file()]
        header = None
        if not missing:
            try:
                header = wfdb.rdheader(str(path))
                annotation = wfdb.rdann(str(path), "atr")
            except (OSError, ValueError) as err:
                if self.strict:
                    raise DataError(f"{path}.hea/.atr: unreadable ({err})") from None
                log.warning("%s.hea/.atr: unreadable (%s); leaving record %s out", path, err, name)
                skipped.setdefault(SKIP_UNREADABLE, []).append(name)
                return None
            missing = [f for f in header.file_name if not (self.root / f).is_file()]
        if missing:
            if self.strict:
                raise DataError(f"{self.root}: {', '.join(missing)} missing; rerun experiments/mitdb/setup.sh")
            skipped.setdefault(SKIP_MISSING, []).append(name)
            return None
        if self.lead not in header.sig_name:
            skipped.setdefault(f"source record without lead {self.lead}", []).append(name)
            return None
        dat = header.file_name[header.sig_name.index(self.lead)]
        frames = dat_frames(self.root, header, dat)
        if frames is not None and frames != header.sig_len:
            problem = f"{self.root / dat}: holds {frames} samples per signal, {name}.hea says {header.sig_len}"
            if self.strict:
                raise DataError(f"{problem}; restore both files with experiments/mitdb/setup.sh")
            log.warning("%s; %s", problem, "only the header's samples are read" if frames > header.sig_len
                        else "the file is truncated, so the beats of the record fail to load")
        return header, annotation, frames

    def _beats(self, name: str, header, annotation) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray,
                                                             np.ndarray]:
        """-> (ids, AAMI class index, start, stop, R peak at the source rate) of the record's beats;
        start/stop at self.fs."""
        symbols = np.asarray(annotation.symbol)
        is_beat = np.isin(symbols, list(AAMI_CLASS_OF))
        samples = np.asarray(annotation.sample, np.int64)[is_beat]
        labels = np.array([AAMI_CLASSES.index(AAMI_CLASS_OF[s]) for s in symbols[is_beat]], np.int64)
        r_peaks = np.round(samples * self.fs / header.fs).astype(np.int64)
        if self.preset == "kaggle":
            start, stop = r_peaks, r_peaks + kaggle_beat_lengths(r_peaks, self.fs)
        else:
            start = r_peaks - self.before
            stop = start + self.length
        ids = [f"{name}:{s:06d}" for s in samples]
        return ids, labels, start, stop, samples

    def _scan(self) -> RecordSet:
        skipped: dict = {}
        names = self._select(self._names(), skipped)
        ids, groups, labels, folds, source, start, stop, rr = [], [], [], [], [], [], [], []
        for name in names:
            meta = self._read_meta(name, skipped)
            if meta is None:
                continue
            header, annotation, frames = meta
            beat_ids, beat_labels, beat_start, beat_stop, peaks = self._beats(name, header, annotation)
            # a beat annotated where the decoded signal has no samples would be all zeros with a real label
            keep = (peaks >= 0) & (peaks < header.sig_len)
            if not keep.all():
                problem = (f"{self.root / name}.atr: {int((~keep).sum())} beat(s) annotated outside the "
                           f"{header.sig_len} samples of {name}.hea")
                if self.strict:
                    raise DataError(f"{problem}; restore the files with experiments/mitdb/setup.sh")
                log.warning("%s; left out", problem)
                skipped.setdefault(SKIP_OUTSIDE, []).extend(i for i, k in zip(beat_ids, keep) if not k)
            if self.edge == "drop":
                n_out = resampled_length(header.sig_len, header.fs, self.fs)
                inside = keep & (beat_start >= 0) & (beat_stop <= n_out)
                at_edge = keep & ~inside
                if at_edge.any():
                    skipped.setdefault(SKIP_EDGE, []).extend(i for i, k in zip(beat_ids, at_edge) if k)
                keep = inside
            if self.rr_features:       # from all of the record's beats, before any is left out
                rr.append(rr_interval_features(peaks, header.fs, self.rr_normalize)[keep])
            kept_ids = [i for i, k in zip(beat_ids, keep) if k]
            ids += kept_ids
            groups += kept_ids if self.split_mode == "intra" else [name] * len(kept_ids)
            folds += [1 if name in DS1 else 2] * len(kept_ids)
            labels.append(beat_labels[keep])
            source += [len(self._sources)] * len(kept_ids)
            start.append(beat_start[keep])
            stop.append(beat_stop[keep])
            self._sources.append({"name": name, "path": self.root / name, "fs": float(header.fs),
                                  "sig_len": int(header.sig_len), "frames": frames,
                                  "files": list(header.file_name)})
        if not ids:
            raise DataError(f"{self.root}: no beats found (lead {self.lead}, split_mode {self.split_mode}); "
                            f"left out: { {k: len(v) for k, v in skipped.items()} }")
        self._source = np.asarray(source, np.int64)
        self._start, self._stop = np.concatenate(start), np.concatenate(stop)
        return RecordSet(ids=ids, groups=groups, labels=np.concatenate(labels), class_names=list(AAMI_CLASSES),
                         fs=self.fs, leads=[self.lead] + ([f"{self.lead}_template"] if self.beat_template else []),
                         folds=np.asarray(folds, np.int64) if self.split_mode == "inter" else None,
                         skipped=skipped, features=np.concatenate(rr) if self.rr_features else None,
                         feature_names=list(RR_FEATURES) if self.rr_features else None)

    # ---- signals ----
    def _signal(self, src: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(lead of source record ``src`` band-passed and resampled to self.fs, cumulative count of
        long-gap samples at the source rate or None); read once per record."""
        if self._current[0] != src:
            self._current = (src, self._read_signal(self._sources[src]))
        signal = self._current[1]
        if isinstance(signal, DataError):
            raise signal
        return signal

    def _read_signal(self, meta: dict):
        path = meta["path"]
        if meta["frames"] is not None and meta["frames"] < meta["sig_len"]:
            # wfdb would fail with a numpy broadcast error; say what is wrong instead
            return DataError(f"{path}.dat: holds {meta['frames']} samples, the header says {meta['sig_len']}; "
                             "the file is truncated, restore it with experiments/mitdb/setup.sh")
        try:
            record = wfdb.rdrecord(str(path), channel_names=[self.lead])
        except (OSError, ValueError) as err:
            return DataError(f"{path}.dat: unreadable ({err})")
        if record.p_signal is None or record.p_signal.shape != (meta["sig_len"], 1):
            got = None if record.p_signal is None else record.p_signal.shape[0]
            return DataError(f"{path}.dat: {got} samples of {self.lead}, header says {meta['sig_len']}")
        x = record.p_signal[:, 0].astype(np.float64)
        long_gaps = None
        missing = ~np.isfinite(x)
        if missing.any():
            if missing.all():
                return DataError(f"{path}.dat: every {self.lead} sample is missing (NaN)")
            # fill every gap so the band-pass and resampling do not spread NaN over the whole record;
            # beats touching a gap longer than max_gap_s are dropped in load()
            t = np.arange(len(x))
            x[missing] = np.interp(t[missing], t[~missing], x[~missing])
            runs = gap_runs(missing)
            lengths = runs[:, 1] - runs[:, 0]
            long = runs[lengths > self.max_gap_s * meta["fs"]]
            in_long = np.zeros(len(x), np.int64)
            for a, b in long:
                in_long[a:b] = 1
            long_gaps = np.concatenate([[0], np.cumsum(in_long)])
            log.info("%s.dat: %d missing (NaN) sample(s) of %s in %d gap(s): %d gap(s) up to %g s interpolated, "
                     "beats touching the %d longer one(s) are dropped", path, int(missing.sum()), self.lead,
                     len(runs), len(runs) - len(long), self.max_gap_s, len(long))
        x = x[None].astype(np.float32)
        if self.bandpass_hz is not None:
            x = bandpass(x, meta["fs"], self.bandpass_hz[0], self.bandpass_hz[1], self.filter_order)
        return resample(x, meta["fs"], self.fs)[0], long_gaps

    def load(self, index: int) -> np.ndarray:
        """Beat ``index`` as float32 (1, samples): mV (preset none) or [0, 1] (kaggle), zero-padded;
        with ``beat_template``, (2, samples): the beat, then its record's median beat."""
        beat = self._beat(index)
        if not self.beat_template:
            return beat
        return np.concatenate([beat, self._template(int(self._source[index]))])

    def _template(self, src: int) -> np.ndarray:
        """(1, samples) sample-wise median of the beats of source record ``src`` (those that load)."""
        if src not in self._templates:
            beats = []
            for i in np.flatnonzero(self._source == src):
                try:
                    beats.append(self._beat(int(i)))
                except DataError:      # counted where that beat itself is loaded
                    continue
            if not beats:
                raise DataError(f"{self._sources[src]['path']}.dat: no beat of the record loads, so it has no "
                                "template beat")
            self._templates[src] = np.median(np.stack(beats), axis=0).astype(np.float32)
        return self._templates[src]

    def _beat(self, index: int) -> np.ndarray:
        self.records()
        src = int(self._source[index])
        signal, long_gaps = self._signal(src)
        start, stop = int(self._start[index]), int(self._stop[index])
        if long_gaps is not None:      # the window, at the source rate and clipped to the record
            ratio = self._sources[src]["fs"] / self.fs
            a = min(max(int(np.floor(start * ratio)), 0), len(long_gaps) - 1)
            b = min(max(int(np.ceil(stop * ratio)), 0), len(long_gaps) - 1)
            if long_gaps[b] > long_gaps[a]:
                raise DataError(f"{self._sources[src]['path']}.dat: beat {self._records.ids[index]} touches a "
                                f"gap of missing samples longer than max_gap_s {self.max_gap_s:g} s")
        segment = signal[max(start, 0):min(stop, len(signal))]
        if not len(segment):           # never a zero-filled beat with a real label
            raise DataError(f"{self._sources[src]['path']}.dat: beat {self._records.ids[index]} lies outside "
                            "the decoded signal")
        if self.preset == "kaggle":
            segment = minmax01(segment)
        out = np.zeros((1, self.length), np.float32)
        offset = max(-start, 0)
        out[0, offset:offset + len(segment)] = segment[:self.length - offset]
        return out

    def cache_key(self) -> str:
        self.records()
        files = [self.root / "RECORDS"]
        for meta in self._sources:
            files += [self.root / f"{meta['name']}.hea", self.root / f"{meta['name']}.atr"]
            files += [self.root / f for f in meta["files"]]
        settings = {"lead": self.lead, "preset": self.preset, "fs": self.fs, "beat_window_s": self.beat_window_s,
                    "edge": self.edge, "bandpass_hz": self.bandpass_hz, "filter_order": self.filter_order,
                    "split_mode": self.split_mode, "record_names": self.record_names,
                    "max_gap_s": self.max_gap_s, "beat_template": self.beat_template, "version": 2}
        return json.dumps({"files": file_fingerprint(sorted(set(files))), "settings": settings}, sort_keys=True)

    def dataset_metrics(self, y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray) -> dict:
        """SVEB/VEB sensitivity, +P and FPR as inter-patient papers report them (AAMI classes only)."""
        names = self.records().class_names
        return aami_metrics(y_true, decisions, names) if is_aami(names, False) else {}


def export_kaggle_csv(root: str, out_dir: str, split_mode: Literal["intra", "inter"] = "intra",
                      lead: str = "MLII", test_fraction: float = 0.2, seed: int = 0) -> dict:
    """Write mitbih_train.csv / mitbih_test.csv (187 values in [0, 1] + AAMI label per row, the
    Kaggle heartbeat format) from raw mitdb with the ``kaggle`` preset, plus ``<file>.ids`` (one
    beat id per row). ``inter``: DS1 -> train, DS2 -> test; ``intra``: a stratified random
    ``test_fraction`` of all beats -> test. Returns {"files": {file: [beat ids]}, "class_counts":
    {file: [N, S, V, F, Q]}, "skipped": {reason: [ids]}}."""
    from sklearn.model_selection import train_test_split

    from .kaggle_csv import write_kaggle_csv

    adapter = MITDB(root, lead=lead, preset="kaggle", split_mode=split_mode)
    records = adapter.records()
    beats, kept, failed = [], [], {}
    for i, beat_id in enumerate(records.ids):
        try:
            beats.append(adapter.load(i)[0])
            kept.append(i)
        except DataError as err:
            failed[beat_id] = str(err)
    kept = np.asarray(kept, np.int64)
    if not len(kept):
        raise DataError(f"{root}: no readable beats to export")
    labels = records.labels[kept]
    if split_mode == "inter":
        test_mask = records.folds[kept] == 2
    else:
        _, test_pos = train_test_split(np.arange(len(kept)), test_size=test_fraction, stratify=labels,
                                       random_state=seed)
        test_mask = np.isin(np.arange(len(kept)), test_pos)
    out, written, counts = Path(out_dir), {}, {}
    out.mkdir(parents=True, exist_ok=True)
    x = np.stack(beats)
    for name, mask in (("mitbih_train.csv", ~test_mask), ("mitbih_test.csv", test_mask)):
        write_kaggle_csv(out / name, x[mask], labels[mask])
        written[name] = [records.ids[i] for i in kept[mask]]
        counts[name] = np.bincount(labels[mask], minlength=len(AAMI_CLASSES)).tolist()
        (out / f"{name}.ids").write_text("\n".join(written[name]) + "\n")
    return {"files": written, "class_counts": counts,
            "skipped": {**records.skipped, **({"unreadable": list(failed)} if failed else {})}}
