"""From an adapter to tensors: load + preprocess each record once, then serve windows.

``TrainWindows`` yields one random window per draw (augmented); ``EvalWindows``
enumerates sliding windows over whole records, which ``engine.predict`` averages
back to one prediction per record.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
import torch.utils.data
from tqdm import tqdm

from ..registry import DataError
from .base import ECGAdapter, RecordSet
from .cache import CacheWriteError, InvalidEntry, cache_dir_for, code_fingerprint, read_cache, write_cache
from .qc import PREPROCESS_DEFAULTS, QCSettings, qc_record
from .qc import REASONS as QC_REASONS
from .transforms import (Normalizer, crop_or_pad, crop_start, preprocess, preprocess_span, resampled_length,
                         window_starts)

log = logging.getLogger(__name__)


def _read_each(adapter: ECGAdapter, fs: float, cfg: dict, qc: QCSettings, physical: bool, progress: bool):
    """Yield (id, preprocessed signal or None, failure reason or None) per record. A record that
    cannot be read, or fails QC (``qc``, at the source rate, before any preprocessing; the reason is
    one of ``qc.REASONS``), is a failure unless the adapter is strict, which makes it an error."""
    records = adapter.records()
    leads, patched = len(records.leads), 0
    for i in tqdm(range(len(records.ids)), desc="reading records", disable=not progress, leave=False):
        rid = records.ids[i]
        try:
            x = adapter.load(i)
            if x.ndim != 2 or x.shape[0] != leads:
                raise DataError(f"record {rid}: expected ({leads} leads, samples), got shape {x.shape}")
            reason = qc_record(x.T, records.fs, qc, physical)
            if reason and adapter.strict:
                raise DataError(f"record {rid} fails QC ({reason}); fix it, relax preprocess.qc "
                                "or set data.strict: false")
        except DataError as err:
            if adapter.strict:
                raise
            yield rid, None, str(err)
            continue
        if reason:
            yield rid, None, reason
            continue
        if not np.isfinite(x).all():              # within QC's allowance, or QC off: served as 0
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
            patched += 1
        y = np.ascontiguousarray(preprocess(x, fs, cfg), dtype=np.float32)
        if not np.isfinite(y).all():              # never cache (or train on) NaN/inf
            error = f"record {rid}: preprocessing produced NaN/inf; check preprocess.fs and preprocess.bandpass_hz"
            if adapter.strict:
                raise DataError(error)
            yield rid, None, error
            continue
        yield rid, y, None
    if patched:
        log.warning("%d record(s) have NaN/inf samples that preprocess.qc lets through; they are served as 0",
                    patched)


class LazySignals(Sequence):
    """Records read on access, for adapters too large to load or cache (``adapter.lazy``).

    ``signals[i]`` reads and preprocesses record i; ``window(i, start, stop)`` only the samples
    [start, stop) of it, reading and filtering just the span they depend on (``preprocess_span``:
    the window plus the band-pass settling margin, through ``adapter.load_span``), so a crop of a
    long record costs about the crop, not the record; ``length(i)`` gives its length after
    resampling without reading it (from ``adapter.num_samples(i)``). Nothing is kept, so memory
    stays flat however large the file; each DataLoader worker reads through the adapter, which
    must open its own file handle per process.
    """

    def __init__(self, adapter: ECGAdapter, cfg: dict):
        self.adapter, self.cfg = adapter, cfg
        self.fs_in = adapter.records().fs
        self.fs_out = cfg["fs"] or self.fs_in

    def __len__(self) -> int:
        return len(self.adapter.records().ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return preprocess(self.adapter.load(int(i)), self.fs_in, self.cfg)

    def window(self, i: int, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of ``self[i]`` (to its end at most); equal to cutting the whole
        preprocessed record to about ``transforms.SETTLE_TOLERANCE`` of the signal's amplitude."""
        i = int(i)
        stop = min(stop, self.length(i))
        return preprocess_span(lambda a, b: self.adapter.load_span(i, a, b), self.adapter.num_samples(i),
                               self.fs_in, self.cfg, start, stop)

    def length(self, i: int) -> int:
        return resampled_length(self.adapter.num_samples(int(i)), self.fs_in, self.fs_out)


def record_length(signals: Sequence[np.ndarray], i: int) -> int:
    """Samples in record i, without reading it when the signals are lazy."""
    return signals.length(i) if isinstance(signals, LazySignals) else signals[i].shape[1]


