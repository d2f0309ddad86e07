"""PTB-XL adapter: benchmark label aggregation, dropped and missing records, splits, identification,
QRS segments, errors, cache. Fixtures are written in the PhysioNet layout (wfdb.wrsamp, csv)."""
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

from ecgnet.build import build
from ecgnet.config import PreprocessCfg, load_config
from ecgnet.data.dataset import load_signals
from ecgnet.data.ecgsim import sample_patient, simulate_ecg
from ecgnet.data.ptbxl import LEADS, PTBXL
from ecgnet.data.splits import assert_disjoint, make_splits
from ecgnet.engine.checkpoint import load_checkpoint
from ecgnet.engine.evaluate import evaluate
from ecgnet.engine.run import train
from ecgnet.registry import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "ptbxl"

# Rows of PTB-XL 1.0.3 scp_statements.csv (CC BY 4.0), copied as they are.
STATEMENT_COLUMNS = ["description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass",
                     "Statement Category", "SCP-ECG Statement Description", "AHA code", "aECG REFID", "CDISC Code",
                     "DICOM Code"]
nan = float("nan")
STATEMENTS = {
    "NDT": ["non-diagnostic T abnormalities", 1.0, 1.0, nan, "STTC", "STTC", "other ST-T descriptive statements",
            "non-diagnostic T abnormalities", nan, nan, nan, nan],
    "NST_": ["non-specific ST changes", 1.0, 1.0, nan, "STTC", "NST_",
             "Basic roots for coding ST-T changes and abnormalities", "non-specific ST changes", 145.0,
             "MDC_ECG_RHY_STHILOST", nan, nan],
    "LNGQT": ["long QT-interval", 1.0, 1.0, nan, "STTC", "STTC", "other ST-T descriptive statements",
              "long QT-interval", 148.0, nan, nan, nan],
    "NORM": ["normal ECG", 1.0, nan, nan, "NORM", "NORM", "Normal/abnormal", "normal ECG", 1.0, nan, nan, "F-000B7"],
    "IMI": ["inferior myocardial infarction", 1.0, nan, nan, "MI", "IMI", "Myocardial Infarction",
            "inferior myocardial infarction", 161.0, nan, nan, nan],
    "ASMI": ["anteroseptal myocardial infarction", 1.0, nan, nan, "MI", "AMI", "Myocardial Infarction",
             "anteroseptal myocardial infarction", 165.0, nan, nan, nan],
    "LAFB": ["left anterior fascicular block", 1.0, nan, nan, "CD", "LAFB/LPFB",
             "Intraventricular and intra-atrial Conduction disturbances", "left anterior fascicular block", 101.0,
             "MDC_ECG_BEAT_BLK_ANT_L_HEMI", "C62267", "D3-33140"],
    "IRBBB": ["incomplete right bundle branch block", 1.0, nan, nan, "CD", "IRBBB",
              "Intraventricular and intra-atrial Conduction disturbances", "incomplete right bundle branch block",
              105.0, "MDC_ECG_BEAT_RBB_BLK_INCOMP", "C71048", "D3-33112"],
    "LVH": ["left ventricular hypertrophy", 1.0, nan, nan, "HYP", "LVH", "Ventricular Hypertrophy",
            "left ventricular hypertrophy", 142.0, nan, "C71076", nan],
    "PVC": ["ventricular premature complex", nan, 1.0, nan, nan, nan,
            "Statements related to ectopic rhythm abnormalities", "ventricular premature complex (beat)", 60.0,
            "MDC_ECG_BEAT_V_P_C", nan, nan],
    "ABQRS": ["abnormal QRS", nan, 1.0, nan, nan, nan, "Normal/abnormal", "abnormal QRS", nan, nan, nan, nan],
    "SR": ["sinus rhythm", nan, nan, 1.0, nan, nan, "Statements related to impulse formation (abnormalities)",
           "sinus rhythm", 20.0, "MDC_ECG_RHY_SINUS_RHY", nan, nan],
    "AFIB": ["atrial fibrillation", nan, nan, 1.0, nan, nan, "Statements related to impulse formation (abnormalities)",
             "atrial fibrillation", 50.0, "MDC_ECG_RHY_ATR_FIB", nan, "D3-31520"],
}

