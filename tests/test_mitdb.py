"""MIT-BIH adapter: AAMI mapping, beat windows at record edges, the Kaggle preset, DS1/DS2 and
inter-/intra-patient splits, read-once loading, cache, skips, the Kaggle CSV export round trip.
Fixtures are small records written with wfdb.wrsamp / wfdb.wrann in the PhysioNet layout."""
import importlib.util
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import wfdb

import ecgnet.data.mitdb as mitdb_module
from ecgnet.build import resolve_config
from ecgnet.config import PreprocessCfg, load_config
from ecgnet.data.dataset import load_signals
from ecgnet.data.kaggle_csv import KaggleHeartbeatCSV
from ecgnet.data.mitdb import (AAMI_CLASS_OF, AAMI_CLASSES, DS1, DS2, MITDB, PACED, SKIP_EDGE, SKIP_MISSING,
                               SKIP_OUTSIDE, SKIP_PACED, dat_frames, export_kaggle_csv, kaggle_beat_lengths)
from ecgnet.data.splits import assert_disjoint, make_splits
from ecgnet.engine.run import prepare_data
from ecgnet.registry import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "mitdb"
FS, SECONDS = 360, 24
N_SAMPLES = FS * SECONDS
# per record: beat symbols cycle through this list; '+' and '~' are non-beat annotations
SYMBOLS = ["N", "N", "L", "N", "A", "N", "V", "N", "R", "F", "N", "/", "N", "f", "a", "N", "E", "j", "J", "N",
           "e", "Q", "S", "N", "N", "N", "V", "A", "N", "N"]
RECORDS = {"100": ("MLII", "V5"), "103": ("MLII", "V2"), "101": ("MLII", "V1"), "106": ("MLII", "V1"),
           "108": ("MLII", "V1"), "109": ("MLII", "V1"), "102": ("V5", "V2"), "107": ("MLII", "V1")}
SPLIT = {"type": "predefined", "val_fraction": 0.25, "test_fraction": 0.2, "train_folds": [1], "val_folds": None,
         "test_folds": [2], "seed": 0}


def beat_samples(name: str) -> np.ndarray:
    """R peaks every ~0.75 s, the first 30 samples from the start and the last 20 from the end."""
    rng = np.random.default_rng(int(name))
    inner = np.cumsum(rng.integers(230, 310, size=40)) + 30
    inner = inner[inner < N_SAMPLES - 300]
    return np.concatenate([[30], inner, [N_SAMPLES - 20]]).astype(np.int64)


def write_record(folder: Path, name: str, leads=("MLII", "V1")) -> None:
    rng = np.random.default_rng(int(name) + 1000)
    t = np.arange(N_SAMPLES)
    signal = 0.05 * rng.normal(size=(N_SAMPLES, 2)) + 0.2 * np.sin(2 * np.pi * 0.3 * t / FS)[:, None]
    for r in beat_samples(name):
        signal[:, 0] += 1.2 * np.exp(-0.5 * ((t - r) / 5) ** 2)
        signal[:, 1] -= 0.6 * np.exp(-0.5 * ((t - r) / 8) ** 2)
    wfdb.wrsamp(name, fs=FS, units=["mV", "mV"], sig_name=list(leads), p_signal=signal, fmt=["212", "212"],
                adc_gain=[200.0, 200.0], baseline=[1024, 1024], write_dir=str(folder))
    beats = beat_samples(name)
    symbols = [SYMBOLS[i % len(SYMBOLS)] for i in range(len(beats))]
    extra = {int(beats[3]) + 40: "+", int(beats[8]) + 40: "~"}          # non-beat annotations
    samples = np.concatenate([beats, list(extra)])
    symbols = symbols + list(extra.values())
    order = np.argsort(samples, kind="stable")
    wfdb.wrann(name, "atr", samples[order], symbol=[symbols[i] for i in order], write_dir=str(folder))


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mitdb")
    for name, leads in RECORDS.items():
        write_record(folder, name, leads)
    (folder / "RECORDS").write_text("\n".join(sorted(RECORDS)) + "\n")
    return folder


@pytest.fixture
def db_copy(db, tmp_path) -> Path:
    out = tmp_path / "mitdb"
    out.mkdir()
    for f in db.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def prep(cache_dir=None, **kw):
    out = {f: getattr(PreprocessCfg(), f) for f in PreprocessCfg.__dataclass_fields__}
    return {**out, "cache_dir": None if cache_dir is None else str(cache_dir), **kw}


