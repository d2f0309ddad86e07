"""Kaggle heartbeat CSV adapter: both flavours, folds and random beat splits, bad rows and files,
cache key. Fixtures are small CSVs in the Kaggle layout (187 values + label, no header)."""
import json
import logging

import numpy as np
import pandas as pd
import pytest

from ecgnet.build import build
from ecgnet.config import PreprocessCfg
from ecgnet.data.dataset import load_signals
from ecgnet.data.kaggle_csv import SKIP_LABEL, KaggleHeartbeatCSV, read_kaggle_csv, write_kaggle_csv
from ecgnet.data.splits import make_splits
from ecgnet.registry import ConfigError, DataError

SPLIT = {"type": "random", "val_fraction": 0.1, "test_fraction": 0.2, "train_folds": None, "val_folds": None,
         "test_folds": None, "seed": 0}


def beats(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 187))
    x[:, 150:] = 0                       # zero padding at the end, as in the Kaggle files
    return x


def write(path, x, y, fmt="%.18e"):
    pd.DataFrame(np.hstack([x, np.asarray(y, float)[:, None]])).to_csv(path, header=False, index=False,
                                                                       float_format=fmt)


@pytest.fixture
def mitbih(tmp_path):
    write(tmp_path / "mitbih_train.csv", beats(60, 0), np.arange(60) % 5)
    write(tmp_path / "mitbih_test.csv", beats(20, 1), np.arange(20) % 5)
    return tmp_path


@pytest.fixture
def ptbdb(tmp_path):
    write(tmp_path / "ptbdb_normal.csv", beats(40, 2), np.zeros(40))
    write(tmp_path / "ptbdb_abnormal.csv", beats(110, 3), np.ones(110))
    return tmp_path


def prep(cache_dir=None):
    out = {f: getattr(PreprocessCfg(), f) for f in PreprocessCfg.__dataclass_fields__}
    return {**out, "cache_dir": None if cache_dir is None else str(cache_dir)}


def test_mitbih_flavour_reads_rows_labels_and_folds(mitbih):
    adapter = build("data", {"data": {"type": "kaggle_csv", "root": str(mitbih)}})
    records = adapter.records()
    assert records.class_names == ["N", "S", "V", "F", "Q"] and records.labels.dtype == np.int64
    assert records.ids[0] == "mitbih_train.csv:0" and records.ids[60] == "mitbih_test.csv:0"
    assert records.groups == records.ids and records.fs == 125.0 and records.leads == ["MLII"]
    assert records.folds.tolist() == [1] * 60 + [2] * 20
    assert records.labels[:7].tolist() == [0, 1, 2, 3, 4, 0, 1]
    assert adapter.record_length_s == pytest.approx(187 / 125)
    x = adapter.load(61)
    assert x.shape == (1, 187) and x.dtype == np.float32
    assert np.allclose(x[0], beats(20, 1)[1])
    cfg = {**SPLIT, "type": "predefined", "train_folds": [1], "test_folds": [2]}
    splits = make_splits(records, cfg)
    train, val = splits["folds"][0]
    assert set(records.folds[splits["test"]]) == {2} and set(records.folds[np.concatenate([train, val])]) == {1}
    assert 3 <= len(val) <= 9


def test_ptbdb_flavour_is_one_pool_split_by_beat(ptbdb):
    adapter = KaggleHeartbeatCSV(str(ptbdb), flavour="ptbdb")
    records = adapter.records()
    assert records.class_names == ["normal", "abnormal"] and records.folds is None
    assert np.bincount(records.labels).tolist() == [40, 110]
    splits = make_splits(records, SPLIT)
    test = splits["test"]
    assert len(test) == 30 and records.labels[test].mean() == pytest.approx(110 / 150, abs=0.03)
    with pytest.raises(ConfigError, match="predefined"):
        make_splits(records, {**SPLIT, "type": "predefined", "train_folds": [1], "test_folds": [2]})


def test_custom_files_and_class_names(ptbdb):
    records = KaggleHeartbeatCSV(str(ptbdb), flavour="ptbdb", files=["ptbdb_abnormal.csv"],
                                 class_names=["healthy", "MI"]).records()
    assert len(records.ids) == 110 and records.class_names == ["healthy", "MI"]


def test_bad_labels_are_left_out_and_bad_samples_skipped_counted(tmp_path, caplog):
    x = beats(30, 4)
    x[5, 10] = np.nan
    y = np.arange(30) % 5.0
    y[[3, 7]] = [5, 1.5]                  # out of range, not an integer
    write(tmp_path / "mitbih_train.csv", x, y)
    write(tmp_path / "mitbih_test.csv", beats(10, 5), np.arange(10) % 5)
    adapter = KaggleHeartbeatCSV(str(tmp_path))
    assert adapter.records().skipped == {SKIP_LABEL: ["mitbih_train.csv:3", "mitbih_train.csv:7"]}
    with pytest.raises(DataError, match="mitbih_train.csv: row 5"):
        adapter.load(adapter.records().ids.index("mitbih_train.csv:5"))
    with caplog.at_level(logging.WARNING):
        records, signals = load_signals(adapter, prep(), "kaggle_csv")
    assert len(records.ids) == 37 and records.skipped["unreadable"] == ["mitbih_train.csv:5"]
    assert "skipped 1 unreadable" in caplog.text


def test_missing_and_malformed_files(tmp_path, mitbih):
    with pytest.raises(DataError, match="not found; download") as err:
        KaggleHeartbeatCSV(str(tmp_path / "nowhere")).records()
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="ptbdb_normal.csv: not found"):
        KaggleHeartbeatCSV(str(mitbih), flavour="ptbdb").records()
    pd.DataFrame(beats(5, 6)).to_csv(mitbih / "short.csv", header=False, index=False)
    with pytest.raises(DataError, match="short.csv: 187 columns"):
        KaggleHeartbeatCSV(str(mitbih), files=["short.csv"]).records()
    (mitbih / "text.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="text.csv: not a Kaggle heartbeat CSV"):
        read_kaggle_csv(mitbih / "text.csv")


def test_writer_round_trips_exactly(tmp_path):
    x = beats(8, 7).astype(np.float32)
    write_kaggle_csv(tmp_path / "a.csv", x, np.arange(8) % 5)
    first = (tmp_path / "a.csv").read_text().splitlines()[0].split(",")
    assert len(first) == 188 and first[-1] == "0.000000000000000000e+00"     # the Kaggle number format
    back, labels = read_kaggle_csv(tmp_path / "a.csv")
    assert np.array_equal(back, x) and labels.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def test_cache_key_follows_files_and_settings(mitbih, tmp_path):
    key = KaggleHeartbeatCSV(str(mitbih)).cache_key()
    assert KaggleHeartbeatCSV(str(mitbih)).cache_key() == key
    assert KaggleHeartbeatCSV(str(mitbih), class_names=list("abcde")).cache_key() != key
    assert "mitbih_test.csv" in json.dumps(json.loads(key)["files"])
    write(mitbih / "mitbih_test.csv", beats(21, 1), np.arange(21) % 5)
    assert KaggleHeartbeatCSV(str(mitbih)).cache_key() != key
    cache = tmp_path / "cache"
    first, sig1 = load_signals(KaggleHeartbeatCSV(str(mitbih)), prep(cache), "kaggle_csv")
    second, sig2 = load_signals(KaggleHeartbeatCSV(str(mitbih)), prep(cache), "kaggle_csv")
    assert second.ids == first.ids and all(np.array_equal(a, b) for a, b in zip(sig1, sig2))
    assert len(list(cache.iterdir())) == 1
