"""Bad dataset inputs, each met through ``tools/train.py`` in a subprocess as a user would meet it:
either exit code 2 with one ``error:`` line naming the file or key and the fix (never a traceback),
or exit 0 with the bad record counted in the log and left out, never a silently wrong sample.
Precise checks run on the adapters in-process. Fixtures are written in the official formats
(wfdb.wrsamp / wrann; PTB-XL csv + records100/; CinC MATLAB v4 .mat + WFDB .hea); each dataset is
built once per module and shared by its cases, so the file starts only a few short CLI runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb

from ecgnet.data.cinc2020 import CinC2020
from ecgnet.data.ecgsim import sample_patient, simulate_ecg
from ecgnet.data.kaggle_csv import SKIP_LABEL, KaggleHeartbeatCSV, read_kaggle_csv
from ecgnet.data.mitdb import MITDB, SKIP_OUTSIDE
from ecgnet.data.ptbxl import PTBXL
from ecgnet.data.splits import make_splits
from ecgnet.registry import ConfigError, DataError
from test_cinc2020 import AF, IIAVB, NOT_IN_TABLES, NSR, PVC, RBBB
from test_cinc2020 import write_record as write_cinc2020_record
from test_kaggle_csv import beats as kaggle_beats
from test_kaggle_csv import write as write_kaggle
from test_mitdb import RECORDS as MITDB_RECORDS
from test_mitdb import beat_samples
from test_mitdb import write_record as write_mitdb_record
from test_ptbxl import STATEMENT_COLUMNS, STATEMENTS, ecg, record_name
from test_ptbxl import write_record as write_ptbxl_record

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = ["train.epochs=1", "model={type: cnn1d, widths: [8, 16]}", "train.tensorboard=false", "eval.plots=false",
        "eval.bootstrap=0", "preprocess.cache_dir=null", "schedule.warmup_epochs=0", "schedule.cooldown_epochs=1"]
MITDB_CFG = "cfgs/mitdb/cnn1d_inter_patient.yaml"      # 180 Hz, [0.25, 0.45] s beats, 0.5-40 Hz band-pass
PTBXL_CFG = "cfgs/ptbxl/resnet1d_superdiagnostic.yaml"
CINC17_CFG = "cfgs/cinc17/resnet1d_resecg.yaml"
CINC2020_CFG = "cfgs/cinc2020/se_resnet1d_seed000.yaml"
KAGGLE_CFG = "cfgs/ptbdb/cnn1d_scratch.yaml"


def train(cfg: str, root: Path, *opts: str, work_dir: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "tools/train.py", "--config", cfg]
    if work_dir is not None:
        args += ["--work-dir", str(work_dir)]
    return subprocess.run([*args, "--opts", f"data.root={root}", *TINY, *opts], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)


def user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line, the last, holding every fragment."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def finished(result: subprocess.CompletedProcess, work_dir: Path) -> dict:
    """Exit 0, no traceback; -> the run's splits.json."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads((work_dir / "splits.json").read_text())


def overlaps(r: int, gap: tuple[int, int], before: int = 90, after: int = 162) -> bool:
    """Whether the source-rate window [r - before, r + after) of a beat meets the gap [start, stop)."""
    return r - before < gap[1] and r + after > gap[0]


# ---- MIT-BIH: three bad records in one database, one CLI run ----

HEA_SAMPLES = 6000              # record 100's header claims fewer samples than its .dat holds (8,640)
TRUNCATED_FRAMES = 4000         # record 103's .dat is cut to this many frames (the header says 8,640)
LONG_GAP_S = 0.5                # record 101: one 0.5 s run of NaN (dropped beats) ...
SHORT_GAP = 5                   # ... a single NaN on an R peak and 5 (0.014 s) across another (interpolated)


def nan_gaps() -> tuple[tuple[int, int], list[int], list[int]]:
    """Record 101: (long gap, [single NaN position], [short run start]); beat positions from test_mitdb."""
    beats = beat_samples("101")
    long = (int(beats[10]) + 20, int(beats[10]) + 20 + int(LONG_GAP_S * 360))
    return long, [int(beats[20])], [int(beats[25]) - 2]


