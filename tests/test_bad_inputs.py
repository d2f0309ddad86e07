"""Bad inputs through the command line, each in a subprocess as a user would meet it: a mistake exits
with code 2 and one line, ``error: ...``, that names the file or key and the fix (never a traceback);
what would have given a silently wrong result is refused; nothing written before is lost. Ctrl-C,
``kill -9`` and a full disk are survived. Shared runs are module fixtures, so the file trains only a
few tiny models (synthetic data, no files needed)."""
import csv
import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = ["data.num_records=60", "data.duration_s=4", "model.base_width=8", "model.num_blocks=2", "train.epochs=1",
        "schedule.warmup_epochs=0", "schedule.cooldown_epochs=1", "train.tensorboard=false", "eval.plots=false",
        "eval.bootstrap=0"]
# the shared run: enough steps per epoch (~1 s) that a signal can land in the middle of the second epoch
# deterministic: resumes are compared bit for bit, which on CUDA needs deterministic kernels (CPU: no-op)
RUN = [*TINY, "data.num_records=200", "train.batch_size=2", "train.epochs=4", "train.deterministic=true"]


def tool(name, *args, cwd=REPO, preexec_fn=None):
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600, preexec_fn=preexec_fn)


def train(*args, opts=TINY, **kw):
    return tool("train.py", "--config", "cfgs/demo.yaml", *args, "--opts", *opts, **kw)


def _default_sigint() -> None:
    # A shell without job control starts background jobs (a CI script run with `&`, nohup) with
    # SIGINT ignored, and children inherit that: Python then never raises KeyboardInterrupt. A user's
    # Ctrl-C reaches a foreground process with the default handler, so give the child that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(work_dir: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "tools/train.py", "--config", "cfgs/demo.yaml", "--work-dir",
                             str(work_dir), "--opts", *RUN], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"), text=True, preexec_fn=_default_sigint)


