"""ecgnet's HDF5 layout: the ``hdf5`` adapter (layout checks, QC, windowing, lazy per-process
reading), ``pack`` round trips, ``tools/pack_hdf5.py``, and the pediatric cfgs end to end.
Fixtures are written with h5py in the documented layout."""
import json
import os
import pickle
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch.utils.data

from ecgnet.build import build, resolve_config
from ecgnet.config import PreprocessCfg, load_config
from ecgnet.data import hdf5, hdf5_qc
from ecgnet.data.base import RecordSet
from ecgnet.data.dataset import LazySignals, load_signals
from ecgnet.data.pack import pack_adapter
from ecgnet.data.splits import make_splits
from ecgnet.data.synthetic import SyntheticECG
from ecgnet.registry import MODELS, ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
PEDIATRIC = ["Healthy", "CHD", "Myocarditis", "Kawasaki", "Cardiomyopathy"]
SPLIT = {"type": "random", "val_fraction": 0.2, "test_fraction": 0.2, "train_folds": None, "val_folds": None,
         "test_folds": None, "seed": 0}


def ecg_like(seconds, fs=500.0, leads=12, seed=0):
    """(samples, leads) in mV: 1.2 Hz beats of 1 mV with a little noise; passes every QC check."""
    t = np.arange(int(round(seconds * fs))) / fs
    beats = np.exp(-((t * 1.2) % 1 - 0.5) ** 2 / 0.002)
    gain = np.linspace(0.5, 1.5, leads)
    noise = np.random.default_rng(seed).normal(0, 0.01, (len(t), leads))
    return (beats[:, None] * gain + noise).astype(np.float32)


def write_file(path, signals, labels, class_names=("a", "b"), fs=500.0, leads=None, patient_ids=None,
               ids=None, record_fs=None, variable=None, drop=(), **attrs):
    """Write ``signals`` ((samples, leads) each) in the documented layout; ``drop`` leaves datasets out."""
    leads = leads or LEADS[:signals[0].shape[1]]
    ids = ids or [f"rec{i}" for i in range(len(signals))]
    variable = len({len(s) for s in signals}) > 1 if variable is None else variable
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "ecgnet-hdf5", "version": 1, "fs": fs, "leads": leads,
                        "class_names": list(class_names), **attrs})
        if variable:
            f["signals"] = np.concatenate(signals)
            f["offsets"] = np.concatenate([[0], np.cumsum([len(s) for s in signals])]).astype(np.int64)
        else:
            f.create_dataset("signals", data=np.stack(signals), chunks=(1, *signals[0].shape))
        f["labels"] = np.asarray(labels)
        f.create_dataset("record_id", data=ids, dtype=h5py.string_dtype())
        if patient_ids is not None:
            f.create_dataset("patient_id", data=patient_ids, dtype=h5py.string_dtype())
        if record_fs is not None:
            f["fs"] = np.asarray(record_fs, np.float64)
        for name in drop:
            del f[name]
    return path


def adapter(path, **kw):
    return build("data", {"data": {"type": "hdf5", "root": str(path), "qc_cache": None, **kw}})


def preprocess_cfg(**kw):
    return {**{f: getattr(PreprocessCfg(), f) for f in PreprocessCfg.__dataclass_fields__}, "cache_dir": None, **kw}


@pytest.mark.parametrize("variable", [False, True])
def test_layouts_read_back_whole_records(tmp_path, variable):
    signals = [ecg_like(10, seed=i) for i in range(4)]
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.uint8)
    path = write_file(tmp_path / "f.h5", signals, labels, patient_ids=["p0", "p0", "p1", "p2"], variable=variable)
    a = adapter(path, windowing="full")
    rec = a.records()
    assert rec.ids == ["rec0", "rec1", "rec2", "rec3"] and rec.groups == ["p0", "p0", "p1", "p2"]
    assert rec.labels.dtype == np.float32 and np.array_equal(rec.labels, labels)
    assert rec.fs == 500.0 and rec.leads == LEADS and rec.class_names == ["a", "b"] and rec.skipped == {}
    assert a.lazy and a.record_length_s == (None if variable else 10.0)
    for i in range(4):
        x = a.load(i)
        assert x.dtype == np.float32 and x.flags.c_contiguous and np.array_equal(x, signals[i].T)
        assert a.num_samples(i) == 5000