@pytest.fixture(scope="module")
def mitdb_bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mitdb_bad")
    for name, leads in MITDB_RECORDS.items():
        write_mitdb_record(root, name, leads)
    (root / "RECORDS").write_text("\n".join(sorted(MITDB_RECORDS)) + "\n")
    hea = root / "100.hea"
    lines = hea.read_text().splitlines()
    lines[0] = lines[0].replace(" 8640", f" {HEA_SAMPLES}")
    hea.write_text("\n".join(lines) + "\n")
    dat = root / "103.dat"                                     # format 212, 2 signals: 3 bytes a frame
    dat.write_bytes(dat.read_bytes()[:3 * TRUNCATED_FRAMES])
    record = wfdb.rdrecord(str(root / "101"))
    signal = record.p_signal.copy()
    (g0, g1), singles, runs = nan_gaps()
    signal[g0:g1, 0] = np.nan                                 # MLII; written as WFDB's invalid sample
    for s in singles:
        signal[s, 0] = np.nan
    for s in runs:
        signal[s:s + SHORT_GAP, 0] = np.nan
    wfdb.wrsamp("101", fs=360, units=["mV", "mV"], sig_name=record.sig_name, p_signal=signal, fmt=["212", "212"],
                adc_gain=[200.0, 200.0], baseline=[1024, 1024], write_dir=str(root))
    return root


@pytest.fixture(scope="module")
def mitdb_run(mitdb_bad, tmp_path_factory):
    work = tmp_path_factory.mktemp("runs") / "mitdb"
    result = train(MITDB_CFG, mitdb_bad, work_dir=work)
    return result, finished(result, work)


def test_mitdb_header_shorter_than_dat_skips_and_counts_beats_past_its_end(mitdb_bad, mitdb_run):
    result, splits = mitdb_run
    past = [f"100:{r:06d}" for r in beat_samples("100") if r >= HEA_SAMPLES]
    assert len(past) >= 5
    assert splits["skipped"][SKIP_OUTSIDE] == past
    assert f"100.dat: holds 8640 samples per signal, 100.hea says {HEA_SAMPLES}" in result.stderr
    assert f"{len(past)} beat(s) annotated outside the {HEA_SAMPLES} samples of 100.hea; left out" in result.stderr
    assert not set(past) & set(splits["test"])                  # record 100 is DS2: none of them is tested
    # on the adapter: every beat it serves holds signal; nothing is zero-filled past the header's end
    adapter = MITDB(str(mitdb_bad), split_mode="intra", record_names=["100"])
    records = adapter.records()
    assert records.skipped == {SKIP_OUTSIDE: past}
    assert len(records.ids) == len(beat_samples("100")) - len(past)
    assert all(np.count_nonzero(adapter.load(i)) >= 90 for i in range(len(records.ids)))   # R - 0.25 s inside


def test_mitdb_dat_shorter_than_header_skips_the_record_counted_naming_the_file(mitdb_run):
    result, splits = mitdb_run
    lost = [f"103:{r:06d}" for r in beat_samples("103")]
    assert [i for i in splits["skipped"]["unreadable"] if i.startswith("103:")] == lost
    assert f"103.dat: holds {TRUNCATED_FRAMES} samples per signal, 103.hea says 8640" in result.stderr
    assert f"103.dat: holds {TRUNCATED_FRAMES} samples, the header says 8640; the file is truncated" in result.stderr
    assert "could not broadcast" not in result.stderr


def test_mitdb_nan_run_drops_only_the_beats_that_touch_it(mitdb_run):
    result, splits = mitdb_run
    long, singles, runs = nan_gaps()
    beats = beat_samples("101")
    dropped = [f"101:{r:06d}" for r in beats if overlaps(int(r), long)]
    assert 1 <= len(dropped) <= 3
    assert all(abs(r - 90 - long[1]) > 4 and abs(r + 162 - long[0]) > 4 for r in beats)   # none is borderline
    assert [i for i in splits["skipped"]["unreadable"] if i.startswith("101:")] == dropped
    kept = {i for part in splits["folds"] for side in part.values() for i in side} | set(splits["test"])
    assert len([i for i in kept if i.startswith("101:")]) == len(beats) - len(dropped)   # the record survives
    n_missing = long[1] - long[0] + len(singles) + SHORT_GAP * len(runs)
    assert (f"101.dat: {n_missing} missing (NaN) sample(s) of MLII in 3 gap(s): 2 gap(s) up to 0.02 s "
            "interpolated, beats touching the 1 longer one(s) are dropped") in result.stderr
    assert "touches a gap of missing samples longer than max_gap_s 0.02 s" in result.stderr


