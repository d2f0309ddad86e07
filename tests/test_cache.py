"""Preprocessing cache (hit, rebuild on change, atomic entries) and skip-and-count of bad records."""
import json
import logging

import numpy as np
import pytest

from ecgnet.config import PreprocessCfg
from ecgnet.data.base import ECGAdapter, RecordSet
from ecgnet.data.cache import file_fingerprint
from ecgnet.data.dataset import load_signals
from ecgnet.registry import DataError


class FolderAdapter(ECGAdapter):
    """One .npy file per record in a folder; a file that fails to load is a bad record."""

    def __init__(self, root, strict=False):
        self.root, self.strict = root, strict
        self.files = sorted(root.glob("*.npy"))
        self.reads = 0
        self._records = RecordSet(ids=[f.stem for f in self.files], groups=[f.stem for f in self.files],
                                  labels=np.zeros(len(self.files), np.int64), class_names=["a"], fs=100.0,
                                  leads=["I", "II"])

    def records(self):
        return self._records

    def load(self, i):
        self.reads += 1
        try:
            return np.load(self.files[i]).astype(np.float32)
        except (ValueError, OSError) as err:
            raise DataError(f"{self.files[i]}: unreadable ({err})") from None

    def cache_key(self):
        return json.dumps(file_fingerprint(self.files))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        np.save(tmp_path / f"rec{i}.npy", rng.normal(size=(2, 300 + 10 * i)))
    return tmp_path


def cfg(cache_dir, **kw):
    out = {f: getattr(PreprocessCfg(), f) for f in PreprocessCfg.__dataclass_fields__}
    return {**out, "cache_dir": None if cache_dir is None else str(cache_dir), **kw}


def test_cache_hit_reads_no_source_and_matches(folder, tmp_path):
    first = FolderAdapter(folder)
    rec1, sig1 = load_signals(first, cfg(tmp_path / "cache"), "folder")
    assert first.reads == 5
    second = FolderAdapter(folder)
    rec2, sig2 = load_signals(second, cfg(tmp_path / "cache"), "folder")
    assert second.reads == 0                                  # served from the cache
    assert isinstance(sig2[0].base, np.memmap) or isinstance(sig2[0], np.memmap)
    assert all(np.array_equal(a, b) for a, b in zip(sig1, sig2)) and rec2.ids == rec1.ids
    assert [s.shape[1] for s in sig2] == [300, 310, 320, 330, 340]
    assert not list((tmp_path / "cache").glob("*.tmp"))       # no half-written entry left behind


def test_changed_source_or_setting_rebuilds(folder, tmp_path):
    load_signals(FolderAdapter(folder), cfg(tmp_path / "cache"), "folder")
    np.save(folder / "rec2.npy", np.ones((2, 50)))
    changed = FolderAdapter(folder)
    _, sig = load_signals(changed, cfg(tmp_path / "cache"), "folder")
    assert changed.reads == 5 and sig[2].shape == (2, 50)
    other = FolderAdapter(folder)
    _, sig = load_signals(other, cfg(tmp_path / "cache", fs=50.0), "folder")
    assert other.reads == 5 and sig[0].shape == (2, 150)     # resampled entry is a new one
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_corrupt_record_is_skipped_counted_and_strict_fails(folder, tmp_path, caplog):
    (folder / "rec3.npy").write_bytes(b"\x93NUMPY garbage")
    with caplog.at_level(logging.WARNING):
        records, signals = load_signals(FolderAdapter(folder), cfg(tmp_path / "cache"), "folder")
    assert records.ids == ["rec0", "rec1", "rec2", "rec4"] and len(signals) == 4
    assert records.skipped == {"unreadable": ["rec3"]}
    assert "skipped 1 unreadable record(s)" in caplog.text and "rec3.npy" in caplog.text
    # the skip is remembered by the cache, and strict mode refuses it
    again, _ = load_signals(FolderAdapter(folder), cfg(tmp_path / "cache"), "folder")
    assert again.skipped == {"unreadable": ["rec3"]}
    with pytest.raises(DataError, match="rec3.npy: unreadable"):
        load_signals(FolderAdapter(folder, strict=True), cfg(None), "folder")
    with pytest.raises(DataError, match="could not be read"):
        load_signals(FolderAdapter(folder, strict=True), cfg(tmp_path / "cache"), "folder")


def test_no_cache_dir_reads_every_time(folder, tmp_path):
    adapter = FolderAdapter(folder)
    load_signals(adapter, cfg(None), "folder")
    load_signals(adapter, cfg(None), "folder")
    assert adapter.reads == 10 and not list(tmp_path.glob("folder-*"))


def test_lazy_adapter_reads_on_access_only(folder, tmp_path):
    from ecgnet.data.dataset import EvalWindows, LazySignals
    from ecgnet.data.transforms import Normalizer

    class LazyFolder(FolderAdapter):
        lazy = True

        def num_samples(self, i):
            return int(np.load(self.files[i], mmap_mode="r").shape[1])

    adapter = LazyFolder(folder)
    _, signals = load_signals(adapter, cfg(tmp_path / "cache", fs=50.0), "folder")
    assert isinstance(signals, LazySignals) and adapter.reads == 0
    assert not (tmp_path / "cache").exists()                  # lazy data is never copied into the cache
    windows = EvalWindows(signals, np.arange(5), 40, 40, Normalizer("none"))
    assert adapter.reads == 0                                  # lengths come from num_samples
    assert [signals.length(i) for i in range(5)] == [signals[i].shape[1] for i in range(5)] == [150, 155, 160, 165, 170]
    assert adapter.reads == 5
    windows[len(windows) - 1]
    assert adapter.reads == 6