# ecg_id, patient_id, recording_date, strat_fold, scp_codes; the folds keep each patient in one fold
ROWS = [
    (1, 101, "1990-01-05 09:00:00", 1, "{'NORM': 100.0, 'SR': 0.0}"),
    (2, 102, "1990-02-01 09:00:00", 2, "{'IMI': 50.0, 'ASMI': 0.0, 'LVH': 100.0, 'SR': 0.0}"),
    (3, 103, "1990-03-01 09:00:00", 3, "{'NDT': 100.0, 'PVC': 100.0, 'AFIB': 0.0}"),
    (4, 101, "1991-06-01 09:00:00", 1, "{'LAFB': 100.0, 'IRBBB': 100.0, 'SR': 0.0}"),
    (5, 104, "1990-04-01 09:00:00", 9, "{'ABQRS': 0.0, 'SR': 0.0}"),               # no diagnostic statement
    (6, 105, "1990-05-01 09:00:00", 10, "{'NST_': 100.0, 'LNGQT': 100.0}"),        # no rhythm statement
    (7, 101, "1989-01-01 09:00:00", 1, "{'NORM': 100.0, 'SR': 0.0}"),              # patient 101's first ECG
    (8, 106, "1992-01-01 09:00:00", 9, "{'NORM': 80.0, 'SR': 0.0}"),
    (9, 106, "1991-01-01 09:00:00", 9, "{'IMI': 100.0, 'SR': 0.0}"),               # earlier than ecg 8
    (10, 107, "1990-07-01 09:00:00", 10, "{'LVH': 100.0, 'SR': 0.0}"),
    (11, 108, "1990-08-01 09:00:00", 4, "{'NORM': 100.0, 'SR': 0.0}"),             # listed, never written
]
MISSING = {11}
ON_DISK = [str(r[0]) for r in ROWS if r[0] not in MISSING]


def record_name(ecg_id: int, fs: int) -> str:
    return f"records{fs}/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_{'lr' if fs == 100 else 'hr'}"


def write_record(root: Path, ecg_id: int, fs: int, signal: np.ndarray) -> Path:
    path = root / record_name(ecg_id, fs)
    path.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(path.name, fs=fs, units=["mV"] * 12, sig_name=[lead.upper() for lead in LEADS],
                p_signal=signal.T.astype(np.float64), fmt=["16"] * 12, adc_gain=[1000.0] * 12,
                baseline=[0] * 12, write_dir=str(path.parent))
    return path


def ecg(ecg_id: int, fs: int) -> np.ndarray:
    rng = np.random.default_rng(ecg_id)
    return simulate_ecg(rng, sample_patient(rng), fs, 10.0)


@pytest.fixture
def ptbxl(tmp_path):
    root = tmp_path / "ptbxl"
    root.mkdir()
    pd.DataFrame.from_dict(STATEMENTS, orient="index", columns=STATEMENT_COLUMNS).to_csv(root / "scp_statements.csv")
    rows = [{"ecg_id": e, "patient_id": float(p), "recording_date": d, "scp_codes": c, "strat_fold": f,
             "filename_lr": record_name(e, 100), "filename_hr": record_name(e, 500)} for e, p, d, f, c in ROWS]
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    for e, *_ in ROWS:
        if e not in MISSING:
            for fs in (100, 500):
                write_record(root, e, fs, ecg(e, fs))
    return root


def preprocess_cfg(cache_dir=None):
    return {**{f: getattr(PreprocessCfg(), f) for f in PreprocessCfg.__dataclass_fields__},
            "cache_dir": None if cache_dir is None else str(cache_dir)}


def as_dict(records):
    """record id -> set of class names."""
    return {rid: {c for c, on in zip(records.class_names, row) if on} for rid, row in zip(records.ids, records.labels)}


EXPECTED = {
    "all": {"1": {"NORM", "SR"}, "2": {"IMI", "ASMI", "LVH", "SR"}, "3": {"NDT", "PVC", "AFIB"},
            "4": {"LAFB", "IRBBB", "SR"}, "5": {"ABQRS", "SR"}, "6": {"NST_", "LNGQT"}, "7": {"NORM", "SR"},
            "8": {"NORM", "SR"}, "9": {"IMI", "SR"}, "10": {"LVH", "SR"}},
    "diagnostic": {"1": {"NORM"}, "2": {"IMI", "ASMI", "LVH"}, "3": {"NDT"}, "4": {"LAFB", "IRBBB"},
                   "6": {"NST_", "LNGQT"}, "7": {"NORM"}, "8": {"NORM"}, "9": {"IMI"}, "10": {"LVH"}},
    "subdiagnostic": {"1": {"NORM"}, "2": {"IMI", "AMI", "LVH"}, "3": {"STTC"}, "4": {"LAFB/LPFB", "IRBBB"},
                      "6": {"NST_", "STTC"}, "7": {"NORM"}, "8": {"NORM"}, "9": {"IMI"}, "10": {"LVH"}},
    "superdiagnostic": {"1": {"NORM"}, "2": {"MI", "HYP"}, "3": {"STTC"}, "4": {"CD"}, "6": {"STTC"},
                        "7": {"NORM"}, "8": {"NORM"}, "9": {"MI"}, "10": {"HYP"}},
    "form": {"3": {"NDT", "PVC"}, "5": {"ABQRS"}, "6": {"NST_", "LNGQT"}},
    "rhythm": {"1": {"SR"}, "2": {"SR"}, "3": {"AFIB"}, "4": {"SR"}, "5": {"SR"}, "7": {"SR"}, "8": {"SR"},
               "9": {"SR"}, "10": {"SR"}},
}