def test_mitdb_nan_handling_on_the_adapter(mitdb_bad, tmp_path):
    adapter = MITDB(str(mitdb_bad), split_mode="intra", record_names=["101"], fs=180, bandpass_hz=[0.5, 40])
    records = adapter.records()
    long, singles, runs = nan_gaps()
    served, refused = {}, []
    for i, rid in enumerate(records.ids):
        try:
            served[rid] = adapter.load(i)
        except DataError as err:
            assert "101.dat" in str(err) and "\n" not in str(err)
            refused.append(rid)
    assert refused == [f"101:{r:06d}" for r in beat_samples("101") if overlaps(int(r), long)]
    assert all(np.isfinite(x).all() for x in served.values())
    # beats on the interpolated short gaps are kept and still look like the beat the clean record gives
    clean_root = tmp_path / "clean"
    clean_root.mkdir()
    write_mitdb_record(clean_root, "101", MITDB_RECORDS["101"])
    (clean_root / "RECORDS").write_text("101\n")
    clean = MITDB(str(clean_root), split_mode="intra", fs=180, bandpass_hz=[0.5, 40])
    for position in (singles[0], runs[0] + 2):
        rid = f"101:{position:06d}"
        i = clean.records().ids.index(rid)
        assert np.corrcoef(served[rid][0], clean.load(i)[0])[0, 1] > 0.98
    # gaps at the very start of the record, under the first beat (R at sample 30, window from -60: 60 zeros
    # of edge padding, as without a gap): a short one is filled and the beat kept, a long one drops it
    record = wfdb.rdrecord(str(clean_root / "101"))

    def with_gap(stop: int) -> MITDB:
        signal = record.p_signal.copy()
        signal[:stop, 0] = np.nan
        wfdb.wrsamp("101", fs=360, units=["mV", "mV"], sig_name=record.sig_name, p_signal=signal,
                    fmt=["212", "212"], adc_gain=[200.0, 200.0], baseline=[1024, 1024], write_dir=str(clean_root))
        return MITDB(str(clean_root), split_mode="intra")

    first = with_gap(5).load(0)
    assert np.isfinite(first).all() and np.all(first[0, :60] == 0) and np.count_nonzero(first[0, 60:]) > 150
    edge = with_gap(50)
    with pytest.raises(DataError, match="101:000030 touches a gap"):
        edge.load(0)
    assert np.isfinite(edge.load(1)).all()
    with pytest.raises(DataError, match="every MLII sample is missing"):
        with_gap(len(record.p_signal)).load(3)


def test_mitdb_strict_makes_the_header_dat_mismatch_an_error(mitdb_bad):
    user_error(train(MITDB_CFG, mitdb_bad, "data.strict=true"), "100.dat: holds 8640 samples per signal",
               f"100.hea says {HEA_SAMPLES}", "experiments/mitdb/setup.sh")


def test_mitdb_missing_data_root(tmp_path):
    user_error(train(MITDB_CFG, tmp_path / "nowhere"), str(tmp_path / "nowhere"), "experiments/mitdb/setup.sh")


def test_mitdb_empty_test_split_names_the_key_and_the_folds_there_are(mitdb_bad):
    # only DS1 records: test_folds [2] (DS2) selects nothing
    user_error(train(MITDB_CFG, mitdb_bad, "data.record_names=['101', '106', '108', '109']"),
               "split.test_folds: [2] select no records", "folds (records) are 1 (")


# ---- PTB-XL: a csv without a column; truncated/short/long records counted and skipped ----

PTBXL_CODES = ["{'NORM': 100.0, 'SR': 0.0}", "{'IMI': 100.0}", "{'NDT': 100.0}", "{'LAFB': 100.0}", "{'LVH': 100.0}"]
PTBXL_FOLDS = [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 9, 10, 1, 2, 3, 4, 5, 9, 10]     # ecg_id 1..20
PTBXL_BAD = {   # ecg_id -> what its log line says
    2: "00002_lr.dat holds 416 samples per lead, 00002_lr.hea says 1000",      # cut mid-sample
    3: "00003_lr.dat holds 500 samples per lead, 00003_lr.hea says 1000",      # cut at a sample boundary
    4: "00004_lr.dat holds 2000 samples per lead, 00004_lr.hea says 1000",     # longer than the header says
    5: "00005_lr.hea says 500 samples, a PTB-XL record has 1000 (10 s at 100 Hz)",      # and a 5 s .dat
}


