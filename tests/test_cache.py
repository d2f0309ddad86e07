"""Preprocessing cache (hit, rebuild on change, atomic entries) and skip-and-count of bad records."""
import json
import logging
import re

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
    np.save(folder / "rec2.npy", np.random.default_rng(1).normal(size=(2, 50)))    # not constant: that fails QC
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


# ---- verification on read, real rebuilds, concurrent writers, unwritable folders ----

def only_entry(root):
    entries = [p for p in root.iterdir()]
    assert len(entries) == 1, entries
    return entries[0]


def damage_offsets(entry):
    np.save(entry / "offsets.npy", np.array([0, 300, 200, 930, 1260, 1600], np.int64))


DAMAGE = {   # what read_cache must refuse, and why
    "non-decreasing offsets": (damage_offsets, "offsets.npy is not 6 non-decreasing offsets from 0 to 1600"),
    "other leads": (lambda e: (e / "meta.json").write_text('{"leads": 3, "total": 1600}'),
                    "meta.json says 3 leads, the dataset has 2"),
    "failed record with samples": (lambda e: (e / "failed.json").write_text('{"rec1": "x"}'),
                                   "failed.json does not match the records"),
    "unknown failed record": (lambda e: (e / "failed.json").write_text('{"rec9": "x"}'),
                              "failed.json does not match the records"),
    "signals.f32 missing": (lambda e: (e / "signals.f32").unlink(), "signals.f32 is missing"),
    "json of another shape": (lambda e: (e / "ids.json").write_text('{"a": 1}'),
                              "ids.json, failed.json or meta.json does not hold what this ecgnet writes"),
    "empty offsets.npy": (lambda e: (e / "offsets.npy").write_bytes(b""), "offsets.npy is unreadable"),
    "inf sample": (lambda e: e.joinpath("signals.f32").open("r+b").write(np.float32(np.inf).tobytes()),
                   "signals.f32 holds NaN/inf samples"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_entry_is_verified_before_use(folder, tmp_path, caplog, damage):
    from ecgnet.data.cache import InvalidEntry, read_cache
    load_signals(FolderAdapter(folder), cfg(tmp_path / "cache"), "folder")
    entry = only_entry(tmp_path / "cache")
    corrupt, why = DAMAGE[damage]
    corrupt(entry)
    ids = [f"rec{i}" for i in range(5)]
    with pytest.raises(InvalidEntry, match=re.escape(why)):
        read_cache(entry, ids, 2)
    adapter = FolderAdapter(folder)
    with caplog.at_level(logging.WARNING):
        _, signals = load_signals(adapter, cfg(tmp_path / "cache"), "folder")
    assert adapter.reads == 5 and f"is unusable: {why}" in caplog.text
    assert all(np.array_equal(s, np.load(folder / f"rec{i}.npy").astype(np.float32)) for i, s in enumerate(signals))
    assert read_cache(only_entry(tmp_path / "cache"), ids, 2) is not None      # replaced by a valid one


def test_install_keeps_a_valid_entry_and_replaces_an_invalid_one(tmp_path):
    from ecgnet.data.cache import read_cache, write_cache
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "e"
    write_cache(path, [("a", x, None)], 2)                   # "another process" finished it first
    first = (path / "signals.f32").stat().st_ino
    write_cache(path, [("a", x, None)], 2)
    assert (path / "signals.f32").stat().st_ino == first      # kept, ours discarded
    (path / "ids.json").write_text('["b"]')                   # now stale for dataset ["a"] ...
    write_cache(path, [("a", x + 1, None)], 2)               # ... so ours replaces it
    signals, _ = read_cache(path, ["a"], 2)
    assert np.array_equal(signals[0], x + 1) and [p.name for p in tmp_path.iterdir()] == ["e"]


def test_concurrent_writers_replace_a_stale_entry_once_and_agree(folder, tmp_path):
    import threading
    load_signals(FolderAdapter(folder), cfg(tmp_path / "cache"), "folder")
    entry = only_entry(tmp_path / "cache")
    (entry / "ids.json").write_text(json.dumps(["rec1", "rec0", "rec2", "rec3", "rec4"]))     # stale
    start = threading.Barrier(4)

    class Racing(FolderAdapter):
        def load(self, i):
            if i == 0:
                start.wait(timeout=10)            # all four rebuild at the same time
            return super().load(i)

    results, errors = [None] * 4, []

    def run(k):
        try:
            results[k] = load_signals(Racing(folder), cfg(tmp_path / "cache"), "folder")[1]
        except Exception as err:                  # noqa: BLE001 - reported below
            errors.append(err)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = [np.load(folder / f"rec{i}.npy").astype(np.float32) for i in range(5)]
    for signals in results:
        assert all(np.array_equal(a, b) for a, b in zip(signals, expected))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]     # no .tmp or .stale left


def test_unwritable_cache_dir_falls_back_to_no_cache_with_a_warning(folder, tmp_path, monkeypatch, caplog):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    adapter = FolderAdapter(folder)
    with caplog.at_level(logging.WARNING):
        records, signals = load_signals(adapter, cfg(tmp_path / "cache"), "folder")
    assert len(signals) == 5 and adapter.reads == 5 and not list((tmp_path / "cache").iterdir())
    warning = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warning) == 1 and "Permission denied" in warning[0] and "preprocess.cache_dir" in warning[0]


def test_an_adapter_oserror_is_not_mistaken_for_an_unwritable_cache(folder, tmp_path):
    class Broken(FolderAdapter):
        def load(self, i):
            raise OSError("the data disk went away")
    with pytest.raises(OSError, match="the data disk went away"):
        load_signals(Broken(folder), cfg(tmp_path / "cache"), "folder")
    assert not list((tmp_path / "cache").iterdir())             # no half-written entry left
