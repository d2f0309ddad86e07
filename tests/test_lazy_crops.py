"""Crop first, then filter: lazy training crops and evaluation windows read and preprocess only
the span they depend on (the window plus the band-pass settling margin, and the resampling reach),
and match cutting the preprocessed whole record.

Tolerance: max |crop-first - crop of whole| <= 1e-4 x the record's peak |amplitude| after
preprocessing. The margin is chosen for ``transforms.SETTLE_TOLERANCE`` (1e-5 of the impulse
response's tail); measured differences are about 3e-6 of the peak on records with 2 mV baseline
wander. Without the margin the same windows differ by more than 1e-2 of the peak."""
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ecgnet.data import transforms
from ecgnet.data.dataset import EVAL_BLOCK_WINDOWS, EvalWindows, LazySignals, TrainWindows, load_signals
from ecgnet.data.transforms import (Normalizer, bandpass_settle_samples, crop_start, preprocess, resample,
                                    resample_span)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hdf5 import adapter, ecg_like, preprocess_cfg, write_file  # noqa: E402

FS = 500.0
RELATIVE_TOLERANCE = 1e-4


def wandering_ecg(seconds, fs, seed):
    """(samples, 3 leads) in mV: beats on a 2 mV, 0.15 Hz baseline wander plus a random walk, so
    what the filter saw before a span matters."""
    t = np.arange(int(round(seconds * fs))) / fs
    rng = np.random.default_rng(seed)
    drift = 2 * np.sin(2 * np.pi * 0.15 * t + rng.uniform(0, 6)) + np.cumsum(rng.normal(0, 0.02, len(t)))
    return (ecg_like(seconds, fs, leads=3, seed=seed) + drift[:, None]).astype(np.float32)


@pytest.fixture
def long_records(tmp_path):
    """Variable layout: 60 s, 12 s (shorter than window + margins) and 90 s at 500 Hz, and 31 s at
    250 Hz (resampled by the adapter)."""
    specs = [(60, 500), (31, 250), (12, 500), (90, 500)]
    signals = [wandering_ecg(s, f, i) for i, (s, f) in enumerate(specs)]
    return write_file(tmp_path / "long.h5", signals, np.eye(4, 2, dtype=np.uint8),
                      record_fs=[f for _, f in specs])


def whole_then_cut(a, record, cfg, start, length):
    """The reference: preprocess the whole record, then cut (zero-padded past its end)."""
    whole = preprocess(a.load(record), a.records().fs, cfg)
    cut = whole[:, start:start + length]
    return np.pad(cut, ((0, 0), (0, length - cut.shape[1]))), np.abs(whole).max()


@pytest.mark.parametrize("fs", [None, 360.0])
@pytest.mark.parametrize("settings", [{"windowing": "full"}, {"windowing": "windows", "segment_s": 30}])
def test_training_crops_match_the_crop_of_the_whole_record(long_records, fs, settings):
    a = adapter(long_records, **settings)
    cfg = preprocess_cfg(fs=fs, bandpass_hz=[0.5, 40])
    records, signals = load_signals(a, cfg, "hdf5")
    assert isinstance(signals, LazySignals)
    n, window = len(records.ids), int(10 * (fs or FS))
    train = TrainWindows(signals, records.labels, np.arange(n), window, Normalizer("none"), seed=3)
    train.set_epoch(2)
    for position in range(40):                     # crops anywhere, also at the records' ends
        x, _ = train[position]
        record = position % n
        start = crop_start(signals.length(record), window, np.random.default_rng([3, 2, position]))   # same draw
        expected, peak = whole_then_cut(a, record, cfg, start, window)
        assert np.abs(x.numpy() - expected).max() <= RELATIVE_TOLERANCE * peak, (position, start)