def test_single_label_file(tmp_path):
    path = write_file(tmp_path / "f.h5", [ecg_like(10)] * 3, np.array([0, 2, 1]), class_names=("x", "y", "z"),
                      ids=["a", "b", "c"])
    rec = adapter(path, windowing="full").records()
    assert not rec.multilabel and rec.labels.dtype == np.int64 and rec.labels.tolist() == [0, 2, 1]
    assert rec.groups == rec.ids                       # no /patient_id: each record is its own group


def qc_fixture(variable):
    """rec0-3 clean, then one record per QC reason (and an empty one in the variable layout)."""
    clean = [ecg_like(10, seed=i) for i in range(4)]
    flat = ecg_like(10)
    flat[:, 3] = 0.002
    missing = ecg_like(10)
    missing[:, 5] = np.nan
    holes = ecg_like(10)
    holes[100:200, 0] = np.inf
    holes[300:400, 2] = np.nan
    pops = ecg_like(10)
    pops[::40, :] = 25.0                              # 2.5 % of samples 25 mV off baseline
    noisy = ecg_like(10) + np.random.default_rng(9).normal(0, 0.5, (5000, 12)).astype(np.float32)
    signals = [*clean, flat, missing, holes, pops, noisy]
    if variable:
        signals.append(np.zeros((0, 12), np.float32))
    return signals


@pytest.mark.parametrize("variable", [False, True])
def test_qc_rejects_and_counts_each_reason(tmp_path, variable):
    signals = qc_fixture(variable)
    path = write_file(tmp_path / "f.h5", signals, np.zeros((len(signals), 2), np.uint8), variable=variable)
    rec = adapter(path, windowing="full").records()
    expected = {hdf5.REASON_FLAT: ["rec4", "rec5"], hdf5.REASON_NONFINITE: ["rec6"],
                hdf5.REASON_AMPLITUDE: ["rec7"], hdf5.REASON_HF: ["rec8"]}
    if variable:
        expected[hdf5.REASON_EMPTY] = ["rec9"]
    assert rec.skipped == expected and rec.ids == ["rec0", "rec1", "rec2", "rec3"]
    # each criterion can be relaxed or turned off
    relaxed = adapter(path, windowing="full", qc={"max_bad_leads": 1, "max_nonfinite_fraction": 0.05,
                                                  "amplitude_mv": None, "max_hf_ratio": None}).records()
    assert set(relaxed.ids) == {f"rec{i}" for i in range(9)}
    a = adapter(path, windowing="full", qc={"enabled": False})
    assert len(a.records().ids) == len(signals) - variable
    holes = a.load(a.records().ids.index("rec6"))
    assert np.isfinite(holes).all() and holes[0, 150] == 0      # NaN/inf within the allowance are served as 0


def test_qc_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"data.qc.flat_std: not a QC setting; did you mean 'flat_std_mv'"):
        adapter(tmp_path / "x.h5", qc={"flat_std": 0.1})
    with pytest.raises(ConfigError, match="data.qc.max_bad_leads: expected int"):
        adapter(tmp_path / "x.h5", qc={"max_bad_leads": "two"})


def test_strict_makes_qc_failures_an_error(tmp_path):
    signals = qc_fixture(False)
    path = write_file(tmp_path / "f.h5", signals, np.zeros((len(signals), 2), np.uint8))
    with pytest.raises(DataError, match=r"5 record\(s\) fail QC \(2 qc: missing or flat lead, 1 qc: NaN/inf"):
        adapter(path, strict=True).records()
    with pytest.raises(DataError, match=r"f.h5: no record left of 9 \(.*4 shorter than one window\)"):
        adapter(path, segment_s=20).records()


def test_qc_result_is_cached_per_file_version(tmp_path, monkeypatch):
    signals = qc_fixture(False)
    path = write_file(tmp_path / "f.h5", signals, np.zeros((len(signals), 2), np.uint8))
    cache = tmp_path / "qc"
    first = adapter(path, qc_cache=str(cache)).records()
    assert len(list(cache.glob("f-*.json"))) == 1
    calls = []
    monkeypatch.setattr(hdf5_qc, "run_qc", lambda *a: calls.append(1) or {})
    assert adapter(path, qc_cache=str(cache)).records().skipped == first.skipped and not calls
    adapter(path, qc_cache=str(cache), qc={"max_hf_ratio": 0.9}).records()      # other settings: recomputed
    assert len(calls) == 1
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))                  # the file changed
    adapter(path, qc_cache=str(cache)).records()
    assert len(calls) == 2