@pytest.mark.parametrize("task", list(EXPECTED))
def test_label_aggregation_matches_the_benchmark(ptbxl, task):
    records = PTBXL(str(ptbxl), task=task).records()
    expected = EXPECTED[task]
    assert as_dict(records) == expected
    assert records.class_names == sorted(set().union(*expected.values()))     # MultiLabelBinarizer order
    assert records.labels.dtype == np.float32 and records.labels.shape == (len(expected), len(records.class_names))
    dropped = [rid for rid in ON_DISK if rid not in expected]
    assert records.skipped == {"file missing on disk": ["11"], **({f"no {task} label": dropped} if dropped else {})}
    assert records.groups == [str(ROWS[int(rid) - 1][1]) for rid in records.ids]
    assert records.folds.tolist() == [ROWS[int(rid) - 1][3] for rid in records.ids]
    assert records.fs == 100.0 and records.leads == LEADS


def test_superdiagnostic_multi_hot_and_min_count(ptbxl):
    records = PTBXL(str(ptbxl), task="superdiagnostic").records()
    assert records.class_names == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert records.labels[records.ids.index("2")].tolist() == [0, 1, 1, 0, 0]
    assert records.labels[records.ids.index("4")].tolist() == [1, 0, 0, 0, 0]
    # CD occurs once: min_count 2 drops the class, and record 4, left without a label
    rare = PTBXL(str(ptbxl), task="superdiagnostic", min_count=2).records()
    assert rare.class_names == ["HYP", "MI", "NORM", "STTC"]
    assert rare.skipped["no superdiagnostic label"] == ["4", "5"]


