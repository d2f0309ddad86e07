"""From an adapter to tensors: load + preprocess each record once, then serve windows.

``TrainWindows`` yields one random window per draw (augmented); ``EvalWindows``
enumerates sliding windows over whole records, which ``engine.predict`` averages
back to one prediction per record.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch
import torch.utils.data
from tqdm import tqdm

from ..registry import DataError
from .base import ECGAdapter
from .transforms import Normalizer, crop_or_pad, preprocess, random_crop, window_starts

log = logging.getLogger(__name__)


def load_signals(adapter: ECGAdapter, fs: float, cfg: dict, progress: bool = False) -> list[np.ndarray]:
    """Every record, preprocessed per the ``preprocess`` section, as float32 (leads, samples)."""
    n = len(adapter.records().ids)
    signals = []
    for i in tqdm(range(n), desc="loading records", disable=not progress, leave=False):
        x = adapter.load(i)
        if x.ndim != 2 or x.shape[1] == 0:
            raise DataError(f"record {adapter.records().ids[i]}: expected (leads, samples), got shape {x.shape}")
        signals.append(np.ascontiguousarray(preprocess(x, fs, cfg)))
    return signals


class TrainWindows(torch.utils.data.Dataset):
    """Training draws: position p -> a random crop of record index[p % n], augmented.

    Randomness comes from a generator seeded by (seed, epoch, p), so a batch is the
    same whichever worker builds it and whether or not the run was resumed.
    """

    def __init__(self, signals: Sequence[np.ndarray], targets: np.ndarray, index: np.ndarray,
                 window: int, normalizer: Normalizer, augment: Sequence[Callable] = (),
                 duplicate_noise_std: float = 0.0, seed: int = 0):
        self.signals, self.targets, self.index = signals, targets, index
        self.window, self.normalizer, self.augment = window, normalizer, list(augment)
        self.duplicate_noise_std, self.seed, self.epoch = duplicate_noise_std, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, position: int):
        n = len(self.index)
        record = self.index[position % n]
        rng = np.random.default_rng([self.seed, self.epoch, position])
        x = self.normalizer(random_crop(self.signals[record], self.window, rng))
        if position >= n and self.duplicate_noise_std > 0:
            x = x + rng.normal(0, self.duplicate_noise_std, x.shape).astype(np.float32)
        for aug in self.augment:
            x = aug(x, rng)
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.as_tensor(self.targets[record])


class EvalWindows(torch.utils.data.Dataset):
    """All sliding windows of the records in ``index``; items are (window, record position)."""

    def __init__(self, signals: Sequence[np.ndarray], index: np.ndarray, window: int, stride: int,
                 normalizer: Normalizer):
        self.signals, self.window, self.normalizer = signals, window, normalizer
        self.items = [(pos, start) for pos, record in enumerate(index)
                      for start in window_starts(signals[record].shape[1], window, stride)]
        self.index = index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        pos, start = self.items[i]
        x = self.normalizer(crop_or_pad(self.signals[self.index[pos]], self.window, start))
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), pos