def test_nonstandard_fs_is_resampled_or_rejected(tmp_path):
    signals = [ecg_like(10, 500), ecg_like(20, 250), ecg_like(10, 1000), ecg_like(10, 500)]
    path = write_file(tmp_path / "f.h5", signals, np.eye(4, 2, dtype=np.uint8), record_fs=[500, 250, 1000, 500])
    rejected = adapter(path, fs_policy="reject").records()
    assert rejected.skipped == {hdf5.REASON_FS: ["rec1", "rec2"]} and rejected.ids == ["rec0#w0", "rec3#w0"]
    full = adapter(path, windowing="full")
    assert full.records().fs == 500.0 and full.record_length_s is None
    for i, seconds in enumerate([10, 20, 10, 10]):
        x = full.load(i)
        assert x.shape == (12, seconds * 500) == (12, full.num_samples(i))
    # a resampled record keeps its shape: compare with the same beats generated at 500 Hz
    assert np.corrcoef(full.load(2)[1], ecg_like(10, 500)[:, 1])[0, 1] > 0.95
    windows = adapter(path)
    rec = windows.records()
    assert rec.ids == ["rec0#w0", "rec1#w0", "rec1#w1", "rec2#w0", "rec3#w0"]
    assert all(windows.load(i).shape == (12, 5000) == (12, windows.num_samples(i)) for i in range(5))
    # fs: 250 makes the 250 Hz record the standard one and resamples the others down
    down = adapter(path, windowing="full", fs=250)
    assert [down.load(i).shape[1] for i in range(4)] == [2500, 5000, 2500, 2500]


def test_windowing_ids_labels_and_groups(tmp_path):
    lengths_s = [25, 10, 9, 30]
    signals = [ecg_like(s, seed=i) for i, s in enumerate(lengths_s)]
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.uint8)
    path = write_file(tmp_path / "f.h5", signals, labels, ids=["a", "b", "c", "d"], patient_ids=["p", "q", "r", "p"])
    a = adapter(path, segment_s=10)
    rec = a.records()
    assert rec.ids == ["a#w0", "a#w1", "b#w0", "d#w0", "d#w1", "d#w2"]
    assert rec.skipped == {hdf5.REASON_SHORT: ["c"]}
    assert rec.groups == ["p", "p", "q", "p", "p", "p"]
    assert rec.labels.tolist() == [[1, 0], [1, 0], [0, 1], [0, 0], [0, 0], [0, 0]]
    assert rec.units == ["p", "p", "q", "p", "p", "p"]                  # evaluation regroups them per patient
    assert adapter(path, segment_s=10, eval_unit="record").records().units == ["a", "a", "b", "d", "d", "d"]
    assert a.record_length_s == 10
    assert np.array_equal(a.load(1), signals[0][5000:10000].T)
    assert np.array_equal(a.load(5), signals[3][10000:15000].T)
    assert all(a.num_samples(i) == 5000 for i in range(len(rec.ids)))
    assert adapter(path, segment_s=5).records().ids[:5] == ["a#w0", "a#w1", "a#w2", "a#w3", "a#w4"]


@pytest.mark.parametrize("with_patients", [True, False])
def test_split_keeps_patients_and_records_on_one_side(tmp_path, with_patients):
    rng = np.random.default_rng(0)
    n = 60
    signals = [ecg_like(10 * (1 + i % 3), fs=50, leads=2, seed=i) for i in range(n)]   # 1-3 windows each
    labels = (rng.random((n, 3)) < [0.5, 0.3, 0.2]).astype(np.uint8)
    patients = [f"p{i // 3}" for i in range(n)] if with_patients else None
    path = write_file(tmp_path / "f.h5", signals, labels, class_names=("a", "b", "c"), fs=50.0,
                      patient_ids=patients)
    rec = adapter(path, qc={"max_hf_ratio": None}).records()
    assert len(rec.ids) == 20 * (1 + 2 + 3)
    splits = make_splits(rec, SPLIT)
    (train, val), test = splits["folds"][0], splits["test"]
    parent = np.array([rid.split("#")[0] for rid in rec.ids])
    groups = np.asarray(rec.groups)
    parts = [train, val, test]
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            assert not set(groups[a]) & set(groups[b]) and not set(parent[a]) & set(parent[b])
    assert abs(len(test) / len(rec.ids) - 0.2) < 0.08 and abs(len(val) / len(rec.ids) - 0.2) < 0.08