def write_ptbxl(root: Path, database: pd.DataFrame | None = None) -> pd.DataFrame:
    root.mkdir(parents=True)
    (root / "records100").mkdir()
    pd.DataFrame.from_dict(STATEMENTS, orient="index", columns=STATEMENT_COLUMNS).to_csv(root / "scp_statements.csv")
    if database is None:
        database = pd.DataFrame([{"ecg_id": e, "patient_id": float(100 + e), "recording_date": "1990-01-01 09:00:00",
                                  "scp_codes": PTBXL_CODES[e % 5], "strat_fold": f, "filename_lr": record_name(e, 100),
                                  "filename_hr": record_name(e, 500)} for e, f in enumerate(PTBXL_FOLDS, 1)])
    database.to_csv(root / "ptbxl_database.csv", index=False)
    return database


@pytest.fixture(scope="module")
def ptbxl_bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ptbxl") / "ptbxl"
    write_ptbxl(root)
    for e in range(1, len(PTBXL_FOLDS) + 1):
        write_ptbxl_record(root, e, 100, ecg(e, 100))
    folder = root / "records100" / "00000"
    for e, nbytes in ((2, 10001), (3, 24 * 500)):
        dat = folder / f"{e:05d}_lr.dat"
        dat.write_bytes(dat.read_bytes()[:nbytes])
    dat = folder / "00004_lr.dat"
    dat.write_bytes(dat.read_bytes() * 2)
    write_ptbxl_record(root, 5, 100, ecg(5, 100)[:, :500])        # a consistent 5 s record
    return root


@pytest.fixture(scope="module")
def ptbxl_run(ptbxl_bad, tmp_path_factory):
    work = tmp_path_factory.mktemp("runs") / "ptbxl"
    result = train(PTBXL_CFG, ptbxl_bad, work_dir=work)
    return result, finished(result, work)


@pytest.mark.parametrize("ecg_id", sorted(PTBXL_BAD))
def test_ptbxl_bad_record_is_a_counted_skip_naming_its_file(ptbxl_run, ecg_id):
    result, splits = ptbxl_run
    assert splits["skipped"]["unreadable"] == [str(e) for e in sorted(PTBXL_BAD)]
    assert f"skipped {len(PTBXL_BAD)} unreadable record(s)" in result.stderr
    assert PTBXL_BAD[ecg_id] in result.stderr
    kept = set(splits["test"]) | {i for part in splits["folds"] for side in part.values() for i in side}
    assert str(ecg_id) not in kept and len(kept) == len(PTBXL_FOLDS) - len(PTBXL_BAD)


def test_ptbxl_long_dat_is_refused_on_the_adapter_naming_the_fix(ptbxl_bad):
    adapter = PTBXL(str(ptbxl_bad))
    index = adapter.records().ids.index("4")
    with pytest.raises(DataError, match="00004_lr.dat holds 2000 samples per lead") as err:
        adapter.load(index)
    assert "experiments/ptbxl/setup.sh" in str(err.value) and "\n" not in str(err.value)
    assert adapter.load(adapter.records().ids.index("1")).shape == (12, 1000)


def test_ptbxl_csv_missing_a_column(tmp_path):
    database = write_ptbxl(tmp_path / "ptbxl").drop(columns="strat_fold")
    database.to_csv(tmp_path / "ptbxl" / "ptbxl_database.csv", index=False)
    user_error(train(PTBXL_CFG, tmp_path / "ptbxl"), "ptbxl_database.csv: missing column(s) ['strat_fold']",
               "experiments/ptbxl/setup.sh")


def test_ptbxl_missing_data_root(tmp_path):
    user_error(train(PTBXL_CFG, tmp_path / "nowhere"), "PTB-XL not found", "experiments/ptbxl/setup.sh")


# ---- CinC 2017: unknown label, empty split, overlapping folds, missing root ----

CINC17 = {f"A{k:05d}": label for k, label in enumerate("NAO~NAONNO", 1)}
CINC17_PARTS = dict(zip(CINC17, ["train"] * 5 + ["val"] * 2 + ["test"] * 3))