def record_window(signals: Sequence[np.ndarray], i: int, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of record i (to its end at most); a lazy record is read only around them."""
    return signals.window(i, start, stop) if isinstance(signals, LazySignals) else signals[i][:, start:stop]


def load_signals(adapter: ECGAdapter, cfg: dict, dataset: str = "data",
                 progress: bool = False) -> tuple[RecordSet, Sequence[np.ndarray]]:
    """Every readable record that passes QC, preprocessed per the ``preprocess`` section, as
    float32 (leads, samples), with the RecordSet reduced to those records.

    QC (``cfg["qc"]``, see ``ecgnet.data.qc``; a dict without the key, as built by hand, checks
    nothing) runs on each record as it is read. With a ``preprocess.cache_dir`` and an adapter that
    has a ``cache_key``, the result is read from (or first written to) the memory-mapped cache.
    Unreadable records and records that fail QC are skipped, listed in ``RecordSet.skipped`` by
    reason and logged with counts (an error when the adapter is strict).
    """
    records = adapter.records()
    if adapter.lazy:                 # the adapter checked its records when it listed them
        return records, LazySignals(adapter, cfg)
    qc = QCSettings.from_cfg(cfg["qc"], "preprocess.qc", **PREPROCESS_DEFAULTS) if "qc" in cfg \
        else QCSettings(enabled=False)
    physical = adapter.signal_units == "mV"   # the QC thresholds are in mV

    def read():
        return _read_each(adapter, records.fs, cfg, qc, physical, progress)

    key = adapter.cache_key()
    cached = None
    if cfg.get("cache_dir") and key:
        path = cache_dir_for(cfg["cache_dir"], dataset, key, cfg, code_fingerprint(adapter),
                             qc={**dataclasses.asdict(qc), "physical": physical})
        cached = _cached(path, records, read)
    if cached is not None:
        signals, failed = cached
    else:
        signals, failed = [], {}
        for rid, x, reason in read():
            signals.append(x)
            if x is None:
                failed[rid] = reason
    if failed:
        records, signals = _leave_out(adapter, records, signals, failed)
    return records, signals


def _cached(path: Path, records: RecordSet, read: Callable) -> Optional[tuple[list[np.ndarray], dict]]:
    """The verified cache entry at ``path``, built first when it is absent or unusable; None (with a
    warning) when the cache folder cannot take it, so the caller reads without the cache."""
    ids, leads = list(records.ids), len(records.leads)
    try:
        cached = read_cache(path, ids, leads)
    except InvalidEntry as why:
        log.warning("cache entry %s is unusable: %s; rebuilding it", path, why)
        cached = None
    if cached is not None:
        log.info("read %d preprocessed records from the cache %s", len(ids), path)
        return cached
    try:
        write_cache(path, read(), leads)
        cached, why = read_cache(path, ids, leads), "another process removed it meanwhile"
    except (CacheWriteError, InvalidEntry) as err:     # InvalidEntry: another process replaced it meanwhile
        cached, why = None, err
    if cached is None:
        log.warning("preprocess.cache_dir: cannot write the cache entry %s (%s); reading the records without "
                    "the cache this run. Make the folder writable, point preprocess.cache_dir at a writable "
                    "folder, or set it to null", path, why)
        return None
    log.info("preprocessed %d records into the cache %s", len(ids), path)
    return cached


def _leave_out(adapter: ECGAdapter, records: RecordSet, signals: Sequence, failed: dict):
    """Drop the records in ``failed`` ({id: reason}), listed in ``skipped`` under their QC reason or
    ``unreadable``, with one warning line per kind."""
    if adapter.strict:               # only a cache built without strict holds failures
        rid, reason = next(iter(failed.items()))
        raise DataError(f"{len(failed)} record(s) could not be read or fail QC (cached from an earlier run), "
                        f"e.g. {rid}: {reason}; fix them, relax preprocess.qc or set data.strict: false")
    unreadable = [reason for reason in failed.values() if reason not in QC_REASONS]
    if unreadable:
        log.warning("skipped %d unreadable record(s): %s%s", len(unreadable), "; ".join(unreadable[:5]),
                    " ..." if len(unreadable) > 5 else "")
    by_reason: dict[str, list[str]] = {}
    for rid in records.ids:                      # dataset order
        if rid in failed:
            by_reason.setdefault(failed[rid] if failed[rid] in QC_REASONS else "unreadable", []).append(rid)
    rejected = {reason: rids for reason, rids in by_reason.items() if reason in QC_REASONS}
    if rejected:
        counts = [f"{len(rids)} {reason} (e.g. {', '.join(rids[:3])})" for reason, rids in rejected.items()]
        log.warning("QC rejected %d of %d record(s): %s", sum(map(len, rejected.values())), len(records.ids),
                    "; ".join(counts))
    keep = np.array([i for i, rid in enumerate(records.ids) if rid not in failed], dtype=np.int64)
    if not len(keep):
        counts = ", ".join(f"{len(rids)} {reason}" for reason, rids in by_reason.items())
        raise DataError(f"no record left of {len(records.ids)} ({counts}); check the data (the log names each "
                        "record) or relax preprocess.qc")
    kept = records.select(keep)
    for reason, rids in by_reason.items():
        kept.skipped.setdefault(reason, []).extend(rids)
    return kept, [signals[i] for i in keep]


class TrainWindows(torch.utils.data.Dataset):
    """Training draws: position p -> a random crop of record index[p % n], augmented, its target
    (and its features when the records have them).

    Randomness comes from a generator seeded by (seed, epoch, p), so a batch is the
    same whichever worker builds it and whether or not the run was resumed.
    """

    def __init__(self, signals: Sequence[np.ndarray], targets: np.ndarray, index: np.ndarray,
                 window: int, normalizer: Normalizer, augment: Sequence[Callable] = (),
                 duplicate_noise_std: float = 0.0, seed: int = 0, pad: bool = True,
                 features: Optional[np.ndarray] = None):
        self.signals, self.targets, self.index = signals, targets, index
        self.features = features  # per record (RecordSet.features), served as a third item
        self.window, self.normalizer, self.augment = window, normalizer, list(augment)
        self.duplicate_noise_std, self.seed, self.epoch = duplicate_noise_std, seed, 0
        self.pad = pad    # False: records shorter than the window keep their length (full-length batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, position: int):
        n = len(self.index)
        record = self.index[position % n]
        rng = np.random.default_rng([self.seed, self.epoch, position])
        start = crop_start(record_length(self.signals, record), self.window, rng)   # chosen before reading
        signal = record_window(self.signals, record, start, start + self.window)
        # Normalise and augment the real samples only, then pad with zeros: padding normalised
        # with the record would turn into -mean/std per lead (and bias per-record statistics).
        x = self.normalizer(signal)
        if position >= n and self.duplicate_noise_std > 0:
            x = x + rng.normal(0, self.duplicate_noise_std, x.shape).astype(np.float32)
        for aug in self.augment:
            x = aug(x, rng)
        if self.pad:
            x = crop_or_pad(x, self.window)
        x, y = torch.from_numpy(np.array(x, np.float32, order="C")), torch.as_tensor(self.targets[record])
        return (x, y) if self.features is None else (x, y, torch.from_numpy(self.features[record]))


#: lazy signals: evaluation preprocesses this many windows' length of a record at a time (plus the
#: filter margin once), which its consecutive windows are cut from; one such block is kept
EVAL_BLOCK_WINDOWS = 8


class EvalWindows(torch.utils.data.Dataset):
    """All sliding windows of the records in ``index``; items are (window, record position[, the
    record's features]).

    With ``pad=False`` (full-length mode) a record shorter than the window is one item of its
    own length, and items are ordered by length so padded batches waste little. Lazy signals are
    read a block of ``EVAL_BLOCK_WINDOWS`` windows at a time (``LazySignals.window``), never a
    whole record per window; memory holds one block, whatever the records' length.
    """

    def __init__(self, signals: Sequence[np.ndarray], index: np.ndarray, window: int, stride: int,
                 normalizer: Normalizer, pad: bool = True, features: Optional[np.ndarray] = None):
        self.signals, self.window, self.normalizer, self.pad = signals, window, normalizer, pad
        self.features = features  # per record (RecordSet.features), served as a third item
        lengths = [record_length(signals, record) for record in index]
        self.items = [(pos, start) for pos, n in enumerate(lengths) for start in window_starts(n, window, stride)]
        if not pad:
            self.items.sort(key=lambda item: min(lengths[item[0]], window))
        self.index = index
        self._block: tuple[int, int, np.ndarray] = (-1, 0, np.zeros((0, 0), np.float32))  # (record, start, samples)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        pos, start = self.items[i]
        x = self.normalizer(self._window(self.index[pos], start))   # real samples first, then zero padding
        if self.pad:
            x = crop_or_pad(x, self.window)
        x = torch.from_numpy(np.array(x, np.float32, order="C"))
        return (x, pos) if self.features is None else (x, pos, torch.from_numpy(self.features[self.index[pos]]))

    def _window(self, record: int, start: int) -> np.ndarray:
        if not isinstance(self.signals, LazySignals):
            return self.signals[record][:, start:start + self.window]
        stop = min(start + self.window, self.signals.length(record))
        cached, first, block = self._block
        if cached != record or start < first or stop > first + block.shape[1]:
            first, block = start, self.signals.window(record, start, start + EVAL_BLOCK_WINDOWS * self.window)
            self._block = (record, first, block)
        return block[:, start - first:stop - first]


class Batch(NamedTuple):
    """One batch: ``signals`` (batch, leads, samples); ``targets`` (or, in evaluation, the record
    positions); ``lengths`` (batch,) int64 real samples per row when some row is zero-padded, else
    None; ``features`` (batch, F) per-record numbers beside the signal (``RecordSet.features``) or None."""
    signals: torch.Tensor
    targets: torch.Tensor
    lengths: Optional[torch.Tensor] = None
    features: Optional[torch.Tensor] = None


def collate(batch: list[tuple]) -> Batch:
    """(signal, target[, features]) items -> a ``Batch``. Signals of different lengths (full-length
    mode) are zero-padded at the end to the longest, and ``lengths`` says where each row's real
    samples end, for the model to pool over those only."""
    lengths = torch.tensor([item[0].shape[1] for item in batch], dtype=torch.int64)
    longest = int(lengths.max())
    if bool((lengths == longest).all()):
        # default_collate stacks into shared memory inside a DataLoader worker: no copy on the way back
        signals, lengths = torch.utils.data.default_collate([item[0] for item in batch]), None
    else:
        signals = torch.zeros(len(batch), batch[0][0].shape[0], longest)
        for i, item in enumerate(batch):
            signals[i, :, :item[0].shape[1]] = item[0]
    targets = torch.utils.data.default_collate([item[1] for item in batch])
    features = torch.utils.data.default_collate([item[2] for item in batch]) if len(batch[0]) > 2 else None
    return Batch(signals, targets, lengths, features)


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of similar length for full-length training: the epoch's positions (from any
    sampler) are taken in pools of ``batch_size * pool_batches``, each pool is sorted by record
    length and cut into batches, and the batches are shuffled; padding then stays small.

    Under DDP (``world_size`` > 1) ``batch_size`` is the global batch: every rank forms the same
    batches and takes every ``world_size``-th item of each from ``rank`` (a batch is first padded to
    a multiple of ``world_size`` by repeating its first items), so every rank takes the same number
    of steps, each step covers the batch one process would take, and each rank's share spans the
    batch's lengths alike."""

    def __init__(self, sampler, lengths: np.ndarray, batch_size: int, pool_batches: int = 50,
                 rank: int = 0, world_size: int = 1):
        self.sampler, self.lengths, self.batch_size, self.pool = sampler, lengths, batch_size, pool_batches
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        positions = np.asarray(list(self.sampler))
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(positions), size):
            pool = positions[start:start + size]
            pool = pool[np.argsort(self.lengths[pool % len(self.lengths)], kind="stable")]
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.batch_size > 1 and len(batches[-1]) == 1:
            batches.pop()               # one sample cannot train BatchNorm (the trainer's loader does the same)
        order = np.random.default_rng([self.sampler.seed, self.sampler.epoch, 1]).permutation(len(batches))
        if self.world_size > 1:
            w = self.world_size
            return iter([np.resize(batches[i], -(-len(batches[i]) // w) * w)[self.rank::w].tolist() for i in order])
        return iter([batches[i].tolist() for i in order])

    def __len__(self) -> int:
        n = len(self.sampler)
        return -(-n // self.batch_size) - (self.batch_size > 1 and n % self.batch_size == 1)