def big_file(path, n=300, seconds=10, fs=500.0):
    """n records of (seconds * fs, 12) float32, written a block at a time."""
    base = ecg_like(seconds, fs)
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "ecgnet-hdf5", "version": 1, "fs": fs, "leads": LEADS, "class_names": ["a"]})
        ds = f.create_dataset("signals", (n, *base.shape), np.float32, chunks=(1, *base.shape))
        for start in range(0, n, 50):
            ds[start:start + 50] = base + np.arange(start, min(n, start + 50), dtype=np.float32)[:, None, None] * 1e-3
        f["labels"] = (np.arange(n) % 2)[:, None].astype(np.uint8)
        f.create_dataset("record_id", data=[f"r{i}" for i in range(n)], dtype=h5py.string_dtype())
    return path


def resident_bytes():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_lazy_reading_reads_a_record_at_a_time_and_memory_stays_flat(tmp_path, monkeypatch):
    path = big_file(tmp_path / "big.h5")                      # 300 x 5000 x 12 float32 = 72 MB
    record_bytes = 5000 * 12 * 4
    reads = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        out = original(self, key)
        if self.name == "/signals":
            reads.append(out.nbytes)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    a = adapter(path, windowing="full")
    records, signals = load_signals(a, preprocess_cfg(cache_dir=str(tmp_path / "cache")), "hdf5")
    assert isinstance(signals, LazySignals) and not (tmp_path / "cache").exists()
    assert max(reads) <= hdf5_qc.QC_BLOCK_BYTES and sum(reads) == 300 * record_bytes   # QC: each record once
    reads.clear()
    signals[0]
    before = resident_bytes()
    for _ in range(2):                                       # 144 MB read in total
        for i in range(len(records.ids)):
            assert signals[i].shape == (12, 5000)
    growth = resident_bytes() - before
    assert reads and max(reads) == record_bytes and len(reads) == 2 * 300 + 1
    assert growth < 16 << 20, f"resident memory grew by {growth / 2**20:.1f} MB reading a 72 MB file twice"


class _Probe(torch.utils.data.Dataset):
    def __init__(self, a):
        self.a = a

    def __len__(self):
        return 4

    def __getitem__(self, i):
        x = self.a.load(i)
        return os.getpid(), self.a._h5_pid, float(x.sum())


def test_each_process_opens_its_own_handle(tmp_path):
    path = write_file(tmp_path / "f.h5", [ecg_like(10, seed=i) for i in range(4)], np.zeros((4, 2), np.uint8))
    a = adapter(path, windowing="full")
    expected = [float(a.load(i).sum()) for i in range(4)]
    parent_handle = a._h5
    assert a._h5_pid == os.getpid()
    loader = torch.utils.data.DataLoader(_Probe(a), batch_size=1, num_workers=2)
    rows = [(int(p), int(h), float(s)) for p, h, s in loader]
    assert all(pid != os.getpid() and handle == pid for pid, handle, _ in rows)   # opened in the worker
    assert [s for *_, s in rows] == pytest.approx(expected)
    assert a._h5 is parent_handle and a._h5.id.valid                             # the parent's is untouched
    clone = pickle.loads(pickle.dumps(a))                                         # spawn: no handle travels
    assert clone._h5 is None and np.array_equal(clone.load(1), a.load(1))