def test_predefined_split_is_patient_disjoint(ptbxl):
    records = PTBXL(str(ptbxl), task="all").records()
    cfg = {"type": "predefined", "train_folds": list(range(1, 9)), "val_folds": [9], "test_folds": [10],
           "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}
    splits = make_splits(records, cfg)
    (train, val), test = splits["folds"][0], splits["test"]
    ids = np.asarray(records.ids)
    assert sorted(ids[test].tolist()) == ["10", "6"] and sorted(ids[val].tolist()) == ["5", "8", "9"]
    assert sorted(ids[train].tolist()) == ["1", "2", "3", "4", "7"]
    assert_disjoint(records, {"train": train, "val": val, "test": test})


def test_identification_enrols_on_earlier_records(ptbxl):
    records = PTBXL(str(ptbxl), task="identification").records()
    assert records.class_names == ["101", "106"] and records.labels.dtype == np.int64
    assert records.ids == ["1", "4", "7", "8", "9"] and records.labels.tolist() == [0, 0, 0, 1, 1]
    # by recording date: 101 -> 7 train, 1 val, 4 test; 106 -> 9 train, 8 test (no val with 2 records)
    assert records.folds.tolist() == [2, 3, 1, 3, 1]
    assert records.groups == records.ids                          # one patient is on every side by design
    assert sorted(records.skipped) == ["file missing on disk", "patient has fewer than 2 records"]
    assert records.skipped["patient has fewer than 2 records"] == ["2", "3", "5", "6", "10"]
    cfg = {"type": "predefined", "train_folds": [1], "val_folds": [2], "test_folds": [3], "val_fraction": 0.1,
           "test_fraction": 0.2, "seed": 0}
    splits = make_splits(records, cfg)
    train, test = splits["folds"][0][0], splits["test"]
    assert set(records.labels[test]) <= set(records.labels[train])    # every test patient was trained on
    three = PTBXL(str(ptbxl), task="identification", min_records_per_patient=3).records()
    assert three.class_names == ["101"] and three.folds.tolist() == [2, 3, 1]


def test_background_patients_train_only_after_the_enrolled_classes(ptbxl):
    closed = PTBXL(str(ptbxl), task="identification").records()
    records = PTBXL(str(ptbxl), task="identification", background_patients=True).records()
    # the enrolled patients keep their class numbers; the one-record patients follow, in numerical order
    assert records.class_names == ["101", "106", "102", "103", "104", "105", "107"]
    assert records.ids == [str(k) for k in range(1, 11)]
    assert records.labels.tolist() == [0, 2, 3, 0, 4, 5, 0, 1, 1, 6]
    # the enrolled records keep their folds; every background record trains
    assert records.folds.tolist() == [2, 1, 1, 3, 1, 1, 1, 3, 1, 1]
    fold_of = dict(zip(records.ids, records.folds.tolist()))
    assert all(fold_of[rid] == f for rid, f in zip(closed.ids, closed.folds.tolist()))
    assert sorted(records.skipped) == ["file missing on disk"]
    cache_keys = {PTBXL(str(ptbxl), task="identification", background_patients=b).cache_key() for b in (True, False)}
    assert len(cache_keys) == 2
    with pytest.raises(ConfigError, match="data.background_patients: only for task identification"):
        PTBXL(str(ptbxl), task="rhythm", background_patients=True)


def test_qrs_segment_is_centred_on_a_beat_and_flat_records_are_skipped(ptbxl, tmp_path):
    adapter = PTBXL(str(ptbxl), task="all", segment="qrs", segment_s=2.0)
    assert adapter.record_length_s == 2.0
    x = adapter.load(0)
    assert x.shape == (12, 200)
    lead_ii = np.abs(x[LEADS.index("II")] - np.median(x[LEADS.index("II")]))
    assert lead_ii[95:106].max() > 0.8 * lead_ii.max()                # an R peak sits mid-window
    write_record(ptbxl, 2, 100, np.zeros((12, 1000), np.float32))
    records, signals = load_signals(PTBXL(str(ptbxl), task="all", segment="qrs"), preprocess_cfg())
    assert records.skipped["unreadable"] == ["2"] and len(signals) == len(ON_DISK) - 1
    with pytest.raises(DataError, match="00002_lr.dat: no beat detected"):
        PTBXL(str(ptbxl), task="all", segment="qrs").load(1)


def test_500_hz_reads_records500(ptbxl):
    adapter = PTBXL(str(ptbxl), task="rhythm", fs=500)
    assert adapter.records().fs == 500.0 and adapter.load(0).shape == (12, 5000)
    assert str(adapter.paths[0]).endswith("records500/00000/00001_hr")


def test_missing_folder_and_bad_settings(ptbxl, tmp_path):
    with pytest.raises(DataError, match=r"nowhere: PTB-XL not found; download it with experiments/ptbxl/setup.sh"):
        PTBXL(str(tmp_path / "nowhere"))
    (ptbxl / "scp_statements.csv").unlink()
    with pytest.raises(DataError, match=r"scp_statements.csv: not found"):
        PTBXL(str(ptbxl))
    with pytest.raises(ConfigError, match="data.fs: 250 is not allowed"):
        build("data", {"data": {"type": "ptbxl", "root": str(ptbxl), "fs": 250}})
    with pytest.raises(ConfigError, match="data.min_records_per_patient"):
        PTBXL(str(ptbxl), task="identification", min_records_per_patient=1)


def test_missing_and_corrupt_records_are_skipped_and_counted(ptbxl, caplog):
    dat = ptbxl / (record_name(3, 100) + ".dat")
    dat.write_bytes(dat.read_bytes()[:4800])                          # truncated signal
    (ptbxl / (record_name(5, 100) + ".hea")).write_text("garbage\n")    # unreadable header
    with caplog.at_level(logging.WARNING):
        records, signals = load_signals(PTBXL(str(ptbxl), task="all"), preprocess_cfg())
    assert records.skipped == {"file missing on disk": ["11"], "unreadable": ["3", "5"]}
    assert len(signals) == len(records.ids) == len(ON_DISK) - 2 and signals[0].shape == (12, 1000)
    assert "skipped 2 unreadable record(s)" in caplog.text and "00003_lr.dat" in caplog.text
    with pytest.raises(DataError, match="00003_lr"):
        load_signals(PTBXL(str(ptbxl), task="all", strict=True), preprocess_cfg())


def test_cache_hit_reads_nothing_and_a_changed_record_rebuilds(ptbxl, tmp_path, monkeypatch):
    reads = []
    rdsamp = wfdb.rdsamp
    monkeypatch.setattr(wfdb, "rdsamp", lambda name, *a, **k: (reads.append(name), rdsamp(name, *a, **k))[1])
    cache = tmp_path / "cache"
    _, first = load_signals(PTBXL(str(ptbxl), task="all"), preprocess_cfg(cache), "ptbxl")
    assert len(reads) == len(ON_DISK)
    reads.clear()
    records, again = load_signals(PTBXL(str(ptbxl), task="all"), preprocess_cfg(cache), "ptbxl")
    assert reads == [] and all(np.array_equal(a, b) for a, b in zip(first, again))
    changed = (0.5 + 0.1 * np.sin(np.arange(1000) / 7.0))[None].repeat(12, 0).astype(np.float32)  # not flat: QC keeps it
    path = write_record(ptbxl, 4, 100, changed)
    stat = os.stat(f"{path}.dat")
    os.utime(f"{path}.dat", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # coarse-clock file systems
    _, rebuilt = load_signals(PTBXL(str(ptbxl), task="all"), preprocess_cfg(cache), "ptbxl")
    assert len(reads) == len(ON_DISK)
    assert np.allclose(rebuilt[records.ids.index("4")], changed, atol=1e-3)   # WFDB stores 1/1000 mV
    assert len([p for p in cache.iterdir() if not p.name.endswith(".tmp")]) == 2


@pytest.mark.skipif(not REAL.is_dir(), reason="the PTB-XL subset in shared/data is not present")
class TestSharedSubset:
    def test_superdiagnostic_counts_match_the_data_readme(self):
        # README counts take every listed statement regardless of likelihood, as the benchmark does
        records = PTBXL(str(REAL), task="superdiagnostic").records()
        counts = dict(zip(records.class_names, records.labels.sum(0).astype(int).tolist()))
        assert counts == {"CD": 497, "HYP": 265, "MI": 546, "NORM": 943, "STTC": 513}
        assert len(records.skipped["no superdiagnostic label"]) == 42 and len(records.ids) == 2179 - 42

    def test_class_counts_per_task_and_record_shape(self):
        sizes = {task: PTBXL(str(REAL), task=task).records().num_classes
                 for task in ("all", "diagnostic", "subdiagnostic", "form", "rhythm")}
        assert sizes == {"all": 70, "diagnostic": 43, "subdiagnostic": 22, "form": 19, "rhythm": 12}
        x = PTBXL(str(REAL), task="all").load(0)
        assert x.shape == (12, 1000) and x.dtype == np.float32 and np.isfinite(x).all()

    def test_predefined_split_and_identification(self):
        cfg = {"val_fraction": 0.1, "test_fraction": 0.2, "seed": 0}
        records = PTBXL(str(REAL), task="superdiagnostic").records()
        splits = make_splits(records, {**cfg, "type": "predefined", "train_folds": list(range(1, 9)),
                                       "val_folds": [9], "test_folds": [10]})
        assert_disjoint(records, {"train": splits["folds"][0][0], "val": splits["folds"][0][1],
                                  "test": splits["test"]})
        ident = PTBXL(str(REAL), task="identification").records()
        splits = make_splits(ident, {**cfg, "type": "predefined", "train_folds": [1], "val_folds": [2],
                                     "test_folds": [3]})
        test_patients = set(ident.labels[splits["test"]])
        assert test_patients == set(range(ident.num_classes))
        assert test_patients <= set(ident.labels[splits["folds"][0][0]])


def test_identification_pretrained_on_background_patients_then_enrolled(ptbxl, tmp_path):
    """The two shipped configs on the fixture: stage 1 learns 7 patients (2 enrolled + 5 background),
    stage 2 loads and freezes its backbone and learns vectors for the 2 enrolled patients only."""
    common = [f"data.root={ptbxl}", "train.epochs=2", "schedule.cooldown_epochs=1", "train.tensorboard=false", "train.progress=off",
              "train.batch_size=4", "preprocess.cache_dir=null", "train.device=cpu"]
    stage1 = train(load_config(REPO / "cfgs/ptbxl/resnet1d_wang_identification_background.yaml", common),
                   work_dir=str(tmp_path / "background"))
    pre = load_checkpoint(stage1 / "best.pt")
    assert pre["model"]["weight"].shape == (7, 128)                  # every patient is a class
    stage2 = train(load_config(REPO / "cfgs/ptbxl/resnet1d_wang_identification_background_enrol.yaml",
                               [*common, f"model.init_from={stage1}"]), work_dir=str(tmp_path / "enrol"))
    enrolled = load_checkpoint(stage2 / "best.pt")["model"]
    assert enrolled["weight"].shape == (2, 128)                     # the closed set only
    backbone = [k for k in enrolled if k.startswith("backbone.")]
    assert backbone and all(torch.equal(enrolled[k], pre["model"][k]) for k in backbone)   # loaded, frozen
    results = evaluate(stage2, "test", tmp_path / "report")     # the closed set: one test ECG per patient
    assert results["model"]["n"] == 2 and len(results["model"]["per_class"]) == 2
