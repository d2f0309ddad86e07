"""Bad inputs to the preprocessing cache and signal QC, mostly through ``tools/train.py`` as a user runs
it (the seven kinds of cache damage in-process through ``load_signals``, one of them also through the
CLI): a stale or damaged cache entry is rebuilt (one logged line saying why) and never served, an
unwritable cache folder falls back to no cache with a warning, a record that fails QC is a
counted skip, and a user mistake is one ``error:`` line with exit code 2 -- never a traceback.

Fixture: a tiny CinC 2017 folder in the official layout (MATLAB v4 ``val`` + WFDB header, 300 Hz,
one lead) with 10 ECG-like records of 3-5 s from ``ecgsim``. The cache entry the CLI looks for is
built once in-process with the same config (same code, same key) and copied into each case.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io

from ecgnet.build import build
from ecgnet.config import load_config
from ecgnet.data import qc as qc_module
from ecgnet.data.base import ECGAdapter, RecordSet
from ecgnet.data.cache import read_cache, write_cache
from ecgnet.data.dataset import load_signals
from ecgnet.data.ecgsim import sample_patient, simulate_ecg
from ecgnet.registry import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
FS = 300
IDS = [f"A{k:05d}" for k in range(1, 11)]
LABELS = dict(zip(IDS, "NAO~NAONAO"))
PARTS = {rid: "train" if k < 6 else "val" if k < 8 else "test" for k, rid in enumerate(IDS)}


def ecg_val(k: int) -> np.ndarray:
    """Record k as the int16 (1, n) ``val`` of a CinC 2017 .mat (1000 adu/mV), 3-5 s."""
    rng = np.random.default_rng(k)
    x = simulate_ecg(rng, sample_patient(rng, ["II"]), FS, 3 + k % 3)
    return np.round(x * 1000).astype(np.int16)


def write_cinc17(root: Path, vals: dict) -> Path:
    folder = root / "training2017"
    folder.mkdir(parents=True)
    for rid, val in vals.items():
        scipy.io.savemat(folder / f"{rid}.mat", {"val": val}, format="4")
        first = 0 if not np.isfinite(val[0, 0]) else int(val[0, 0])
        (folder / f"{rid}.hea").write_text(f"{rid} 1 300 {val.shape[1]} 05:05:15 1/05/2000 \n"
                                           f"{rid}.mat 16+24 1000/mV 16 0 {first} 0 0 ECG\n")
    (folder / "REFERENCE.csv").write_text("".join(f"{rid},{LABELS[rid]}\n" for rid in vals))
    (root / "split.csv").write_text("record,split\n" + "".join(f"{rid},{PARTS[rid]}\n" for rid in vals))
    config = root / "cfg.yaml"
    config.write_text(f"""
data: {{type: cinc17, root: {root}, split_file: {root / 'split.csv'}}}
split: {{type: predefined, train_folds: [1], val_folds: [2], test_folds: [3]}}
model: {{type: cnn1d, widths: [8, 16]}}
loss: {{type: ce}}
schedule: {{type: constant}}
input: {{window_s: 2}}
train: {{epochs: 1, batch_size: 4, tensorboard: false, progress: "off", device: cpu}}
eval: {{plots: false, bootstrap: 0}}
""")
    return config


def train(config: Path, tmp: Path, cache_dir, *opts: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "tools/train.py", "--config", str(config), "--opts",
                           f"preprocess.cache_dir={cache_dir}", f"work_dir={tmp / 'runs'}", *opts],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("cinc17")
    config = write_cinc17(base / "data", {rid: ecg_val(k) for k, rid in enumerate(IDS)})
    cfg = load_config(config, [f"preprocess.cache_dir={base / 'pristine'}"])
    adapter = build("data", cfg)
    load_signals(adapter, cfg["preprocess"], "cinc17")
    entry = next((base / "pristine").iterdir()).name
    sources = {rid: adapter.load(i) for i, rid in enumerate(adapter.records().ids)}
    return SimpleNamespace(config=config, pristine=base / "pristine", entry=entry, sources=sources)


@pytest.fixture
def cache(world, tmp_path):
    """A cache folder holding a copy of the valid entry and an unrelated one that must survive."""
    root = tmp_path / "cache"
    shutil.copytree(world.pristine, root)
    (root / "other-entry").mkdir()
    (root / "other-entry" / "ids.json").write_text("[]")
    return root


def served_correctly(world, root: Path) -> bool:
    """The entry now in ``root`` pairs every record id (and so its label) with that record's signal."""
    signals, failed = read_cache(root / world.entry, IDS, 1)
    return not failed and all(np.array_equal(s, world.sources[rid]) for rid, s in zip(IDS, signals))


