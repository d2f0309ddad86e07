"""Training samplers. Each yields positions into the training subset for one epoch and
is reseeded per epoch from (seed, epoch), so a resumed run draws the same batches.

Positions >= n (the subset size) mark oversampled duplicates: position p stands for
record p % n, and the dataset adds noise to it (random oversampling with noise).

Under DDP every rank draws the same epoch and ``ShardedSampler`` gives each its share.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch.utils.data

from ..registry import SAMPLERS


class EpochSampler(torch.utils.data.Sampler):
    def __init__(self, labels: np.ndarray, seed: int):
        self.labels = labels          # (n, C) multi-hot of the training subset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def positions(self) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self):
        return iter(self.positions().tolist())

    def __len__(self) -> int:
        return len(self.positions())


def _rarest_class_count(labels: np.ndarray) -> np.ndarray:
    """Per record, the training count of its rarest positive class; records without any
    positive label count as one more class ("none")."""
    counts = labels.sum(0)
    none = labels.sum(1) == 0
    masked = np.where(labels > 0, counts[None, :], np.inf).min(1)
    masked[none] = max(none.sum(), 1)
    return masked


@SAMPLERS.register("random")
class RandomSampler(EpochSampler):
    """Every training record once per epoch, shuffled."""

    def positions(self):
        return self.rng().permutation(len(self.labels))


@SAMPLERS.register("class_balanced")
class ClassBalancedSampler(EpochSampler):
    """Draw with replacement, each record weighted by 1 / (count of its rarest class),
    so every class is seen about equally often. ``num_samples`` defaults to the subset size."""

    def __init__(self, labels: np.ndarray, seed: int, num_samples: Optional[int] = None):
        super().__init__(labels, seed)
        self.num_samples = num_samples or len(labels)
        weights = 1.0 / _rarest_class_count(labels)
        self.p = weights / weights.sum()

    def positions(self):
        return self.rng().choice(len(self.labels), size=self.num_samples, replace=True, p=self.p)


@SAMPLERS.register("oversample")
class OversampleSampler(EpochSampler):
    """Random oversampling: a record whose rarest class has n_c examples appears
    round(n_max / n_c) times (capped at ``max_copies``); copies get gaussian noise of
    ``noise_std`` in the dataset."""

    def __init__(self, labels: np.ndarray, seed: int, max_copies: int = 20, noise_std: float = 0.05):
        super().__init__(labels, seed)
        self.noise_std = noise_std
        rarest = _rarest_class_count(labels)
        copies = np.clip(np.round(rarest.max() / rarest), 1, max_copies).astype(int)
        n = len(labels)
        self._all = np.concatenate([np.arange(n)[copies > c] + c * n for c in range(copies.max())])

    def positions(self):
        return self.rng().permutation(self._all)


def shard(positions: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of positions every rank holds alike: padded to a multiple of
    ``world_size`` by repeating the first ones, then every ``world_size``-th from ``rank`` (as
    ``DistributedSampler``), so every rank gets the same count and takes the same number of steps."""
    if world_size == 1:
        return positions
    return np.resize(positions, -(-len(positions) // world_size) * world_size)[rank::world_size]


class ShardedSampler(torch.utils.data.Sampler):
    """One rank's share of ``sampler``'s epoch. With a local batch of B / world_size, step s of the
    ranks together covers positions [s*B, (s+1)*B) of the epoch: the batches of one process."""

    def __init__(self, sampler: EpochSampler, rank: int = 0, world_size: int = 1):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return iter(shard(self.sampler.positions(), self.rank, self.world_size).tolist())

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.world_size)