def expected_labels(name: str) -> list[int]:
    return [AAMI_CLASSES.index(AAMI_CLASS_OF[SYMBOLS[i % len(SYMBOLS)]]) for i in range(len(beat_samples(name)))]


def test_ds1_ds2_are_de_chazals_lists():
    assert DS1 == ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201",
                   "203", "205", "207", "208", "209", "215", "220", "223", "230")
    assert DS2 == ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213",
                   "214", "219", "221", "222", "228", "231", "232", "233", "234")
    assert PACED == ("102", "104", "107", "217")
    everything = set(DS1) | set(DS2) | set(PACED)
    assert len(DS1) == len(DS2) == 22 and len(everything) == 48          # disjoint, covering all 48 records
    assert not set(DS1) & set(DS2) and not (set(DS1) | set(DS2)) & set(PACED)


def test_aami_mapping_and_non_beats_ignored(db):
    records = MITDB(str(db), split_mode="intra").records()
    assert records.class_names == ["N", "S", "V", "F", "Q"] and records.labels.dtype == np.int64
    for symbol, cls in {"N": "N", "L": "N", "R": "N", "e": "N", "j": "N", "A": "S", "a": "S", "J": "S",
                        "S": "S", "V": "V", "E": "V", "F": "F", "/": "Q", "f": "Q", "Q": "Q"}.items():
        assert AAMI_CLASS_OF[symbol] == cls
    ids = np.asarray(records.ids)
    for name in ("100", "101", "107"):
        mine = np.char.startswith(ids, f"{name}:")
        assert records.labels[mine].tolist() == expected_labels(name)               # '+' and '~' left out
        assert [int(i.split(":")[1]) for i in ids[mine]] == beat_samples(name).tolist()
    assert records.ids[0] == "100:000030" and records.groups == records.ids            # intra: a beat per group
    assert records.skipped == {"source record without lead MLII": ["102"]}
    assert records.folds is None and records.leads == ["MLII"]


def test_beat_windows_and_both_record_edges(db):
    adapter = MITDB(str(db), beat_window_s=[0.25, 0.45], split_mode="intra", record_names=["100"])
    records = adapter.records()
    assert adapter.record_length_s == pytest.approx(252 / 360)
    signal = wfdb.rdrecord(str(db / "100"), channel_names=["MLII"]).p_signal[:, 0].astype(np.float32)
    beats = beat_samples("100")
    first, middle, last = adapter.load(0), adapter.load(5), adapter.load(len(beats) - 1)
    assert first.shape == middle.shape == last.shape == (1, 252) and first.dtype == np.float32
    r = beats[5]
    assert np.allclose(middle[0], signal[r - 90:r + 162])
    assert np.all(first[0, :60] == 0) and np.allclose(first[0, 60:], signal[:192])    # R at 30: 60 zeros before
    tail = N_SAMPLES - beats[-1] + 90                                                 # samples left in the record
    assert np.allclose(last[0, :tail], signal[-tail:]) and np.all(last[0, tail:] == 0)
    assert len(records.ids) == len(beats)
    dropped = MITDB(str(db), edge="drop", split_mode="intra", record_names=["100"]).records()
    assert dropped.skipped[SKIP_EDGE] == [f"100:{beats[0]:06d}", f"100:{beats[-1]:06d}"]
    assert len(dropped.ids) == len(beats) - 2


def test_resampled_and_filtered_beats(db):
    adapter = MITDB(str(db), fs=180, bandpass_hz=[0.5, 40], split_mode="intra", record_names=["101"])
    adapter.records()
    beat = adapter.load(4)
    assert beat.shape == (1, 45 + 81) and adapter.records().fs == 180
    assert abs(float(np.median(beat))) < 0.1            # baseline sine removed by the whole-record filter
    assert np.argmax(beat[0]) == pytest.approx(45, abs=2)   # the R peak sits `before` samples in


def test_kaggle_beat_lengths_follow_median_rr():
    r = np.array([0, 100, 200, 1300, 1350, 1400, 2600, 4000, 4200])
    lengths = kaggle_beat_lengths(r, 125.0)
    # windows of 1250 samples: [0,100,200] T=100; [1300,1350,1400] T=50; [2600] alone -> record median
    # RR (median of 100,100,1100,50,50,1200,1400,200 = 150 -> 180, capped at 187); [4000,4200] T=200 -> 187
    assert lengths.tolist() == [120, 120, 120, 60, 60, 60, 180, 187, 187]