def user_error(result, *fragments, alone=True) -> str:
    """Exit code 2, no traceback, one ``error:`` line (the last, and with ``alone`` the only line on
    stderr) that contains every fragment."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    assert len(lines) == 1 or not alone, result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def wait_until(condition, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before the moment to interrupt it:\n{log.read_text()}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for training")
        time.sleep(0.01)


def epochs_done(run: Path) -> list[dict]:
    try:
        with (run / "history.csv").open() as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def interrupt_in_second_epoch(run: Path, log: Path, sig: int) -> subprocess.Popen:
    """Start training and send ``sig`` half-way through epoch 2 (after epoch 1's last.pt exists)."""
    proc = start_training(run, log)
    wait_until(lambda: len(epochs_done(run)) >= 1, proc, log)
    time.sleep(float(epochs_done(run)[0]["time_s"]) / 2)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=300)
    return proc


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    for name in ("last.pt", "best.pt"):
        wa, wb = weights(a / name), weights(b / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """An uninterrupted run (the reference for bit-identical resumes) with its test report."""
    run = tmp_path_factory.mktemp("finished") / "run"
    result = tool("train.py", "--config", "cfgs/demo.yaml", "--work-dir", str(run), "--opts", *RUN)
    assert result.returncode == 0, result.stderr
    result = tool("evaluate.py", "--ckpt", str(run))
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A copy of the finished run that a test may damage."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The same run killed with SIGKILL in the middle of its second epoch."""
    base = tmp_path_factory.mktemp("killed")
    proc = interrupt_in_second_epoch(base / "run", base / "stderr.txt", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(base / "run" / "last.pt", weights_only=True)
    assert not state["finished"] and 1 <= state["next_epoch"] < 4
    return base / "run"


def without_dac_override():
    """A preexec_fn under which root, too, obeys a folder's permission bits (drops CAP_DAC_OVERRIDE)."""
    if os.geteuid() != 0:
        return None

    def drop():
        if ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0) != 0:    # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    try:
        subprocess.run(["true"], preexec_fn=drop, check=True)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("running as root without CAP_SETPCAP: cannot make a folder read-only for the test")
    return drop


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def file_size_limit(limit: int):
    """A preexec_fn: files the process writes are cut at ``limit`` bytes (EFBIG), like a full disk."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


# ---------------------------------------------------------------- config mistakes, refused before any data

@pytest.mark.parametrize("opts, fragments", [
    (["trian.epochs=3"], ["trian: unknown config section", "did you mean 'train'?"]),
    (["model.dropuot=0.5"], ["model.dropuot: not a setting of model 'resnet1d'", "did you mean 'dropout'?"]),
    (["loss.type=focall"], ["loss.type: unknown loss 'focall'", "did you mean 'focal'?"]),
    (["train.epochs=three"], ["train.epochs: expected int, got 'three'"]),
    (["train.epochs"], ["--opts 'train.epochs': expected key.sub=value"]),
], ids=["typo_section", "typo_key", "unknown_component", "wrong_type", "malformed_opts"])
def test_config_mistakes(opts, fragments):
    user_error(train(opts=[*TINY, *opts]), *fragments)


@pytest.mark.parametrize("opt, fragment", [
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("optimizer.lr=-0.001", "optimizer.lr: must be > 0, got -0.001"),
    ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ("train.num_workers=-1", "train.num_workers: must be >= 0, got -1"),
    ("train.clip_grad_norm=0", "train.clip_grad_norm: must be > 0 or null, got 0"),
    ("train.early_stop_patience=0", "train.early_stop_patience: must be >= 1 or null, got 0"),
    ("split.test_fraction=1.2", "split.test_fraction: must be between 0 and 1 (exclusive), got 1.2"),
    ("thresholds.default=1.5", "thresholds.default: must be between 0 and 1 (exclusive), got 1.5"),
    ("eval.bootstrap=-5", "eval.bootstrap: must be >= 0, got -5"),
])
def test_out_of_range_values_are_named_not_tracebacks(opt, fragment, tmp_path):
    user_error(train("--work-dir", str(tmp_path / "run"), opts=[*TINY, opt]), fragment)
    assert not (tmp_path / "run").exists()


def test_missing_config_file():
    user_error(tool("train.py", "--config", "cfgs/nope.yaml"), "cfgs/nope.yaml: config file not found")


def test_missing_base_names_the_file_that_includes_it(tmp_path):
    child = write_yaml(tmp_path / "child.yaml", {"_base_": "gone.yaml", "train": {"epochs": 1}})
    user_error(tool("train.py", "--config", str(child)), f"{child}: _base_ 'gone.yaml' not found", "fix the path")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {type: synthetic}\nmodel: [unclosed\n")
    user_error(tool("train.py", "--config", str(bad)), f"{bad}: line 3 is not valid YAML", "fix the syntax")


def test_name_cannot_escape_work_dir(tmp_path):
    result = train(opts=[*TINY, "name=../escaped", f"work_dir={tmp_path / 'runs'}"])
    user_error(result, "name: '../escaped' must be a plain folder name")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs").exists()


def test_unknown_monitor_is_refused_before_the_first_epoch(tmp_path):
    result = train("--work-dir", str(tmp_path / "run"), opts=[*TINY, "train.monitor=val/macro_aurocc"])
    user_error(result, "train.monitor: 'val/macro_aurocc' is not a validation metric",
               "did you mean 'val/macro_auroc'?")             # alone: no epoch was logged
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- where a run writes

def test_work_dir_that_is_a_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    user_error(train("--work-dir", str(target)), f"--work-dir {target}: is a file")
    assert target.read_text() == "keep me"


def test_read_only_work_dir(read_only_dir):
    drop = without_dac_override()
    result = train("--work-dir", str(read_only_dir / "run"), preexec_fn=drop)
    user_error(result, f"--work-dir {read_only_dir / 'run'}: cannot write the run directory", "Permission denied",
               "choose a writable directory")
    assert not any(read_only_dir.iterdir())


def test_full_disk_at_the_first_checkpoint_leaves_no_run_directory(tmp_path):
    """Config, env and split files fit, the first checkpoint does not."""
    result = train("--work-dir", str(tmp_path / "run"), preexec_fn=file_size_limit(40_000))
    line = user_error(result, "best.pt: cannot write the checkpoint (File too large)", "start again", alone=False)
    assert str(tmp_path / "run") in line
    assert not (tmp_path / "run").exists()        # nothing that blocks --work-dir next time


# ---------------------------------------------------------------- resume: refuse what would mix settings

def test_resume_after_editing_config_is_refused(run_copy):
    path = run_copy / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["model"]["dropout"], cfg["optimizer"]["lr"] = 0.5, 0.01
    write_yaml(path, cfg)
    before = (run_copy / "last.pt").read_bytes()
    user_error(tool("train.py", "--resume", str(run_copy)), f"{path}: differs from the config",
               "model.dropout (0.2 -> 0.5)", "optimizer.lr (0.001 -> 0.01)", "undo the edit",
               f"--opts model.init_from={run_copy}")
    assert (run_copy / "last.pt").read_bytes() == before


def test_resume_after_changing_kfold_folds_is_refused(run_copy):
    path = run_copy / "config.yaml"
    write_yaml(path, {**yaml.safe_load(path.read_text()), "kfold": {"folds": 3, "ensemble": "vote"}})
    splits = (run_copy / "splits.json").read_text()
    user_error(tool("train.py", "--resume", str(run_copy)), "kfold.folds (0 -> 3)")
    assert (run_copy / "splits.json").read_text() == splits and not (run_copy / "fold0").exists()


def test_resume_refuses_a_split_that_differs_from_splits_json(run_copy):
    path = run_copy / "splits.json"
    splits = json.loads(path.read_text())
    splits["folds"][0]["train"].append(splits["test"].pop())    # as if the data had changed underneath
    path.write_text(json.dumps(splits))
    result = tool("train.py", "--resume", str(run_copy))
    user_error(result, f"{path}: the split recomputed from the data differs", alone=False)
    assert json.loads(path.read_text()) == splits                # not rewritten


def test_resume_after_kill_9_ends_bit_identical(killed, finished, tmp_path):
    run = Path(shutil.copytree(killed, tmp_path / "run"))
    (run / "last.pt.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")     # killed during a checkpoint write
    (run / "best.pt.tmp").write_bytes(b"")
    # env.json is updated after every epoch: the killed process's finished epoch counts, its end never came
    env = json.loads((run / "env.json").read_text())
    epoch_1 = torch.load(run / "last.pt", weights_only=True)["history"][0]["time_s"]
    assert env["train_wall_s"] >= epoch_1 > 0 and "finished" not in env
    result = tool("train.py", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    assert_same_weights(run, finished)
    resumed = json.loads((run / "env.json").read_text())
    assert resumed["train_wall_s"] > env["train_wall_s"] and "finished" in resumed
    assert not list(run.glob("*.tmp"))
    splits = json.loads((run / "splits.json").read_text())
    assert not set(splits["test"]) & (set(splits["folds"][0]["train"]) | set(splits["folds"][0]["val"]))


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(killed, tmp_path):
    run = Path(shutil.copytree(killed, tmp_path / "run"))
    before = {p.name: p.read_bytes() for p in run.glob("*.pt")}
    result = tool("train.py", "--resume", str(run), preexec_fn=file_size_limit(len(before["last.pt"]) // 2))
    user_error(result, "cannot write the checkpoint (File too large)", "is unchanged",
               f"continue with --resume {run}", alone=False)
    assert not list(run.glob("*.tmp"))
    assert {p.name: p.read_bytes() for p in run.glob("*.pt")} == before
    assert torch.load(run / "last.pt", weights_only=True)["next_epoch"] >= 1


def test_ctrl_c_says_how_to_resume_and_resume_finishes(finished, tmp_path):
    run = tmp_path / "run"
    proc = interrupt_in_second_epoch(run, tmp_path / "stderr.txt", signal.SIGINT)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == f"interrupted; continue with --resume {run}"
    result = tool("train.py", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    assert_same_weights(run, finished)


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(tmp_path):
    run, log = tmp_path / "run", tmp_path / "stderr.txt"
    proc = start_training(run, log)
    wait_until(lambda: (run / "config.yaml").is_file(), proc, log)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    assert proc.returncode == 130, log.read_text()
    assert log.read_text().strip().splitlines()[-1] == "interrupted; nothing was saved; start again"
    assert not run.exists()


# ---------------------------------------------------------------- evaluate

@pytest.mark.parametrize("change, key", [
    ({"preprocess": {"fs": 50}}, "preprocess.fs (None -> 50.0)"),
    ({"input": {"window_s": 2}}, "input.window_s (10.0 -> 2.0)"),
    ({"preprocess": {"normalize": "per_record"}}, "preprocess.normalize ('per_lead' -> 'per_record')"),
], ids=["fs", "window", "normalize"])
def test_evaluate_config_that_changes_the_input_is_refused(finished, tmp_path, change, key):
    config = write_yaml(tmp_path / "other.yaml", {"_base_": str(finished / "config.yaml"), **change})
    report = finished / "eval" / "test" / "metrics.json"
    stamp = report.stat().st_mtime_ns
    user_error(tool("evaluate.py", "--ckpt", str(finished), "--config", str(config)),
               f"--config {config}: changes the input the model saw in training", key, "only where the data lives")
    assert report.stat().st_mtime_ns == stamp


def test_evaluate_on_other_data_without_the_models_leads(finished, tmp_path):
    """Other data settings make an external evaluation, which needs the model's leads by name."""
    config = write_yaml(tmp_path / "other.yaml", {"_base_": str(finished / "config.yaml"),
                                                  "data": {"leads": ["I", "II", "V1"]}})
    user_error(tool("evaluate.py", "--ckpt", str(finished), "--config", str(config)),
               f"{config}: the data has no lead III", "the model needs I, II, III")


def test_evaluate_out_that_is_a_file(finished, tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    user_error(tool("evaluate.py", "--ckpt", str(finished), "--out", str(target)),
               f"--out: cannot write the report to {target}", "is a file")
    assert target.read_text() == "keep me"


def test_evaluate_out_in_a_read_only_folder(finished, read_only_dir):
    drop = without_dac_override()
    result = tool("evaluate.py", "--ckpt", str(finished), "--out", str(read_only_dir / "report"), preexec_fn=drop)
    user_error(result, "is not writable", "choose another --out directory")
    assert not any(read_only_dir.iterdir())


def test_checkpoint_config_cannot_choose_where_reports_go(finished, tmp_path):
    state = torch.load(finished / "best.pt", weights_only=True)
    state["config"]["eval"]["split"] = "../../escaped"
    state["split"]["../../escaped"] = state["split"]["test"]
    (tmp_path / "evil").mkdir()
    torch.save(state, tmp_path / "evil" / "best.pt")
    result = tool("evaluate.py", "--ckpt", str(tmp_path / "evil" / "best.pt"))
    user_error(result, "best.pt: the config stored in this checkpoint is not valid", "eval.split")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil"]


def test_corrupt_checkpoint(finished, tmp_path):
    broken = tmp_path / "best.pt"
    broken.write_bytes((finished / "best.pt").read_bytes()[:5000])      # a truncated copy
    user_error(tool("evaluate.py", "--ckpt", str(broken)), f"{broken}: not a readable ecgnet checkpoint")


def test_foreign_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(3)}, "epoch": 3}, tmp_path / "model.pt")
    user_error(tool("evaluate.py", "--ckpt", str(tmp_path / "model.pt")), "not an ecgnet checkpoint of format 1")