def test_missing_file_is_a_one_line_data_error(tmp_path):
    with pytest.raises(DataError) as err:
        adapter(tmp_path / "nope.h5")
    assert "nope.h5: HDF5 file not found" in str(err.value) and "pack_hdf5.py" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"drop": ["labels"]}, r"f.h5:/labels: missing; expected \[3, 2\] multi-hot 0/1 or \[3\] int class index"),
    ({"drop": ["record_id"]}, r"f.h5:/record_id: missing; expected \[N\] utf-8 strings"),
    ({"drop": ["offsets"], "variable": True}, r"f.h5:/offsets: missing; a 2-D /signals \[sum T, L\] needs int64 \[4\]"),
    ({"format": "hdf5"}, r"f.h5: root attribute 'format' is 'hdf5', expected 'ecgnet-hdf5'"),
    ({"version": 2}, r"f.h5: layout version 2, this ecgnet reads version 1"),
    ({"leads": ["I", "II"]}, r"f.h5:/signals: is float32 \(3, 5000, 12\), expected float \[3, T, 2\]"),
    ({"labels": np.zeros((3, 3))}, r"f.h5:/labels: is float64 \(3, 3\), expected \[3, 2\] multi-hot"),
    ({"labels": np.full((3, 2), 0.5)}, r"f.h5:/labels: multi-hot labels must be 0 or 1"),
    ({"labels": np.array([0, 1, 5])}, r"f.h5:/labels: single-label classes must be integers in \[0, 2\)"),
    ({"ids": ["a", "a", "b"]}, r"f.h5:/record_id: record ids are not unique"),
])
def test_wrong_layout_names_the_dataset_and_what_is_expected(tmp_path, change, message):
    change = dict(change)
    labels = change.pop("labels", np.zeros((3, 2), np.uint8))
    write_file(tmp_path / "f.h5", [ecg_like(10)] * 3, labels, **change)
    with pytest.raises(DataError, match=message) as err:
        adapter(tmp_path / "f.h5").records()
    assert "\n" not in str(err.value)


