"""From an adapter to tensors: load + preprocess each record once, then serve windows.

``TrainWindows`` yields one random window per draw (augmented); ``EvalWindows``
enumerates sliding windows over whole records, which ``engine.predict`` averages
back to one prediction per record.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
import torch.utils.data
from tqdm import tqdm

from ..registry import DataError
from .base import ECGAdapter, RecordSet
from .cache import cache_dir_for, code_fingerprint, read_cache, write_cache
from .transforms import Normalizer, crop_or_pad, preprocess, random_crop, resampled_length, window_starts

log = logging.getLogger(__name__)


def _read_each(adapter: ECGAdapter, fs: float, cfg: dict, progress: bool):
    """Yield (id, preprocessed signal or None, failure reason or None) per record; a record
    that cannot be read is a failure unless the adapter is strict."""
    records = adapter.records()
    for i in tqdm(range(len(records.ids)), desc="reading records", disable=not progress, leave=False):
        try:
            x = adapter.load(i)
            if x.ndim != 2 or x.shape[0] != len(records.leads) or x.shape[1] == 0 or not np.isfinite(x).all():
                raise DataError(f"record {records.ids[i]}: expected finite ({len(records.leads)} leads, samples), "
                                f"got shape {x.shape}")
        except DataError as err:
            if adapter.strict:
                raise
            yield records.ids[i], None, str(err)
            continue
        yield records.ids[i], np.ascontiguousarray(preprocess(x, fs, cfg), dtype=np.float32), None


class LazySignals(Sequence):
    """Records read on access, for adapters too large to load or cache (``adapter.lazy``).

    ``signals[i]`` reads and preprocesses record i; ``length(i)`` gives its length after
    resampling without reading it (from ``adapter.num_samples(i)``). Nothing is kept, so
    memory stays flat however large the file; each DataLoader worker reads through the
    adapter, which must open its own file handle per process.
    """

    def __init__(self, adapter: ECGAdapter, cfg: dict):
        self.adapter, self.cfg = adapter, cfg
        self.fs_in = adapter.records().fs
        self.fs_out = cfg["fs"] or self.fs_in

    def __len__(self) -> int:
        return len(self.adapter.records().ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return preprocess(self.adapter.load(int(i)), self.fs_in, self.cfg)

    def length(self, i: int) -> int:
        return resampled_length(self.adapter.num_samples(int(i)), self.fs_in, self.fs_out)


def record_length(signals: Sequence[np.ndarray], i: int) -> int:
    """Samples in record i, without reading it when the signals are lazy."""
    return signals.length(i) if isinstance(signals, LazySignals) else signals[i].shape[1]


def load_signals(adapter: ECGAdapter, cfg: dict, dataset: str = "data",
                 progress: bool = False) -> tuple[RecordSet, Sequence[np.ndarray]]:
    """Every readable record, preprocessed per the ``preprocess`` section, as float32
    (leads, samples), with the RecordSet reduced to those records.

    With a ``preprocess.cache_dir`` and an adapter that has a ``cache_key``, the result is
    read from (or first written to) the memory-mapped cache. Unreadable records are
    skipped, counted and listed in one warning (an error when the adapter is strict).
    """
    records = adapter.records()
    if adapter.lazy:                 # the adapter checked its records when it listed them
        return records, LazySignals(adapter, cfg)
    key = adapter.cache_key()
    path = cache_dir_for(cfg["cache_dir"], dataset, key, cfg, code_fingerprint(adapter)) \
        if cfg.get("cache_dir") and key else None
    cached = read_cache(path) if path else None
    if cached is not None and cached[0] != list(records.ids):
        log.warning("cache %s lists other records than the dataset; rebuilding it", path)
        cached = None
    if cached is None and path:
        write_cache(path, _read_each(adapter, records.fs, cfg, progress), len(records.leads))
        cached = read_cache(path)
        log.info("preprocessed %d records into the cache %s", len(cached[1]), path)
    elif cached is not None:
        log.info("read %d preprocessed records from the cache %s", len(cached[1]), path)
    if cached is not None:
        _, signals, failed = cached
    else:
        signals, failed = [], {}
        for rid, x, reason in _read_each(adapter, records.fs, cfg, progress):
            signals.append(x)
            if x is None:
                failed[rid] = reason
    if failed:
        if adapter.strict:
            raise DataError(f"{len(failed)} record(s) could not be read (cached from an earlier run), e.g. "
                            f"{next(iter(failed.values()))}; fix them or set data.strict: false")
        reasons = list(failed.values())
        log.warning("skipped %d unreadable record(s): %s%s", len(failed), "; ".join(reasons[:5]),
                    " ..." if len(reasons) > 5 else "")
        keep = np.array([i for i, rid in enumerate(records.ids) if rid not in failed], dtype=np.int64)
        records = records.select(keep, "unreadable")
        signals = [signals[i] for i in keep]
    return records, signals


class TrainWindows(torch.utils.data.Dataset):
    """Training draws: position p -> a random crop of record index[p % n], augmented.

    Randomness comes from a generator seeded by (seed, epoch, p), so a batch is the
    same whichever worker builds it and whether or not the run was resumed.
    """

    def __init__(self, signals: Sequence[np.ndarray], targets: np.ndarray, index: np.ndarray,
                 window: int, normalizer: Normalizer, augment: Sequence[Callable] = (),
                 duplicate_noise_std: float = 0.0, seed: int = 0, pad: bool = True):
        self.signals, self.targets, self.index = signals, targets, index
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
        signal = self.signals[record]
        if signal.shape[1] > self.window:
            signal = random_crop(signal, self.window, rng)
        # Normalise and augment the real samples only, then pad with zeros: padding normalised
        # with the record would turn into -mean/std per lead (and bias per-record statistics).
        x = self.normalizer(signal)
        if position >= n and self.duplicate_noise_std > 0:
            x = x + rng.normal(0, self.duplicate_noise_std, x.shape).astype(np.float32)
        for aug in self.augment:
            x = aug(x, rng)
        if self.pad:
            x = crop_or_pad(x, self.window)
        return torch.from_numpy(np.array(x, np.float32, order="C")), torch.as_tensor(self.targets[record])


class EvalWindows(torch.utils.data.Dataset):
    """All sliding windows of the records in ``index``; items are (window, record position).

    With ``pad=False`` (full-length mode) a record shorter than the window is one item of its
    own length, and items are ordered by length so padded batches waste little.
    """

    def __init__(self, signals: Sequence[np.ndarray], index: np.ndarray, window: int, stride: int,
                 normalizer: Normalizer, pad: bool = True):
        self.signals, self.window, self.normalizer, self.pad = signals, window, normalizer, pad
        lengths = [record_length(signals, record) for record in index]
        self.items = [(pos, start) for pos, n in enumerate(lengths) for start in window_starts(n, window, stride)]
        if not pad:
            self.items.sort(key=lambda item: min(lengths[item[0]], window))
        self.index = index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        pos, start = self.items[i]
        signal = self.signals[self.index[pos]]
        x = self.normalizer(signal[:, start:start + self.window])   # real samples first, then zero padding
        if self.pad:
            x = crop_or_pad(x, self.window)
        return torch.from_numpy(np.array(x, np.float32, order="C")), pos


def pad_collate(batch: list[tuple[torch.Tensor, object]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack (signal, target) pairs of different lengths, zero-padding at the end to the longest.

    -> (signals, targets, lengths): ``lengths`` (batch,) int64 are the real samples per row, which
    the model uses to pool over real samples only; None when every row is real (no masking needed).
    """
    lengths = torch.tensor([x.shape[1] for x, _ in batch], dtype=torch.int64)
    longest = int(lengths.max())
    signals = torch.zeros(len(batch), batch[0][0].shape[0], longest)
    for i, (x, _) in enumerate(batch):
        signals[i, :, :x.shape[1]] = x
    targets = torch.utils.data.default_collate([y for _, y in batch])
    return signals, targets, None if bool((lengths == longest).all()) else lengths


def unpack_batch(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(signals, targets[, lengths]) from either collate function -> (signals, targets, lengths or None)."""
    return (batch[0], batch[1], batch[2]) if len(batch) == 3 else (batch[0], batch[1], None)


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of similar length for full-length training: the epoch's positions (from any
    sampler) are taken in pools of ``batch_size * pool_batches``, each pool is sorted by record
    length and cut into batches, and the batches are shuffled; padding then stays small."""

    def __init__(self, sampler, lengths: np.ndarray, batch_size: int, pool_batches: int = 50):
        self.sampler, self.lengths, self.batch_size, self.pool = sampler, lengths, batch_size, pool_batches

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        positions = np.asarray(list(self.sampler))
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(positions), size):
            pool = positions[start:start + size]
            pool = pool[np.argsort(self.lengths[pool % len(self.lengths)], kind="stable")]
            batches += [pool[i:i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size)]
        order = np.random.default_rng([self.sampler.seed, self.sampler.epoch, 1]).permutation(len(batches))
        return iter([batches[i] for i in order])

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)
