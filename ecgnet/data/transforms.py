"""Deterministic signal transforms (resample, band-pass, normalise, crop/pad, windows)
and the registered training augmentations."""
from __future__ import annotations

import functools
from fractions import Fraction
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import signal as sps

from ..registry import AUGMENTATIONS, ConfigError


def _ratio(fs_in: float, fs_out: float) -> Fraction:
    return Fraction(fs_out / fs_in).limit_denominator(1000)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along time; (leads, samples) -> (leads, resampled_length(samples))."""
    if fs_in == fs_out:
        return x
    ratio = _ratio(fs_in, fs_out)
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def resampled_length(n: int, fs_in: float, fs_out: float) -> int:
    """Samples ``resample`` returns for ``n`` input samples (resample_poly: ceil(n * up / down)),
    known without resampling."""
    if fs_in == fs_out:
        return n
    ratio = _ratio(fs_in, fs_out)
    return -(-n * ratio.numerator // ratio.denominator)


def resample_reach(fs_in: float, fs_out: float) -> int:
    """Input samples on either side of an output sample of ``resample`` that it depends on:
    resample_poly's default FIR filter spans 10 * max(up, down) samples either side at the
    upsampled rate, i.e. that divided by ``up`` input samples (+1 for rounding)."""
    ratio = _ratio(fs_in, fs_out)
    return -(-10 * max(ratio.numerator, ratio.denominator) // ratio.numerator) + 1


def resample_span(read: Callable[[int, int], np.ndarray], n_in: int, start: int, stop: int,
                  fs_in: float, fs_out: float) -> np.ndarray:
    """Samples [start, stop) of ``resample(x, fs_in, fs_out)`` for a signal x of ``n_in`` samples
    that ``read(a, b)`` returns piece by piece (x[:, a:b]), reading only what they depend on.

    Equal to cutting the resampled whole signal: the piece read starts on a multiple of the
    down factor, so its output samples fall on the whole signal's output grid, and reaches
    ``resample_reach`` past the span on each side (or to the signal's end, as the whole one does).
    """
    if fs_in == fs_out:
        return read(start, stop)
    ratio = _ratio(fs_in, fs_out)
    up, down = ratio.numerator, ratio.denominator
    reach = resample_reach(fs_in, fs_out)
    first = max(0, (start * down // up - reach) // down * down)
    last = min(n_in, -(-stop * down // up) + reach)
    offset = first * up // down                  # output index of input sample ``first``
    return resample(read(first, last), fs_in, fs_out)[:, start - offset:stop - offset]


@functools.lru_cache(maxsize=64)      # designing it takes longer than filtering a 10 s crop
def bandpass_sos(fs: float, low_hz: float, high_hz: float, order: int = 3) -> np.ndarray:
    """The Butterworth band-pass ``bandpass`` applies, as second-order sections (shared: don't modify)."""
    if not 0 < low_hz < high_hz:
        raise ConfigError(f"preprocess.bandpass_hz: need 0 < low < high, got [{low_hz}, {high_hz}]")
    high_hz = min(high_hz, 0.95 * fs / 2)   # a cut-off above Nyquist is meaningless at low fs
    return sps.butter(order, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos")


def bandpass(x: np.ndarray, fs: float, low_hz: float, high_hz: float, order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth band-pass; removes baseline wander and high-frequency noise."""
    sos = bandpass_sos(fs, low_hz, high_hz, order)
    padlen = min(x.shape[-1] - 1, 3 * (2 * len(sos) + 1))
    return sps.sosfiltfilt(sos, x, axis=-1, padlen=padlen).astype(np.float32)


#: the band-pass margin around a piece of a record leaves this much of the filter's impulse response
#: (sum of |h|) outside it, so the filtered piece matches the filtered whole record to about this
#: fraction of the signal's amplitude (a few 1e-6 of the peak measured on ECG with baseline wander)
SETTLE_TOLERANCE = 1e-5


@functools.lru_cache(maxsize=64)
def bandpass_settle_samples(fs: float, low_hz: float, high_hz: float, order: int = 3,
                            tolerance: float = SETTLE_TOLERANCE) -> int:
    """Samples after which the band-pass has forgotten where its input started: the smallest n
    with sum(|h[m]|, m >= n) <= ``tolerance``, h the filter's impulse response.

    Why this bounds the error of filtering a piece instead of the whole record: the forward pass
    over a piece that starts n samples before a window differs there from the whole record's only
    by the filter's response to the input before the piece (the whole record's samples versus the
    piece's edge padding), which is at most (their difference) x that tail sum; the backward pass
    likewise from the piece's end. The slowest poles sit near the low cut-off, so this is about
    3.9 / low_hz seconds for order 3 (7.7 s at 0.5 Hz) and grows as the low cut-off drops.
    """
    sos = bandpass_sos(fs, low_hz, high_hz, order)
    radius = float(np.abs(sps.sos2zpk(sos)[1]).max())
    # the response decays as radius^n (times a polynomial for repeated poles): 4x the samples
    # radius^n needs to reach the tolerance is ample to find where the tail sum does
    n = int(4 * np.log(tolerance) / np.log(radius)) + 1
    impulse = np.zeros(n)
    impulse[0] = 1.0
    tail = np.cumsum(np.abs(sps.sosfilt(sos, impulse))[::-1])[::-1]    # tail[k] = sum |h[k:]|
    settled = np.flatnonzero(tail <= tolerance)
    return int(settled[0]) if len(settled) else n


def preprocess(x: np.ndarray, fs: float, cfg: dict) -> np.ndarray:
    """The once-per-record steps of the ``preprocess`` section (not normalisation)."""
    x = np.nan_to_num(np.asarray(x, np.float32))
    if cfg["fs"] is not None:
        x = resample(x, fs, cfg["fs"])
        fs = cfg["fs"]
    if cfg["bandpass_hz"] is not None:
        low, high = cfg["bandpass_hz"]
        x = bandpass(x, fs, float(low), float(high), cfg["filter_order"])
    return x


def preprocess_span(read: Callable[[int, int], np.ndarray], n_in: int, fs: float, cfg: dict,
                    start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) (at the output rate) of ``preprocess(x, fs, cfg)`` for a record x of
    ``n_in`` samples that ``read(a, b)`` returns piece by piece, reading and filtering only the
    span plus ``bandpass_settle_samples`` on each side (and the resampling reach), clipped at the
    record's ends, where the piece has the whole record's edges. Matches cutting the preprocessed
    whole record to about ``SETTLE_TOLERANCE`` of the signal's amplitude."""
    fs_out = cfg["fs"] or fs
    band = None if cfg["bandpass_hz"] is None else (fs_out, *map(float, cfg["bandpass_hz"]), cfg["filter_order"])
    margin = bandpass_settle_samples(*band) if band else 0
    first, last = max(0, start - margin), min(resampled_length(n_in, fs, fs_out), stop + margin)
    x = resample_span(lambda a, b: np.nan_to_num(np.asarray(read(a, b), np.float32)), n_in, first, last, fs, fs_out)
    if band:
        x = bandpass(x, *band)
    return x[:, start - first:stop - first]


class Normalizer:
    """z-score normalisation. ``per_lead`` statistics come from the training records only
    and travel in the checkpoint; ``per_record`` uses each record's own statistics."""

    def __init__(self, mode: str = "per_lead", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        self.mode = mode
        self.mean = None if mean is None else np.asarray(mean, np.float32)[:, None]
        self.std = None if std is None else np.asarray(std, np.float32)[:, None]

    def fit(self, signals: Iterable[np.ndarray]) -> "Normalizer":
        """One streaming pass (float64 sums of x and x^2 per lead), so a lazy dataset is never
        held in memory; only ``per_lead`` has anything to fit."""
        if self.mode != "per_lead":
            return self
        total = squares = None
        count = 0
        for s in signals:
            s = np.asarray(s, np.float64)
            total = s.sum(axis=1) if total is None else total + s.sum(axis=1)
            squares = (s * s).sum(axis=1) if squares is None else squares + (s * s).sum(axis=1)
            count += s.shape[1]
        mean = total / count
        var = np.maximum(squares / count - mean ** 2, 1e-12)
        self.mean = mean.astype(np.float32)[:, None]
        self.std = np.sqrt(var).astype(np.float32)[:, None]
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "per_lead":
            return (x - self.mean) / self.std
        if self.mode == "per_record":
            return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)
        return x

    def state_dict(self) -> dict:
        return {"mode": self.mode,
                "mean": None if self.mean is None else self.mean[:, 0].tolist(),
                "std": None if self.std is None else self.std[:, 0].tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        return cls(state["mode"], state["mean"], state["std"])


def crop_or_pad(x: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    """Window ``[start, start + length)``; records shorter than ``length`` are zero-padded at the end."""
    out = x[:, start:start + length]
    if out.shape[1] < length:
        out = np.pad(out, ((0, 0), (0, length - out.shape[1])))
    return out


def crop_start(n_samples: int, length: int, rng: np.random.Generator) -> int:
    """Start of a random ``length``-sample crop of ``n_samples`` (0, drawing nothing, when it fits)."""
    return int(rng.integers(0, n_samples - length + 1)) if n_samples > length else 0


def window_starts(n_samples: int, length: int, stride: int) -> list[int]:
    """Sliding-window starts covering the whole record; the last window ends at the record's end."""
    if n_samples <= length:
        return [0]
    starts = list(range(0, n_samples - length + 1, stride))
    if starts[-1] != n_samples - length:
        starts.append(n_samples - length)
    return starts


# ---- augmentations: called as aug(x (leads, samples), rng) on training windows only ----

class Augmentation:
    def __init__(self, p: float):
        if not 0 <= p <= 1:
            raise ConfigError(f"augment: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(x, rng) if rng.random() < self.p else x

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


@AUGMENTATIONS.register("gaussian_noise")
class GaussianNoise(Augmentation):
    """Additive white noise with standard deviation ``std`` (in normalised units)."""

    def __init__(self, std: float = 0.05, p: float = 0.5):
        super().__init__(p)
        self.std = std

    def apply(self, x, rng):
        return x + rng.normal(0.0, self.std, x.shape).astype(np.float32)


@AUGMENTATIONS.register("amplitude_scale")
class AmplitudeScale(Augmentation):
    """Multiply each lead by a factor drawn from [low, high] (electrode gain, body habitus)."""

    def __init__(self, low: float = 0.8, high: float = 1.2, p: float = 0.5):
        super().__init__(p)
        self.low, self.high = low, high

    def apply(self, x, rng):
        return x * rng.uniform(self.low, self.high, (x.shape[0], 1)).astype(np.float32)


@AUGMENTATIONS.register("time_warp")
class TimeWarp(Augmentation):
    """Stretch or compress time by up to ``max_stretch`` (heart-rate change), keeping the length."""

    def __init__(self, max_stretch: float = 0.1, p: float = 0.5):
        super().__init__(p)
        self.max_stretch = max_stretch

    def apply(self, x, rng):
        n = x.shape[1]
        factor = 1 + rng.uniform(-self.max_stretch, self.max_stretch)
        positions = np.arange(n) / factor
        warped = np.stack([np.interp(positions, np.arange(n), lead, right=0.0) for lead in x])
        return warped.astype(np.float32)


@AUGMENTATIONS.register("random_crop")
class RandomCrop(Augmentation):
    """Keep a random segment of at least ``min_fraction`` of the window, zero the rest
    (short or partly missing recordings)."""

    def __init__(self, min_fraction: float = 0.5, p: float = 0.5):
        super().__init__(p)
        self.min_fraction = min_fraction

    def apply(self, x, rng):
        n = x.shape[1]
        keep = int(n * rng.uniform(self.min_fraction, 1.0))
        start = int(rng.integers(0, n - keep + 1))
        out = np.zeros_like(x)
        out[:, start:start + keep] = x[:, start:start + keep]
        return out


@AUGMENTATIONS.register("baseline_wander")
class BaselineWander(Augmentation):
    """Add a slow sinusoidal drift (respiration, electrode motion) of up to ``amplitude``."""

    def __init__(self, fs: float, amplitude: float = 0.2, max_freq_hz: float = 0.5, p: float = 0.5):
        super().__init__(p)   # fs is the signal's rate after preprocessing, passed by the pipeline
        self.fs, self.amplitude, self.max_freq_hz = fs, amplitude, max_freq_hz

    def apply(self, x, rng):
        t = np.arange(x.shape[1]) / self.fs
        freq = rng.uniform(0.05, self.max_freq_hz)
        phase = rng.uniform(0, 2 * np.pi, (x.shape[0], 1))
        amp = rng.uniform(0, self.amplitude, (x.shape[0], 1))
        return (x + amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)