def test_kaggle_preset_shape_range_and_padding(db):
    adapter = MITDB(str(db), preset="kaggle", split_mode="intra", record_names=["100", "101"])
    records = adapter.records()
    assert records.fs == 125.0 and adapter.record_length_s == pytest.approx(187 / 125)
    beats = np.stack([adapter.load(i)[0] for i in range(len(records.ids))])
    assert beats.shape == (len(records.ids), 187) and beats.dtype == np.float32
    assert beats.min() >= 0 and beats.max() <= 1
    r125 = np.round(beat_samples("100") * 125 / 360).astype(int)
    lengths = kaggle_beat_lengths(r125, 125.0)
    for i in (1, 7):
        assert beats[i, :lengths[i]].max() == pytest.approx(1) and beats[i, :lengths[i]].min() == pytest.approx(0)
        assert np.all(beats[i, lengths[i]:] == 0)                                      # zero padded
    last = len(beat_samples("100")) - 1                                                # 20 samples before the end
    assert np.count_nonzero(beats[last]) <= 8 and np.all(beats[last, 8:] == 0)
    with pytest.raises(ConfigError, match="data.beat_window_s"):
        MITDB(str(db), preset="kaggle", beat_window_s=[0.2, 0.4])
    with pytest.raises(ConfigError, match="data.fs"):
        MITDB(str(db), preset="kaggle", fs=360)


def test_inter_patient_folds_and_disjoint_splits(db):
    records = MITDB(str(db), split_mode="inter").records()
    names = np.array([i.split(":")[0] for i in records.ids])
    assert set(names) == {"100", "103", "101", "106", "108", "109"}
    assert records.skipped == {SKIP_PACED: ["102", "107"]}                             # paced, whatever the lead
    assert records.groups == names.tolist()
    assert set(names[records.folds == 1]) <= set(DS1) and set(names[records.folds == 2]) <= set(DS2)
    splits = make_splits(records, SPLIT)
    train, val = splits["folds"][0]
    test = splits["test"]
    assert set(names[test]) == {"100", "103"}
    assert set(names[train]) | set(names[val]) == {"101", "106", "108", "109"}
    assert len(set(names[val])) >= 1 and not set(names[train]) & set(names[val])
    assert_disjoint(records, {"train": train, "val": val, "test": test})


def test_intra_patient_split_is_stratified_over_beats(db):
    records = MITDB(str(db), split_mode="intra").records()
    cfg = {**SPLIT, "type": "random", "val_fraction": 0.1, "test_fraction": 0.3}
    splits = make_splits(records, cfg)
    train, val = splits["folds"][0]
    test = splits["test"]
    assert len(train) + len(val) + len(test) == len(records.ids)
    names = np.array([i.split(":")[0] for i in records.ids])
    assert set(names[train]) & set(names[test])                 # the paradigm mixes a patient's beats
    overall = np.bincount(records.labels, minlength=5) / len(records.ids)
    in_test = np.bincount(records.labels[test], minlength=5) / len(test)
    assert np.abs(in_test - overall).max() < 0.03


