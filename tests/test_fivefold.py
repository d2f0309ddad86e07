"""experiments/ptbxl/fivefold.sh, the script behind the 5-fold ensembles in RESULTS.md: two processes share one
run (and go on to the next run's folds), the test split is scored once after all five folds are trained, and a
scored run is left alone. A small PTB-XL fixture in the PhysioNet layout and a tiny resnet1d (OPTS) keep it to
seconds."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from test_bad_inputs_data import write_ptbxl
from test_ptbxl import ecg, record_name, write_record

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "ptbxl" / "fivefold.sh"
CODES = ["{'NORM': 100.0}", "{'IMI': 100.0}", "{'NDT': 100.0}", "{'LAFB': 100.0}", "{'LVH': 100.0}"]
TINY = ("model.num_blocks=2 model.base_width=8 model.kernel_size=5 train.epochs=1 train.batch_size=8 "
        "schedule.warmup_epochs=0 schedule.cooldown_epochs=1 eval.bootstrap=0 preprocess.cache_dir=null")


@pytest.fixture(scope="module")
def ptbxl(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fivefold") / "ptbxl"
    # 40 records of 40 patients: 4 per strat_fold, every superdiagnostic class in every fold
    rows = [{"ecg_id": e, "patient_id": float(1000 + e), "recording_date": "1990-01-01 09:00:00",
             "scp_codes": CODES[e % 5], "strat_fold": (e - 1) // 4 + 1, "filename_lr": record_name(e, 100),
             "filename_hr": record_name(e, 500)} for e in range(1, 41)]
    write_ptbxl(root, pd.DataFrame(rows))       # scp_statements.csv and ptbxl_database.csv
    for row in rows:
        write_record(root, row["ecg_id"], 100, ecg(row["ecg_id"], 100))
    return root


def fivefold(root: Path, runs: Path, *names: str, processes: str = "2", opts: str = TINY):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "PROCESSES": processes, "OPTS": opts}
    return subprocess.run(["bash", str(SCRIPT), str(root), str(runs), *names], env=env, capture_output=True, cwd=REPO,
                          text=True, timeout=600)


def test_two_workers_continue_a_cut_run_start_the_next_and_score_each_test_split_once(ptbxl, tmp_path):
    runs = tmp_path / "runs"
    cut = runs / "resnet1d_superdiagnostic_5fold"
    # a run cut short after fold 0 (as a session's end leaves it)
    subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "--config",
                    str(REPO / "cfgs" / "ptbxl" / "resnet1d_superdiagnostic.yaml"), "--folds", "5",
                    "--work-dir", str(cut), "--only-folds", "0", "--opts", f"data.root={ptbxl}",
                    "train.tensorboard=false", *TINY.split()], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    fold0 = (cut / "fold0" / "last.pt").stat().st_mtime_ns
    # the claims an invocation killed by a session's end left behind (its process is gone)
    gone = subprocess.run(["bash", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()
    (runs / ".fivefold.killed").mkdir()
    (runs / ".fivefold.killed" / "pid").write_text(gone + "\n")
    (runs / ".fivefold.killed" / "resnet1d_superdiagnostic.fold1").mkdir()
    # the second run named by its config file's path (any dataset's config can be given so)
    second = REPO / "cfgs" / "ptbxl" / "resnet1d_diagnostic.yaml"
    result = fivefold(ptbxl, runs, "resnet1d_superdiagnostic", str(second))
    assert result.returncode == 0, result.stdout + result.stderr
    new = runs / "resnet1d_diagnostic_5fold"
    assert f"{cut}: training fold 0 (--resume --only-folds 0, worker" in result.stdout   # finished: left as it was
    assert (cut / "fold0" / "last.pt").stat().st_mtime_ns == fold0
    # one worker starts the new run with its fold 0, the other workers resume it once its split is written
    assert f"{new}: training fold 0, starting the run (worker" in result.stdout
    assert all(f"{new}: training fold {k} (--resume --only-folds {k}, worker" in result.stdout for k in range(1, 5))
    assert result.stdout.count("scoring the folds") == 2
    # the OPTS reached the new run's saved config; each fold was trained once, by one worker, in its log
    config = (new / "config.yaml").read_text()
    assert "num_blocks: 2" in config and "epochs: 1" in config
    logs = [(runs / f"resnet1d_diagnostic_5fold{suffix}.out") for suffix in ("", ".p1")]
    logs = [log.read_text() for log in logs if log.is_file()]
    assert all(sum(f"fold {k} epoch 1" in log for log in logs) == 1 for k in range(5))
    assert "worker 0" in result.stdout and "worker 1" in result.stdout
    for run in (cut, new):
        metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
        assert list(metrics) == [f"fold{k}" for k in range(5)] + ["ensemble_vote", "ensemble_mean"]
        assert metrics["ensemble_mean"]["n"] == 4 and 0 <= metrics["ensemble_mean"]["macro_auroc"] <= 1
    scored = (new / "eval" / "test" / "metrics.json").stat().st_mtime_ns

    again = fivefold(ptbxl, runs, "resnet1d_superdiagnostic", str(second))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already evaluated on the test split; left alone") == 2
    assert (new / "eval" / "test" / "metrics.json").stat().st_mtime_ns == scored
    assert not list(runs.glob(".fivefold.*"))      # the claims of an invocation go with it, the stale ones too


def test_a_second_invocation_is_refused_while_one_trains_in_the_runs_dir(ptbxl, tmp_path):
    runs = tmp_path / "runs"
    (runs / ".fivefold.other").mkdir(parents=True)
    # a stand-in for a running fivefold.sh: a process whose command line names it
    other = subprocess.Popen(["bash", "-c", "exec -a fivefold.sh sleep 60"])
    try:
        (runs / ".fivefold.other" / "pid").write_text(f"{other.pid}\n")
        result = fivefold(ptbxl, runs, "resnet1d_superdiagnostic")
    finally:
        other.kill()
        other.wait()
    assert result.returncode == 2
    assert f"another fivefold.sh (pid {other.pid}) is training here" in result.stderr
    assert (runs / ".fivefold.other").is_dir() and not (runs / "resnet1d_superdiagnostic_5fold").exists()


def test_a_failed_training_is_not_scored(ptbxl, tmp_path):
    runs = tmp_path / "runs"
    result = fivefold(ptbxl, runs, "resnet1d_superdiagnostic", opts=TINY + " model.num_blocks=-1")
    assert result.returncode == 1
    run = runs / "resnet1d_superdiagnostic_5fold"
    assert "fold 0's training failed or was stopped" in result.stderr
    logs = "".join(log.read_text() for log in runs.glob("*.out"))      # the log of whichever worker took fold 0
    assert "model.num_blocks: must be a positive integer" in logs         # train.py's reason
    assert not (run / "eval").exists()


@pytest.mark.parametrize("processes, names, message", [
    ("6", ["resnet1d_superdiagnostic"], "PROCESSES=6: give 1 to 5"),
    ("2", ["resnet1d_nonexistent"], "cfgs/ptbxl/resnet1d_nonexistent.yaml: no such config"),
    ("2", ["cfgs/mitdb/nonexistent.yaml"], "cfgs/mitdb/nonexistent.yaml: no such config"),
    ("2", ["resnet1d_rhythm", "cfgs/ptbxl/resnet1d_rhythm.yaml"], "a second config named resnet1d_rhythm"),
])
def test_bad_arguments_are_refused_before_anything_runs(ptbxl, tmp_path, processes, names, message):
    result = fivefold(ptbxl, tmp_path / "runs", *names, processes=processes)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "runs").exists()