class _Payload:
    """Unpickling this object would create a file: a stand-in for code in a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickle_payload_in_a_checkpoint_is_not_run(tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save({"format": 1, "model": _Payload(marker)}, tmp_path / "best.pt")
    user_error(tool("evaluate.py", "--ckpt", str(tmp_path / "best.pt")), "not a readable ecgnet checkpoint",
               "Weights only load failed")
    assert not marker.exists()


# ---------------------------------------------------------------- paths stored in a run

def test_relative_data_root_works_from_any_directory(tmp_path):
    """Relative path settings are stored absolute (against where training ran), so evaluate finds the
    data from another directory; evaluate --config may move the data."""
    data = tmp_path / "ptbdb"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name, label, n in (("ptbdb_normal.csv", 0, 60), ("ptbdb_abnormal.csv", 1, 60)):
        beats = rng.random((n, 187)) * (0.5 + label)
        np.savetxt(data / name, np.hstack([beats, np.full((n, 1), label)]), delimiter=",", fmt="%.5f")
    run, cache = tmp_path / "run", os.path.relpath(tmp_path / "cache", REPO)
    result = tool("train.py", "--config", "cfgs/ptbdb/cnn1d_scratch.yaml", "--work-dir", str(run), "--opts",
                  f"data.root={os.path.relpath(data, REPO)}", f"preprocess.cache_dir={cache}",
                  "model.widths=[8, 16]", "model.hidden=8", "train.epochs=1", "schedule.warmup_epochs=0",
                  "schedule.cooldown_epochs=1", "train.batch_size=32", "train.tensorboard=false",
                  "eval.plots=false", "eval.bootstrap=0")
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = tool("evaluate.py", "--ckpt", str(run), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (run / "eval" / "test" / "metrics.json").is_file()
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["data"]["root"] == str(data) and stored["preprocess"]["cache_dir"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir()

    moved = Path(shutil.move(data, tmp_path / "moved"))
    config = write_yaml(tmp_path / "moved.yaml", {**stored, "data": {**stored["data"], "root": str(moved)}})
    result = tool("evaluate.py", "--ckpt", str(run), "--config", str(config), "--out", "report", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "report" / "metrics.json").is_file()