def test_attribute_missing_and_not_hdf5(tmp_path):
    path = write_file(tmp_path / "f.h5", [ecg_like(10)] * 3, np.zeros((3, 2), np.uint8))
    with h5py.File(path, "a") as f:
        del f.attrs["class_names"]
    with pytest.raises(DataError, match="root attribute 'class_names' missing; expected a list of class names"):
        adapter(path).records()
    (tmp_path / "g.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="g.h5: not a readable HDF5 file"):
        adapter(tmp_path / "g.h5").records()


@pytest.mark.parametrize("settings, layout, compression", [
    ({"mode": "multilabel"}, "fixed", None),
    ({"mode": "multilabel"}, "fixed", "gzip"),
    ({"mode": "single_label", "max_duration_s": 9}, "variable", "lzf"),
])
def test_pack_round_trip(tmp_path, settings, layout, compression):
    source = SyntheticECG(num_records=12, fs=100, duration_s=5, records_per_patient=3, **settings)
    summary = pack_adapter(source, tmp_path / "p.h5", preprocess_cfg(), compression=compression)
    assert summary["records"] == 12 and summary["layout"] == layout and not summary["failed"]
    with h5py.File(tmp_path / "p.h5") as f:
        assert ("offsets" in f) == (layout == "variable") and f["signals"].compression == compression
        assert f["signals"].ndim == (3 if layout == "fixed" else 2)
        if layout == "fixed":
            assert f["signals"].chunks == (1, 500, 12)
    back = adapter(tmp_path / "p.h5", windowing="full")
    a, b = source.records(), back.records()
    assert b.ids == a.ids and b.groups == a.groups and b.class_names == a.class_names
    assert b.fs == a.fs and b.leads == a.leads and np.array_equal(b.labels, a.labels)
    assert b.labels.dtype == a.labels.dtype
    for i in range(12):
        assert np.allclose(back.load(i), source.load(i), atol=1e-6)


def test_pack_applies_preprocessing_and_refuses_to_overwrite(tmp_path):
    source = SyntheticECG(num_records=10, fs=100, duration_s=5)
    summary = pack_adapter(source, tmp_path / "p.h5", preprocess_cfg(fs=50.0, bandpass_hz=[0.5, 20]))
    assert summary["fs"] == 50.0
    back = adapter(tmp_path / "p.h5", windowing="full")
    assert back.records().fs == 50.0 and back.load(0).shape == (12, 250)
    with pytest.raises(ConfigError, match="already exists"):
        pack_adapter(source, tmp_path / "p.h5", preprocess_cfg())
    assert not list(tmp_path.glob(".*.tmp"))


def test_pack_skips_unreadable_records_and_repacks_windows(tmp_path):
    class Flaky(SyntheticECG):
        strict = False

        def load(self, index):
            if index == 3:
                raise DataError("syn00003.dat: truncated")
            return super().load(index)

    summary = pack_adapter(Flaky(num_records=10, fs=100, duration_s=20), tmp_path / "p.h5", preprocess_cfg())
    assert summary["records"] == 9 and summary["failed"] == {"syn00003": "syn00003.dat: truncated"}
    windows = adapter(tmp_path / "p.h5")
    assert pack_adapter(windows, tmp_path / "w.h5", preprocess_cfg())["layout"] == "fixed"   # 10 s windows
    again = adapter(tmp_path / "w.h5", windowing="full")
    assert again.records().ids == windows.records().ids and again.load(5).shape == (12, 1000)
    assert np.array_equal(again.load(5), windows.load(5))


def test_pack_tool(tmp_path, capsys):
    import pack_hdf5
    cfg = tmp_path / "data.yaml"
    cfg.write_text("data: {type: synthetic, num_records: 10, fs: 100, duration_s: 5}\n")
    out = tmp_path / "out.h5"
    assert pack_hdf5.main(["--config", str(cfg), "--out", str(out), "--opts", "data.num_records=12"]) == 0
    assert "packed 12 records (fixed length, 100 Hz" in capsys.readouterr().out
    assert pack_hdf5.main(["--config", str(cfg), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert pack_hdf5.main(["--config", str(cfg), "--out", str(out), "--overwrite", "--opts", "data.nope=1"]) == 2
    assert "data.nope: not a setting of dataset 'synthetic'" in capsys.readouterr().err


class FiveClassSynthetic(SyntheticECG):
    """The synthetic adapter with its 6th class (never drawn) dropped and the others renamed."""

    def records(self):
        rec = super().records()
        return RecordSet(ids=rec.ids, groups=rec.groups, labels=rec.labels[:, :5], class_names=PEDIATRIC,
                         fs=rec.fs, leads=rec.leads)


def test_pediatric_focal_cfg_trains_and_evaluates_from_a_packed_file(tmp_path):
    from ecgnet.engine.evaluate import evaluate
    from ecgnet.engine.run import train
    source = FiveClassSynthetic(num_records=150, fs=100, duration_s=20, records_per_patient=2,
                                prevalence=[0.2, 0.2, 0.15, 0.15, 0.0])
    pack_adapter(source, tmp_path / "pediatric.h5", preprocess_cfg())
    opts = [f"data.root={tmp_path / 'pediatric.h5'}", "data.fs=null", f"data.qc_cache={tmp_path / 'qc'}",
            "model.widths=[8,8,16,16]", "model.hidden=16", "train.epochs=2", "train.batch_size=32",
            "train.tensorboard=false", "schedule.warmup_epochs=0", "schedule.cooldown_epochs=1", "eval.plots=false"]
    cfg = load_config(REPO / "cfgs/pediatric/se_resnet1d_focal_tuned.yaml", opts)
    assert cfg["loss"] == {"type": "focal", "gamma": 2.0, "alpha": 0.25} and cfg["thresholds"]["tune"]
    run = train(cfg, work_dir=str(tmp_path / "run"))
    splits = json.loads((run / "splits.json").read_text())
    assert all(rid.split("#w")[1] in ("0", "1") for rid in splits["test"])     # two 10 s windows per record
    metrics = evaluate(run)
    assert [row["class"] for row in metrics["model"]["per_class"]] == PEDIATRIC
    # scored per patient: the windows of a patient's records are one prediction, not one each
    patients = {rid.split("#w")[0] for rid in splits["test"]}
    patients = {source.records().groups[source.records().ids.index(rid)] for rid in patients}
    assert (run / "eval/test/metrics.json").is_file() and metrics["model"]["n"] == len(patients)


@pytest.mark.skipif("se_attention1d" not in MODELS, reason="backbone not registered")
def test_19class_full_length_cfg_runs_on_variable_length_records(tmp_path):
    from ecgnet.engine.run import train
    source = SyntheticECG(num_records=60, fs=50, duration_s=5, max_duration_s=30, records_per_patient=1)
    assert pack_adapter(source, tmp_path / "var.h5", preprocess_cfg())["layout"] == "variable"
    opts = [f"data.root={tmp_path / 'var.h5'}", "data.fs=null", "data.qc_cache=null", "model.widths=[8,8,16,16]",
            "train.epochs=1", "train.batch_size=16", "train.tensorboard=false", "schedule.warmup_epochs=0",
            "schedule.cooldown_epochs=1", "preprocess.bandpass_hz=[0.5,20]"]
    cfg = load_config(REPO / "cfgs/pediatric/se_attention1d_19class_full.yaml", opts)
    run = train(cfg, work_dir=str(tmp_path / "run"))
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits["test"]) + len(splits["folds"][0]["train"]) + len(splits["folds"][0]["val"]) == 60
    assert (run / "best.pt").is_file()


def test_pediatric_cfgs_resolve_with_their_settings():
    cfgs = {p.stem: p for p in (REPO / "cfgs/pediatric").glob("*.yaml")}
    base = resolve_config(load_config(cfgs["se_resnet1d_baseline_bce"]))
    # relative roots are stored absolute, resolved against the directory the command runs from
    assert base["data"]["root"] == str(Path.cwd() / "data/pediatric/pediatric.h5") and base["thresholds"]["tune"] is False
    assert base["split"]["val_fraction"] == base["split"]["test_fraction"] == 0.2
    over = resolve_config(load_config(cfgs["se_resnet1d_oversample_tuned"]))
    assert over["sampler"]["type"] == "oversample" and over["thresholds"]["tune"]
    if "se_attention1d" in MODELS:
        full = resolve_config(load_config(cfgs["se_attention1d_19class_full"]))
        assert full["data"]["windowing"] == "full" and full["sampler"]["type"] == "class_balanced"
        assert [a["type"] for a in full["augment"]] == ["gaussian_noise", "amplitude_scale", "time_warp",
                                                        "baseline_wander"]


# ---- data.window_s -> data.segment_s: old configs, --opts and stored run configs keep working ----

def test_old_window_s_is_read_as_segment_s_from_yaml_opts_and_stored_configs(tmp_path, caplog, monkeypatch):
    from ecgnet.engine.evaluate import _checked_config
    from ecgnet.engine.run import _check_unchanged
    from ecgnet.registry import DATASETS
    monkeypatch.setattr(DATASETS, "_warned", set())        # the warning is said once per process
    path = write_file(tmp_path / "f.h5", [ecg_like(20, seed=i) for i in range(3)], np.zeros((3, 2), np.uint8))

    def config(file, setting=""):
        out = tmp_path / file
        out.write_text(f"name: run\ndata: {{type: hdf5, root: {path}, qc_cache: null{setting}}}\n"
                       "model: {type: cnn1d}\nloss: {type: bce}\n")
        return out

    expected = resolve_config(load_config(config("new.yaml", ", segment_s: 5")))
    assert expected["data"]["segment_s"] == 5 and "window_s" not in expected["data"] and not caplog.records
    with caplog.at_level("WARNING", logger="ecgnet.registry"):
        from_yaml = resolve_config(load_config(config("old.yaml", ", window_s: 5")))
        from_opts = resolve_config(load_config(config("plain.yaml"), ["data.window_s=5"]))
    assert from_yaml == from_opts == expected
    assert [r.getMessage() for r in caplog.records] == [
        "data.window_s is deprecated for dataset 'hdf5': read as data.segment_s; rename it in the config"]
    # what an earlier run stored (config.yaml, checkpoints): resolved with the old name
    stored = {**expected, "data": {k if k != "segment_s" else "window_s": v for k, v in expected["data"].items()}}
    assert _checked_config(stored, tmp_path / "best.pt") == expected
    _check_unchanged(expected, stored, tmp_path / "config.yaml", tmp_path / "last.pt")     # resume: no change
    assert build("data", stored).records().ids[:4] == ["rec0#w0", "rec0#w1", "rec0#w2", "rec0#w3"]


def test_old_and_new_name_together_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        adapter(tmp_path / "f.h5", window_s=5, segment_s=10)
    assert str(err.value) == ("data.window_s: is the old name of data.segment_s, which is set too; "
                              "keep only data.segment_s")