def test_each_source_record_is_read_once(db, monkeypatch):
    reads = Counter()
    real = wfdb.rdrecord

    def counting(path, *args, **kwargs):
        reads[Path(path).name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(mitdb_module.wfdb, "rdrecord", counting)
    adapter = MITDB(str(db), split_mode="intra")
    records, signals = load_signals(adapter, prep(), "mitdb")
    assert len(signals) == len(records.ids) and all(s.shape == (1, 252) for s in signals)
    assert dict(reads) == {name: 1 for name in RECORDS if name != "102"}


def test_cache_hit_and_rebuild(db_copy, tmp_path, monkeypatch):
    reads = Counter()
    real = wfdb.rdrecord
    monkeypatch.setattr(mitdb_module.wfdb, "rdrecord",
                        lambda path, *a, **k: reads.update([Path(path).name]) or real(path, *a, **k))
    cache = tmp_path / "cache"
    first, sig1 = load_signals(MITDB(str(db_copy), split_mode="inter"), prep(cache), "mitdb")
    assert sum(reads.values()) == 6
    second, sig2 = load_signals(MITDB(str(db_copy), split_mode="inter"), prep(cache), "mitdb")
    assert sum(reads.values()) == 6 and second.ids == first.ids                      # served from the cache
    assert all(np.array_equal(a, b) for a, b in zip(sig1, sig2))
    load_signals(MITDB(str(db_copy), split_mode="inter", beat_window_s=[0.3, 0.5]), prep(cache), "mitdb")
    assert sum(reads.values()) == 12                                                  # a setting changed
    wfdb.wrann("101", "atr", beat_samples("101")[:10], symbol=["V"] * 10, write_dir=str(db_copy))
    changed, _ = load_signals(MITDB(str(db_copy), split_mode="inter"), prep(cache), "mitdb")
    assert sum(reads.values()) == 18 and len(changed.ids) < len(first.ids)           # a source file changed
    assert len(list(cache.iterdir())) == 3


def test_corrupt_record_skips_its_beats_counted_and_strict_fails(db_copy, caplog):
    (db_copy / "103.dat").write_bytes((db_copy / "103.dat").read_bytes()[:1001])      # truncated
    adapter = MITDB(str(db_copy), split_mode="inter")
    all_ids = adapter.records().ids
    with caplog.at_level(logging.WARNING):
        records, signals = load_signals(adapter, prep(), "mitdb")
    lost = [i for i in all_ids if i.startswith("103:")]
    assert len(lost) == len(beat_samples("103"))
    assert records.skipped["unreadable"] == lost and not any(i.startswith("103:") for i in records.ids)
    assert len(signals) == len(all_ids) - len(lost)
    assert "103.dat" in caplog.text and f"skipped {len(lost)} unreadable" in caplog.text
    with pytest.raises(DataError, match="103.dat"):
        load_signals(MITDB(str(db_copy), split_mode="inter", strict=True), prep(), "mitdb")


def test_missing_folder_files_and_records_list(db_copy, tmp_path):
    with pytest.raises(DataError, match="experiments/mitdb/setup.sh") as err:
        MITDB(str(tmp_path / "nowhere")).records()
    assert "\n" not in str(err.value)
    (db_copy / "106.atr").unlink()
    (db_copy / "108.dat").unlink()
    records = MITDB(str(db_copy), split_mode="inter").records()
    assert records.skipped[SKIP_MISSING] == ["106", "108"]
    with pytest.raises(DataError, match="missing"):
        MITDB(str(db_copy), split_mode="inter", strict=True).records()
    with pytest.raises(ConfigError, match="data.record_names"):
        MITDB(str(db_copy), record_names=["999"]).records()
    (db_copy / "RECORDS").unlink()
    with pytest.raises(DataError, match="RECORDS"):
        MITDB(str(db_copy)).records()


@pytest.mark.parametrize("cfg_name", ["cnn1d_inter_patient", "cnn1d_kaggle_beats"])
def test_shipped_configs_prepare_and_split(db, cfg_name):
    cfg = resolve_config(load_config(REPO / "cfgs" / "mitdb" / f"{cfg_name}.yaml",
                                     [f"data.root={db}", "preprocess.cache_dir=null",
                                      "split.val_fraction=0.25"]))
    data = prepare_data(cfg)
    splits = make_splits(data.records, cfg["split"])
    assert data.window == len(data.signals[0][0]) and data.records.num_classes == 5
    assert min(len(p) for p in (*splits["folds"][0], splits["test"])) > 0


def test_export_kaggle_csv_round_trip(db, tmp_path):
    out = tmp_path / "csv"
    result = export_kaggle_csv(str(db), str(out), split_mode="inter")
    assert sorted(p.name for p in out.iterdir()) == ["mitbih_test.csv", "mitbih_test.csv.ids",
                                                     "mitbih_train.csv", "mitbih_train.csv.ids"]
    adapter = MITDB(str(db), preset="kaggle", split_mode="inter")
    source = adapter.records()
    index = {beat_id: i for i, beat_id in enumerate(source.ids)}
    reader = KaggleHeartbeatCSV(str(out))
    rows = reader.records()
    assert len(rows.ids) == len(source.ids) and rows.class_names == source.class_names
    for k, name in enumerate(("mitbih_train.csv", "mitbih_test.csv")):
        ids = result["files"][name]
        assert (out / f"{name}.ids").read_text().split() == ids
        assert {i.split(":")[0] for i in ids} <= set(DS1 if k == 0 else DS2)
        for row, beat_id in enumerate(ids):
            i = rows.ids.index(f"{name}:{row}")
            assert rows.folds[i] == k + 1 and rows.labels[i] == source.labels[index[beat_id]]
            assert np.array_equal(reader.load(i), adapter.load(index[beat_id]))   # exact through %.18e


def test_export_tool_intra_is_stratified(db, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("mitdb_to_kaggle_csv", REPO / "tools" / "mitdb_to_kaggle_csv.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--root", str(db), "--out", str(tmp_path / "csv"), "--test-fraction", "0.25"]) == 0
    printed = capsys.readouterr().out
    assert "mitbih_train.csv" in printed and "source record without lead MLII" in printed
    rows = KaggleHeartbeatCSV(str(tmp_path / "csv")).records()
    train = np.bincount(rows.labels[rows.folds == 1], minlength=5)
    test = np.bincount(rows.labels[rows.folds == 2], minlength=5)
    assert test.sum() / (train.sum() + test.sum()) == pytest.approx(0.25, abs=0.01)
    assert abs(test[0] / test.sum() - train[0] / train.sum()) < 0.03
    assert tool.main(["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2


# ---- the real database, when it is present beside the checkout ----
real = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} not present")


@real
def test_real_record_100_matches_its_annotations():
    adapter = MITDB(str(REAL), split_mode="intra", record_names=["100"])
    records = adapter.records()
    annotation = wfdb.rdann(str(REAL / "100"), "atr")
    symbols = Counter(annotation.symbol)
    assert symbols["N"] == 2239 and symbols["A"] == 33 and symbols["V"] == 1
    counts = dict(zip(AAMI_CLASSES, np.bincount(records.labels, minlength=5).tolist()))
    assert counts == {"N": symbols["N"], "S": symbols["A"], "V": symbols["V"], "F": 0, "Q": 0}
    beat = adapter.load(100)
    assert beat.shape == (1, 252) and np.isfinite(beat).all()


@real
def test_real_beat_totals_match_the_database_readme():
    records = MITDB(str(REAL), split_mode="intra").records()       # 102 and 104 have no MLII
    assert records.skipped == {"source record without lead MLII": ["102", "104"]}
    counts = np.bincount(records.labels, minlength=5)
    for name in ("102", "104"):
        symbols = wfdb.rdann(str(REAL / name), "atr").symbol
        for s in symbols:
            if s in AAMI_CLASS_OF:
                counts[AAMI_CLASSES.index(AAMI_CLASS_OF[s])] += 1
    # README: N 75,052 L 8,075 R 7,259 V 7,130 / 7,028 A 2,546 f 982 F 803 j 229 a 150 E 106 J 83 Q 33 e 16 S 2
    assert dict(zip(AAMI_CLASSES, counts.tolist())) == {
        "N": 75052 + 8075 + 7259 + 16 + 229, "S": 2546 + 150 + 83 + 2, "V": 7130 + 106, "F": 803,
        "Q": 7028 + 982 + 33}
    assert counts.sum() == 109494
    inter = MITDB(str(REAL), split_mode="inter").records()
    # de Chazal et al. 2004, table I: DS1 N 45,866 S 944 V 3,788 F 415 Q 8; DS2 N 44,259 S 1,837 V 3,221 F 388 Q 7
    assert np.bincount(inter.labels[inter.folds == 1], minlength=5).tolist() == [45866, 944, 3788, 415, 8]
    assert np.bincount(inter.labels[inter.folds == 2], minlength=5).tolist() == [44259, 1837, 3221, 388, 7]
    assert {i.split(":")[0] for i in inter.ids} == set(DS1) | set(DS2)


def test_dat_frames_follows_the_format_and_annotations_past_the_end_are_left_out(db_copy):
    header = wfdb.rdheader(str(db_copy / "100"))
    assert dat_frames(db_copy, header, "100.dat") == N_SAMPLES              # format 212, 2 signals: 3 bytes a frame
    (db_copy / "100.dat").write_bytes((db_copy / "100.dat").read_bytes()[:3 * 1000 + 2])
    assert dat_frames(db_copy, header, "100.dat") == 1000
    # an .atr with beats past the end of a consistent record: left out and listed, never zero-filled
    beats = beat_samples("101")
    wfdb.wrann("101", "atr", np.concatenate([beats, [N_SAMPLES + 50, N_SAMPLES + 400]]),
               symbol=["N"] * (len(beats) + 2), write_dir=str(db_copy))
    records = MITDB(str(db_copy), split_mode="intra", record_names=["101"], edge="drop").records()
    assert records.skipped[SKIP_OUTSIDE] == [f"101:{N_SAMPLES + 50:06d}", f"101:{N_SAMPLES + 400:06d}"]
    assert records.skipped[SKIP_EDGE] == [f"101:{beats[0]:06d}", f"101:{beats[-1]:06d}"]   # edge beats as before
    with pytest.raises(DataError, match="101.atr: 2 beat.s. annotated outside the 8640 samples of 101.hea"):
        MITDB(str(db_copy), split_mode="intra", record_names=["101"], strict=True).records()


@real
def test_real_records_pass_the_file_checks(caplog):
    """No real record has a .dat/.hea length mismatch or a beat annotated outside its signal."""
    with caplog.at_level(logging.WARNING, logger="ecgnet"):
        records = MITDB(str(REAL), split_mode="intra").records()
    assert SKIP_OUTSIDE not in records.skipped and caplog.records == []


def test_old_window_s_is_read_as_beat_window_s(db, caplog, monkeypatch):
    """Configs (and stored run configs) written before the rename keep working, with one warning."""
    from ecgnet.registry import DATASETS
    monkeypatch.setattr(DATASETS, "_warned", set())
    opts = [f"data.root={db}", "preprocess.cache_dir=null"]
    cfg_path = REPO / "cfgs" / "mitdb" / "cnn1d_inter_patient.yaml"
    expected = resolve_config(load_config(cfg_path, [*opts, "data.beat_window_s=[0.3, 0.5]"]))
    old = load_config(cfg_path, opts)
    old["data"] = {k: v for k, v in old["data"].items() if k != "beat_window_s"} | {"window_s": [0.3, 0.5]}
    with caplog.at_level(logging.WARNING, logger="ecgnet.registry"):
        assert resolve_config(old) == resolve_config(old) == expected
    assert [r.getMessage() for r in caplog.records] == [
        "data.window_s is deprecated for dataset 'mitdb': read as data.beat_window_s; rename it in the config"]
    assert prepare_data(expected).window == int(round(0.8 * 180))


def test_rr_features_follow_the_annotated_r_peaks(db):
    from ecgnet.data.mitdb import RR_FEATURES, rr_interval_features
    plain = MITDB(str(db), rr_features=True, record_names=["100"]).records()
    assert plain.feature_names == list(RR_FEATURES) and plain.features.shape == (len(plain.ids), 8)
    peaks = beat_samples("100")
    rr = np.diff(peaks) / FS
    f = plain.features
    np.testing.assert_allclose(f[1:, 0], rr, rtol=1e-6)                  # pre-RR
    np.testing.assert_allclose(f[:-1, 1], rr, rtol=1e-6)                 # post-RR
    assert f[0, 0] == f[0, 1] and f[-1, 1] == f[-1, 0]                   # the ends take their one interval
    np.testing.assert_allclose(f[5, 2], rr[0:10].mean(), rtol=1e-6)      # local: the 10 intervals around beat 5
    np.testing.assert_allclose(f[:, 3], rr.mean(), rtol=1e-6)            # a 24 s record: all inside +-2.5 min
    np.testing.assert_allclose(f[:, 7], f[:, 0] / f[:, 1], rtol=1e-5)
    # a premature beat: short before, long after
    early = rr_interval_features(np.array([0, 360, 720, 900, 1440, 1800]), 360.0)
    assert early[3, 0] == pytest.approx(0.5) and early[3, 1] == pytest.approx(1.5)
    assert early[3, 7] == pytest.approx(1 / 3)
    patient = MITDB(str(db), rr_features=True, rr_normalize="patient", record_names=["100"]).records()
    np.testing.assert_allclose(patient.features.mean(0), np.ones(8), rtol=1e-5)
    np.testing.assert_allclose(patient.features, f / f.mean(0), rtol=1e-5)
    assert MITDB(str(db)).records().features is None
    with pytest.raises(ConfigError, match="data.rr_features"):
        MITDB(str(db), rr_normalize="patient")


def test_rr_features_survive_left_out_beats(db):
    dropped = MITDB(str(db), rr_features=True, edge="drop", record_names=["100"]).records()
    whole = MITDB(str(db), rr_features=True, record_names=["100"]).records()
    kept = [whole.ids.index(i) for i in dropped.ids]
    assert len(kept) < len(whole.ids)                  # the edge beats are left out ...
    np.testing.assert_array_equal(dropped.features, whole.features[kept])   # ... without shifting the others


def test_beat_template_is_the_records_median_beat(db):
    plain = MITDB(str(db), record_names=["100", "101"])
    templ = MITDB(str(db), record_names=["100", "101"], beat_template=True)
    records = templ.records()
    assert records.leads == ["MLII", "MLII_template"] and plain.records().ids == records.ids
    of_100 = [i for i, r in enumerate(records.ids) if r.startswith("100:")]
    beats = np.stack([plain.load(i)[0] for i in of_100])
    for i in (of_100[0], of_100[-1]):
        x = templ.load(i)
        assert x.shape == (2, plain.load(i).shape[1])
        np.testing.assert_array_equal(x[0], plain.load(i)[0])                       # the beat itself
        np.testing.assert_allclose(x[1], np.median(beats, axis=0), rtol=1e-6)    # its record's median beat
    other = [i for i, r in enumerate(records.ids) if r.startswith("101:")][0]
    assert not np.allclose(templ.load(other)[1], templ.load(of_100[0])[1])    # one template per record
    assert plain.cache_key() != templ.cache_key()
    with pytest.raises(ConfigError, match="data.beat_template"):
        MITDB(str(db), preset="kaggle", beat_template=True)


def test_inter_patient_rr_config_trains_a_fused_model_and_evaluates(db, tmp_path):
    from ecgnet.engine.evaluate import evaluate
    from ecgnet.engine.run import train
    from ecgnet.engine.checkpoint import load_checkpoint
    from ecgnet.models import FeatureFusion
    cfg = load_config(REPO / "cfgs" / "mitdb" / "cnn1d_inter_patient_rr.yaml",
                      [f"data.root={db}", "preprocess.cache_dir=null", "split.val_fraction=0.25", "train.epochs=2", "schedule.cooldown_epochs=1",
                       "train.progress='off'", "train.tensorboard=false", "eval.bootstrap=0", "eval.plots=false"])
    run = train(cfg, work_dir=str(tmp_path / "rr"))
    state = load_checkpoint(run / "best.pt")
    assert state["feature_names"][0] == "pre_rr_s" and any(k.startswith("backbone.") for k in state["model"])
    results = evaluate(run, "test", tmp_path / "report")
    assert 0 <= results["model"]["macro_f1"] <= 1 and "sveb_se" in results["model"]
    # the features are an input: the same checkpoint scores differently with them shuffled
    from ecgnet.build import build_model
    model = build_model(state["config"], 1, 5, state["feature_names"]).eval()
    model.load_state_dict(state["model"])
    assert isinstance(model, FeatureFusion)
    import torch
    x, feats = torch.randn(6, 1, 126), torch.rand(6, 8) + 0.5
    assert not torch.allclose(model(x, features=feats), model(x, features=feats.flip(0)))
    with pytest.raises(ValueError, match="features"):
        model(x)
    # fusion.embed_dim 0: the features alone (no backbone); the signal then changes nothing
    rr_only = build_model({**state["config"], "fusion": {**state["config"]["fusion"], "embed_dim": 0}}, 1, 5,
                          state["feature_names"]).eval()
    assert rr_only.backbone is None and not any(k.startswith("backbone.") for k in rr_only.state_dict())
    assert torch.equal(rr_only(x, features=feats), rr_only(torch.randn(6, 1, 126), features=feats))
    # evaluating with a config whose data lacks the features is refused in one line
    no_rr = tmp_path / "no_rr.yaml"
    no_rr.write_text(f"_base_: {REPO / 'cfgs' / 'mitdb' / 'cnn1d_inter_patient.yaml'}\n"
                     f"data: {{root: {db}}}\npreprocess: {{cache_dir: null}}\nsplit: {{val_fraction: 0.25}}\n")
    with pytest.raises(ConfigError, match=r"data.rr_features \(True -> False\)"):
        evaluate(run, "test", tmp_path / "report2", config=str(no_rr))