@pytest.mark.parametrize("fs", [None, 360.0])
def test_evaluation_windows_match_the_whole_record(long_records, fs):
    a = adapter(long_records, windowing="full")
    cfg = preprocess_cfg(fs=fs, bandpass_hz=[0.5, 40])
    _, signals = load_signals(a, cfg, "hdf5")
    window = int(10 * (fs or FS))
    windows = EvalWindows(signals, np.arange(4), window, window // 2, Normalizer("none"))
    for i, (pos, start) in enumerate(windows.items):
        x, _ = windows[i]
        expected, peak = whole_then_cut(a, pos, cfg, start, window)
        assert np.abs(x.numpy() - expected).max() <= RELATIVE_TOLERANCE * peak, (pos, start)


def test_the_margin_is_what_makes_them_match(long_records, monkeypatch):
    """Without settling samples on each side, the filter's start-up transient lands in the window."""
    a = adapter(long_records, windowing="full")
    cfg = preprocess_cfg(bandpass_hz=[0.5, 40])
    _, signals = load_signals(a, cfg, "hdf5")
    start, window = 20000, 5000                   # inside the 90 s record, far from its ends
    expected, peak = whole_then_cut(a, 3, cfg, start, window)
    assert np.abs(signals.window(3, start, start + window) - expected).max() <= RELATIVE_TOLERANCE * peak
    monkeypatch.setattr(transforms, "bandpass_settle_samples", lambda *args: 0)
    assert np.abs(signals.window(3, start, start + window) - expected).max() > 1e-2 * peak


def test_settle_margin_follows_the_low_cutoff():
    """About 3.9 / low cut-off seconds for order 3 (the slowest poles sit near the low cut-off),
    longer for a higher order, and the same in seconds at another rate."""
    margin_s = bandpass_settle_samples(FS, 0.5, 40.0, 3) / FS
    assert 3 / 0.5 < margin_s < 5 / 0.5
    assert bandpass_settle_samples(FS, 0.05, 40.0, 3) / FS == pytest.approx(10 * margin_s, rel=0.05)
    assert bandpass_settle_samples(250.0, 0.5, 40.0, 3) / 250.0 == pytest.approx(margin_s, rel=0.02)
    assert bandpass_settle_samples(FS, 0.5, 40.0, 5) > bandpass_settle_samples(FS, 0.5, 40.0, 3)


@pytest.mark.parametrize("fs_in, fs_out", [(500, 250), (360, 500), (500, 360), (250, 500), (300, 257)])
def test_resample_span_equals_the_cut_of_the_whole(fs_in, fs_out):
    x = np.cumsum(np.random.default_rng(0).normal(size=(2, 9000)), axis=1).astype(np.float32)
    whole = resample(x, fs_in, fs_out)
    reads = []

    def read(a, b):
        reads.append(b - a)
        return x[:, a:b]

    for start in (0, 3, 1000, whole.shape[1] - 300, whole.shape[1] - 1):
        stop = min(whole.shape[1], start + 257)
        assert np.array_equal(resample_span(read, x.shape[1], start, stop, fs_in, fs_out), whole[:, start:stop])
    assert max(reads) < 1000                       # a few hundred input samples, never the whole 9000


def test_lazy_reads_are_spans_not_records(long_records, monkeypatch):
    """A training crop reads the window plus the margins; evaluation a block of windows at a time."""
    a = adapter(long_records, windowing="full")
    cfg = preprocess_cfg(bandpass_hz=[0.5, 40])
    records, signals = load_signals(a, cfg, "hdf5")
    rows = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        out = original(self, key)
        if self.name == "/signals":
            rows.append(out.shape[0])
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    window, margin = 5000, bandpass_settle_samples(FS, 0.5, 40.0, 3)
    train = TrainWindows(signals, records.labels, np.array([3]), window, Normalizer("none"))   # the 90 s record
    for position in range(5):
        train[position]
    assert len(rows) == 5 and max(rows) <= window + 2 * margin < 45000                        # 45000: all of it
    rows.clear()
    windows = EvalWindows(signals, np.array([3]), window, window // 2, Normalizer("none"))
    for i in range(len(windows)):
        windows[i]
    assert len(windows) == 17 and len(rows) == 2 and max(rows) <= EVAL_BLOCK_WINDOWS * window + 2 * margin