def write_cinc17(root: Path, labels: dict[str, str]) -> Path:
    """root/training2017/{REFERENCE.csv, A*.mat (MATLAB v4 'val' int16 1 x n), A*.hea} with simulated ECGs."""
    folder = root / "training2017"
    folder.mkdir(parents=True)
    for k, rid in enumerate(labels):
        rng = np.random.default_rng(k)
        val = np.round(simulate_ecg(rng, sample_patient(rng), 300, 3 + k % 3)[1:2] * 1000).astype(np.int16)
        scipy.io.savemat(folder / f"{rid}.mat", {"val": val}, format="4")
        (folder / f"{rid}.hea").write_text(f"{rid} 1 300 {val.shape[1]} 05:05:15 1/05/2000 \n"
                                           f"{rid}.mat 16+24 1000/mV 16 0 {val[0, 0]} 0 0 ECG\n")
    (folder / "REFERENCE.csv").write_text("".join(f"{rid},{label}\n" for rid, label in labels.items()))
    return root


def write_split(path: Path, parts: dict[str, str]) -> str:
    pd.DataFrame(sorted(parts.items()), columns=["record", "split"]).to_csv(path, index=False)
    return f"data.split_file={path}"


@pytest.fixture(scope="module")
def cinc17(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cinc17")
    return write_cinc17(base / "data", CINC17), base


def test_cinc17_unknown_label_in_reference_csv(tmp_path):
    root = write_cinc17(tmp_path / "data", {**CINC17, "A00003": "X"})
    user_error(train(CINC17_CFG, root, write_split(tmp_path / "split.csv", CINC17_PARTS), "input.window_s=2"),
               "REFERENCE.csv: line 3: label 'X' of A00003 is not one of N A O ~", "correct that line",
               "experiments/cinc17/setup.sh")


def test_cinc17_empty_val_split_names_the_key(cinc17):
    root, base = cinc17
    no_val = {rid: "train" if part == "val" else part for rid, part in CINC17_PARTS.items()}
    user_error(train(CINC17_CFG, root, write_split(base / "no_val.csv", no_val), "input.window_s=2"),
               "split.val_folds: [2] select no records", "1 (7), 3 (3)")


def test_cinc17_overlapping_folds_are_a_config_error(cinc17):
    root, base = cinc17
    user_error(train(CINC17_CFG, root, write_split(base / "split.csv", CINC17_PARTS), "input.window_s=2",
                     "split={type: predefined, train_folds: [1, 2], val_folds: [2], test_folds: [3]}"),
               "split.val_folds: fold(s) [2] are also in split.train_folds", "one part only")


def test_cinc17_missing_data_root(tmp_path):
    user_error(train(CINC17_CFG, tmp_path / "nowhere", "input.window_s=2"), "CinC 2017 not found",
               "experiments/cinc17/setup.sh")


# ---- CinC 2020: unknown and unscored codes ----

CINC2020_DX = {**{f"A{k:04d}": [[NSR], [AF], [RBBB], [PVC], [NSR, AF]][k % 5] for k in range(1, 15)},
               "A0100": [NOT_IN_TABLES],           # only a code in neither table: no known label
               "A0101": [IIAVB],                   # only an unscored code: an all-zero row, as the challenge
               "A0102": [],                        # an empty #Dx line
               "A0103": [NSR, NOT_IN_TABLES]}      # a known code and an unknown one: kept, the unknown counted


@pytest.fixture(scope="module")
def cinc2020_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cinc2020") / "data"
    for k, (rid, dx) in enumerate(CINC2020_DX.items()):
        write_cinc2020_record(root / "WFDB", rid, dx, seconds=2, seed=k, wave_hz=1.0 + k / 10)
    work = tmp_path_factory.mktemp("runs") / "cinc2020"
    result = train(CINC2020_CFG, root, "kfold.folds=0", "input.window_s=2", work_dir=work)
    return root, result, finished(result, work)


def test_cinc2020_record_without_a_known_code_is_left_out_not_labelled_negative(cinc2020_run):
    root, result, splits = cinc2020_run
    assert splits["skipped"]["no known #Dx code"] == ["A0100", "A0102"]
    assert "left out 2 record(s) (no known #Dx code): A0100, A0102" in result.stderr
    records = CinC2020(str(root)).records()
    assert "A0103" in records.ids and records.labels[records.ids.index("A0103")].sum() == 1


def test_cinc2020_unknown_and_unscored_codes_are_counted_in_the_log(cinc2020_run):
    _, result, _ = cinc2020_run
    assert f"2 Dx code(s) in neither dx_mapping table were ignored: {NOT_IN_TABLES} (2x)" in result.stderr
    assert "1 record(s) with only unscored diagnoses kept as all-zero label rows" in result.stderr


def test_cinc2020_missing_data_root(tmp_path):
    user_error(train(CINC2020_CFG, tmp_path / "nowhere"), "CinC 2020 not found", "experiments/cinc2020/setup.sh")


# ---- Kaggle heartbeat CSVs ----

def test_kaggle_csv_wrong_column_count(tmp_path):
    write_kaggle(tmp_path / "ptbdb_normal.csv", kaggle_beats(20, 2)[:, :180], np.zeros(20))
    write_kaggle(tmp_path / "ptbdb_abnormal.csv", kaggle_beats(30, 3), np.ones(30))
    user_error(train(KAGGLE_CFG, tmp_path), "ptbdb_normal.csv: 181 columns, expected 187 samples + 1 label",
               "data.files")


def test_kaggle_csv_short_row_is_counted_long_row_names_the_line(tmp_path):
    rows = [",".join(["0.5"] * 187 + ["1"])] * 5
    rows[2] = ",".join(["0.5"] * 100 + ["1"])                      # a short row: no label in column 188
    (tmp_path / "ptbdb_abnormal.csv").write_text("\n".join(rows) + "\n")
    write_kaggle(tmp_path / "ptbdb_normal.csv", kaggle_beats(5, 2), np.zeros(5))
    records = KaggleHeartbeatCSV(str(tmp_path), flavour="ptbdb").records()
    assert records.skipped == {SKIP_LABEL: ["ptbdb_abnormal.csv:2"]} and len(records.ids) == 9
    rows[2] = ",".join(["0.5"] * 190 + ["1"])
    (tmp_path / "ptbdb_abnormal.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="ptbdb_abnormal.csv: not a Kaggle heartbeat CSV .*line 3") as err:
        read_kaggle_csv(tmp_path / "ptbdb_abnormal.csv")
    assert "\n" not in str(err.value)


# ---- splits, in-process ----

def test_split_errors_name_the_key_and_what_to_change(mitdb_bad):
    records = MITDB(str(mitdb_bad), split_mode="inter").records()
    base = {"type": "predefined", "val_fraction": 0.1, "test_fraction": 0.2, "seed": 0, "train_folds": [1],
            "val_folds": None, "test_folds": [2]}
    with pytest.raises(ConfigError, match=r"split.test_folds: fold\(s\) \[1\] are also in split.train_folds"):
        make_splits(records, {**base, "test_folds": [1, 2]})
    with pytest.raises(ConfigError, match=r"split.val_folds: \[7\] select no records; .* are 1 \(\d+\), 2 \(\d+\)"):
        make_splits(records, {**base, "val_folds": [7]})
    # holding out 0.99 of the 4 DS1 records leaves no training record
    with pytest.raises(DataError, match="split: cannot hold out 0.99 of 4 patient") as err:
        make_splits(records, {**base, "val_fraction": 0.99})
    assert "\n" not in str(err.value)


# ---- HDF5 files that break ecgnet's layout, through the CLI ----

HDF5_CFG = "cfgs/pediatric/se_resnet1d_focal_tuned.yaml"


@pytest.mark.parametrize("change, fragments", [
    ({"drop": ["labels"]}, ["f.h5:/labels: missing", "multi-hot"]),
    ({"format": "hdf5"}, ["f.h5: root attribute 'format' is 'hdf5', expected 'ecgnet-hdf5'"]),
    ({"labels": np.full((3, 2), 0.5)}, ["f.h5:/labels: multi-hot labels must be 0 or 1"]),
])
def test_wrong_hdf5_layout_is_one_line_naming_the_file(tmp_path, change, fragments):
    from test_hdf5 import ecg_like, write_file
    change = dict(change)
    labels = change.pop("labels", np.array([[1, 0], [0, 1], [1, 1]], np.uint8))
    path = write_file(tmp_path / "f.h5", [ecg_like(10, seed=i) for i in range(3)], labels, **change)
    result = train(HDF5_CFG, path, f"data.qc_cache={tmp_path / 'qc'}", work_dir=tmp_path / "run")
    user_error(result, *fragments)
    assert not (tmp_path / "run").exists()