# ---- damaged or stale entries: rebuilt, with one line saying why ----

def reorder(entry: Path):
    ids = json.loads((entry / "ids.json").read_text())
    ids[2], ids[3] = ids[3], ids[2]                    # A00003 (label O) would get A00004's signal
    (entry / "ids.json").write_text(json.dumps(ids))


def drop_one(entry: Path):
    """The entry a dataset without A00005 would have: valid in itself, one record short."""
    signals, _ = read_cache(entry, IDS, 1)
    kept = [(rid, np.array(s), None) for rid, s in zip(IDS, signals) if rid != "A00005"]
    shutil.rmtree(entry)
    write_cache(entry, kept, 1)


def truncate(entry: Path):
    data = (entry / "signals.f32").read_bytes()
    (entry / "signals.f32").write_bytes(data[:len(data) // 2])


def nans(entry: Path):
    with open(entry / "signals.f32", "r+b") as f:
        f.seek(4 * 1000)
        f.write(np.full(50, np.nan, np.float32).tobytes())


DAMAGE = {
    "reordered ids": (reorder, r"it lists other records than the dataset \(10 vs 10; at position 2 'A00004' "
                               r"where the dataset has 'A00003'\)"),
    "one record missing": (drop_one, r"it lists other records than the dataset \(9 vs 10; at position 4 'A00006' "
                                     r"where the dataset has 'A00005'\)"),
    "truncated signals.f32": (truncate, r"signals.f32 has \d+ bytes, expected \d+ \(truncated or overwritten\)"),
    "missing ids.json": (lambda e: (e / "ids.json").unlink(), r"ids.json is missing"),
    "corrupt offsets.npy": (lambda e: (e / "offsets.npy").write_bytes(b"\x93NUMPY garbage"),
                            r"offsets.npy is unreadable \(.+\)"),
    "garbage JSON": (lambda e: (e / "meta.json").write_text("{'leads': 1,"), r"meta.json is unreadable \(.+\)"),
    "NaNs in signals.f32": (nans, r"signals.f32 holds NaN/inf samples"),
}


def check_rebuilt(world, cache, log_lines: list[str], why: str):
    rebuilt = [line for line in log_lines if "is unusable" in line]
    assert len(rebuilt) == 1 and re.search(rf"cache entry .*{world.entry} is unusable: {why}; rebuilding it$",
                                           rebuilt[0]), log_lines
    assert any("preprocessed 10 records into the cache" in line for line in log_lines), log_lines
    assert served_correctly(world, cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([world.entry, "other-entry"])   # nothing left over
    assert (cache / "other-entry" / "ids.json").read_text() == "[]"


def test_damaged_entry_is_rebuilt_through_the_cli(world, cache, tmp_path):
    """As a user meets it: the most dangerous damage (ids reordered, so labels would pair with other
    records' signals) during ``tools/train.py``, which must rebuild the entry and train."""
    corrupt, why = DAMAGE["reordered ids"]
    corrupt(cache / world.entry)
    proc = train(world.config, tmp_path, cache)
    assert proc.returncode == 0 and "run directory:" in proc.stdout, proc.stderr
    check_rebuilt(world, cache, proc.stderr.splitlines(), why)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_or_stale_entry_is_rebuilt_never_served(world, cache, damage, caplog):
    """Every kind of damage, through ``load_signals`` (the code train.py runs; in-process, so the
    seven cases cost no interpreter and model start-up each)."""
    corrupt, why = DAMAGE[damage]
    corrupt(cache / world.entry)
    cfg = load_config(world.config, [f"preprocess.cache_dir={cache}"])
    with caplog.at_level("INFO", logger="ecgnet"):
        records, signals = load_signals(build("data", cfg), cfg["preprocess"], "cinc17")
    check_rebuilt(world, cache, [r.getMessage() for r in caplog.records], why)
    assert list(records.ids) == IDS     # and what training gets pairs each id with its own signal
    assert all(np.array_equal(x, world.sources[rid]) for rid, x in zip(records.ids, signals))


# ---- a cache folder that cannot be written: warned, then run without the cache ----

def test_cache_dir_that_is_not_a_folder_falls_back_with_a_warning(world, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be\n")
    proc = train(world.config, tmp_path, blocker / "cache")
    assert proc.returncode == 0 and "run directory:" in proc.stdout, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "cannot write the cache entry" in line]
    assert len(warning) == 1 and "preprocess.cache_dir" in warning[0] and "set it to null" in warning[0]
    assert blocker.read_text() == "a file where the cache folder should be\n"


def test_read_only_cache_dir_uses_a_valid_entry_and_never_a_stale_one(world, cache, tmp_path):
    reorder(cache / world.entry)
    stale = {p.name: p.read_bytes() for p in (cache / world.entry).iterdir()}
    os.chmod(cache, 0o555)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes (see the blocked-path test)")
        proc = train(world.config, tmp_path, cache)
    finally:
        os.chmod(cache, 0o755)
    assert proc.returncode == 0, proc.stderr
    assert "is unusable: it lists other records" in proc.stderr and "cannot write the cache entry" in proc.stderr
    assert {p.name: p.read_bytes() for p in (cache / world.entry).iterdir()} == stale   # untouched, not used


# ---- signal QC on a non-HDF5 adapter ----

@pytest.fixture(scope="module")
def bad_records(tmp_path_factory):
    """The dataset with a flat record (A00002), NaN samples in A00004 and an all-NaN lead (A00009)."""
    vals = {rid: ecg_val(k) for k, rid in enumerate(IDS)}
    vals["A00002"] = np.full_like(vals["A00002"], 150)              # disconnected electrode
    holes = vals["A00004"].astype(np.float64)
    holes[0, 100:130] = np.nan
    vals["A00004"] = holes
    vals["A00009"] = np.full(vals["A00009"].shape, np.nan)
    return write_cinc17(tmp_path_factory.mktemp("bad") / "data", vals)


def test_records_failing_qc_are_skipped_counted_and_remembered(bad_records, tmp_path):
    proc = train(bad_records, tmp_path, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert ("QC rejected 3 of 10 record(s): 2 qc: missing or flat lead (e.g. A00002, A00009); "
            "1 qc: NaN/inf samples (e.g. A00004)") in proc.stderr
    skipped = json.loads(next((tmp_path / "runs").glob("*/splits.json")).read_text())["skipped"]
    assert skipped == {"qc: missing or flat lead": ["A00002", "A00009"], "qc: NaN/inf samples": ["A00004"]}
    # the cache entry remembers the failures: a second load reads no record and skips the same ones
    cfg = load_config(bad_records, [f"preprocess.cache_dir={tmp_path / 'cache'}"])
    adapter = build("data", cfg)

    def refuse(i):
        raise AssertionError("the cache should have served every record")
    adapter.load = refuse
    records, signals = load_signals(adapter, cfg["preprocess"], "cinc17")
    assert records.skipped == skipped and len(signals) == 7


def test_qc_off_keeps_them(bad_records, tmp_path):
    proc = train(bad_records, tmp_path, tmp_path / "cache", "preprocess.qc.enabled=false")
    assert proc.returncode == 0, proc.stderr
    assert "QC rejected" not in proc.stderr
    assert "2 record(s) have NaN/inf samples that preprocess.qc lets through; they are served as 0" in proc.stderr
    assert json.loads(next((tmp_path / "runs").glob("*/splits.json")).read_text())["skipped"] == {}


def test_strict_qc_failure_is_a_one_line_error(bad_records, tmp_path):
    proc = train(bad_records, tmp_path, tmp_path / "cache", "data.strict=true")
    assert error_line(proc) == ("error: record A00002 fails QC (qc: missing or flat lead); fix it, relax "
                                "preprocess.qc or set data.strict: false")
    assert not any(tmp_path.glob("cache/*/*"))                       # no half-written entry left


# ---- QC in-process: multi-lead records, units, settings in the cache key ----

class Records(ECGAdapter):
    """Two-lead records given as arrays; a fixed cache key."""

    def __init__(self, signals, signal_units="mV"):
        self.signals, self.signal_units, self.reads = signals, signal_units, 0
        ids = [f"r{i}" for i in range(len(signals))]
        self._records = RecordSet(ids=ids, groups=ids, labels=np.zeros(len(ids), np.int64), class_names=["a"],
                                  fs=250.0, leads=["I", "II"])

    def records(self):
        return self._records

    def load(self, i):
        self.reads += 1
        return self.signals[i].astype(np.float32)

    def cache_key(self):
        return "fixed"


def prep(cache_dir=None, **qc):
    return {"fs": None, "bandpass_hz": None, "filter_order": 3, "normalize": "none",
            "cache_dir": None if cache_dir is None else str(cache_dir), "qc": qc}


def two_lead(seed):
    """A 4 s, 250 Hz two-lead ECG in mV (1000 samples)."""
    rng = np.random.default_rng(seed)
    return simulate_ecg(rng, sample_patient(rng, ["I", "II"]), 250, 4)


def test_all_nan_lead_is_a_missing_lead_unless_allowed(caplog):
    signals = [two_lead(i) for i in range(3)]
    signals[1][0] = np.nan                                           # lead I missing
    records, served = load_signals(Records(signals), prep())
    assert records.ids == ["r0", "r2"] and records.skipped == {qc_module.REASON_FLAT: ["r1"]}
    records, served = load_signals(Records(signals), prep(max_bad_leads=1))
    assert records.ids == ["r0", "r1", "r2"] and np.array_equal(served[1][0], np.zeros(1000, np.float32))
    assert "1 record(s) have NaN/inf samples that preprocess.qc lets through" in caplog.text


def test_amplitude_and_flat_thresholds_apply_to_signals_in_mv_only():
    clean = two_lead(5)
    big = two_lead(0) * 30                                           # 30x a normal ECG: an artefact in mV
    scaled = (two_lead(1) - two_lead(1).min()) / 100                 # std 0.00x: flat in mV, fine when scaled
    records, _ = load_signals(Records([clean, big, scaled]), prep())
    assert records.skipped == {qc_module.REASON_AMPLITUDE: ["r1"], qc_module.REASON_FLAT: ["r2"]}
    records, _ = load_signals(Records([clean, big, scaled], signal_units="normalized"), prep())
    assert records.skipped == {} and len(records.ids) == 3
    constant = np.ones((2, 1000), np.float32)
    records, _ = load_signals(Records([clean, constant], signal_units="normalized"), prep())
    assert records.skipped == {qc_module.REASON_FLAT: ["r1"]}       # constant is flat in any unit


def test_qc_settings_are_part_of_the_cache_key(tmp_path):
    signals = [two_lead(i) for i in range(3)]
    signals[2][1, 500:520] = np.inf
    first, _ = load_signals(Records(signals), prep(tmp_path))
    assert first.skipped == {qc_module.REASON_NONFINITE: ["r2"]}
    relaxed = Records(signals)
    records, served = load_signals(relaxed, prep(tmp_path, max_nonfinite_fraction=0.05))
    assert relaxed.reads == 3 and records.skipped == {} and not served[2][1, 500:520].any()   # served as 0
    assert len(list(tmp_path.iterdir())) == 2
    again = Records(signals)
    load_signals(again, prep(tmp_path))
    assert again.reads == 0                                          # the first entry still serves it


def test_no_record_left_and_a_bad_qc_key_are_one_line_errors():
    with pytest.raises(DataError, match=r"no record left of 2 \(2 qc: missing or flat lead\); check the data"):
        load_signals(Records([np.zeros((2, 500)), np.zeros((2, 500))]), prep())
    with pytest.raises(ConfigError, match=r"^preprocess.qc.flat_std: not a QC setting; did you mean 'flat_std_mv'\?$"):
        load_signals(Records([two_lead(0)]), prep(flat_std=0.1))


def test_high_frequency_check_is_opt_in_for_preprocess_qc():
    noisy = two_lead(3) + np.random.default_rng(0).normal(0, 0.5, (2, 1000)).astype(np.float32)
    records, _ = load_signals(Records([two_lead(2), noisy]), prep())
    assert records.skipped == {}                                     # off by default: '~' is a class in CinC 2017
    records, _ = load_signals(Records([two_lead(2), noisy]), prep(max_hf_ratio=0.5))
    assert records.skipped == {qc_module.REASON_HF: ["r1"]}
