"""End to end: train, resume, k-fold, evaluate from a checkpoint alone, CLI errors."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ecgnet.config import load_config
from ecgnet.data.dataset import TrainWindows
from ecgnet.engine.checkpoint import load_checkpoint, save_checkpoint
from ecgnet.engine.evaluate import evaluate
from ecgnet.engine.run import resume, train
from ecgnet.engine.trainer import Trainer
from ecgnet.registry import DataError

REPO = Path(__file__).resolve().parents[1]

SMALL = """
data: {type: synthetic, num_records: 320, fs: 50, duration_s: 6, leads: [I, II, V1], records_per_patient: 2}
preprocess: {bandpass_hz: [0.5, 20]}
model: {type: cnn1d, widths: [16, 32, 64, 64], kernel_size: 7, hidden: 32, dropout: 0.1}
loss: {type: bce}
optimizer: {type: radam, lr: 0.003}
schedule: {type: warmup_cooldown, warmup_epochs: 1, cooldown_epochs: 2}
train: {epochs: 10, batch_size: 32, tensorboard: false, early_stop_patience: null}
"""


@pytest.fixture(scope="module")
def small_cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    path.write_text(SMALL)
    return path


@pytest.fixture(scope="module")
def kfold_run(small_cfg, tmp_path_factory):
    return train(load_config(small_cfg, ["train.epochs=8"]), work_dir=str(tmp_path_factory.mktemp("runs") / "kfold"), folds=3)


def test_training_beats_chance_on_validation(small_cfg, tmp_path):
    run = train(load_config(small_cfg, ["train.tensorboard=true"]), work_dir=str(tmp_path / "one"))
    best = load_checkpoint(run / "best.pt")
    assert best["val_metrics"]["val/macro_auroc"] > 0.8           # chance is 0.5
    assert best["finished"] and len(best["thresholds"]) == 6
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 10 and history[0].startswith("epoch,step,lr,train/loss,val/loss")
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "config.yaml").is_file() and json.loads((run / "env.json").read_text())["seed"] == 0
    splits = json.loads((run / "splits.json").read_text())
    assert not set(splits["test"]) & set(splits["folds"][0]["train"])


def _weights(path):
    return load_checkpoint(path)["model"]


def test_interrupt_and_resume_matches_uninterrupted_run(small_cfg, tmp_path, monkeypatch):
    # deterministic: compared bit for bit, which on CUDA needs deterministic kernels (on the CPU a no-op)
    cfg = load_config(small_cfg, ["train.epochs=4", "data.num_records=160", "model.dropout=0.3", "train.deterministic=true",
                                  "augment=[{type: gaussian_noise, p: 0.5}, {type: time_warp, p: 0.5}]",
                                  "sampler.type=oversample"])
    straight = train(cfg, work_dir=str(tmp_path / "straight"))

    original = TrainWindows.__getitem__
    fetched = {"n": 0}

    def crash_mid_epoch(self, position):
        if self.epoch == 2:
            fetched["n"] += 1
            if fetched["n"] > 100:           # a few optimizer steps into the third epoch
                raise KeyboardInterrupt
        return original(self, position)

    monkeypatch.setattr(TrainWindows, "__getitem__", crash_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, work_dir=str(tmp_path / "resumed"))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["next_epoch"] == 2
    monkeypatch.setattr(TrainWindows, "__getitem__", original)
    torch.manual_seed(12345)                  # the resumed process starts from some other RNG state
    resume(tmp_path / "resumed")

    for name in ("last.pt", "best.pt"):
        a, b = _weights(straight / name), _weights(tmp_path / "resumed" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert load_checkpoint(straight / "best.pt")["thresholds"] == load_checkpoint(tmp_path / "resumed" / "best.pt")["thresholds"]


def test_kfold_trains_k_models_against_one_test_split(kfold_run):
    states = [load_checkpoint(kfold_run / f"fold{k}" / "best.pt") for k in range(3)]
    assert len({tuple(s["split"]["test"]) for s in states}) == 1
    vals = [set(s["split"]["val"]) for s in states]
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2])
    for s in states:
        assert not set(s["split"]["test"]) & (set(s["split"]["train"]) | set(s["split"]["val"]))
        assert s["finished"] and s["thresholds"] is not None


def test_evaluate_from_checkpoint_alone(kfold_run, tmp_path, capsys):
    results = evaluate(kfold_run, "test", tmp_path / "report")
    assert set(results) == {"fold0", "fold1", "fold2", "ensemble_vote", "ensemble_mean"}
    on_disk = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert on_disk["ensemble_vote"]["macro_f1"] == pytest.approx(results["ensemble_vote"]["macro_f1"])
    assert results["ensemble_vote"]["macro_auroc"] > 0.8
    for name in results:
        for f in ("metrics.json", "per_class.csv", "roc.png", "confusion.png"):
            assert (tmp_path / "report" / name / f).stat().st_size > 0, (name, f)
    out = capsys.readouterr().out
    assert "ensemble_vote" in out and "per class (ensemble_vote)" in out
    # one fold's checkpoint on its own
    single = evaluate(kfold_run / "fold1" / "best.pt", "test", tmp_path / "fold1")
    assert single["model"]["macro_f1"] == pytest.approx(results["fold1"]["macro_f1"])


def test_a_kfold_run_with_an_untrained_fold_is_not_scored(kfold_run, tmp_path, capsys):
    """A stopped 5-fold run once got its test split read as a 4-model ensemble; evaluate refuses until
    every fold is trained, or the user names the folds to score."""
    import shutil
    from ecgnet.cli import evaluate_main
    run = tmp_path / "stopped"
    shutil.copytree(kfold_run, run)
    shutil.rmtree(run / "fold2")                   # training never reached fold 2
    assert evaluate_main(["--ckpt", str(run)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fold 2 of its 3 has no best.pt" in err and f"--resume {run}" in err
    assert not (run / "eval").exists()           # nothing was scored
    (run / "splits.json").unlink()                 # the count comes from config.yaml, not the split file
    with pytest.raises(DataError, match="fold 2 of its 3"):
        evaluate(run, "test", tmp_path / "report")
    named = evaluate([run / "fold0", run / "fold1"], "test", tmp_path / "two")
    assert set(named) == {"fold0", "fold1", "ensemble_vote", "ensemble_mean"}


def test_kfold_validation_is_scored_out_of_fold(kfold_run, tmp_path):
    """--split val of a k-fold run: each fold's model on its own validation part, and those parts pooled
    (every train+val record scored once, by the model that did not train on it)."""
    results = evaluate(kfold_run, "val", tmp_path / "val")
    assert set(results) == {"fold0", "fold1", "fold2", "out_of_fold"}
    assert results["out_of_fold"]["n"] == sum(results[f"fold{k}"]["n"] for k in range(3))
    pooled = sorted(i for k in range(3) for i in load_checkpoint(kfold_run / f"fold{k}" / "best.pt")["split"]["val"])
    assert results["out_of_fold"]["n"] == len(pooled) == len(set(pooled))
    assert results["out_of_fold"]["macro_auroc"] > 0.6 and "macro_auroc" in results["out_of_fold"]["ci"]
    info = json.loads((tmp_path / "val" / "eval_info.json").read_text())
    assert info["main"] == "out_of_fold" and (tmp_path / "val" / "out_of_fold" / "per_class.csv").is_file()


def test_runs_of_different_recipes_scored_as_one_ensemble(kfold_run, small_cfg, tmp_path):
    """evaluate --ckpt RUN_A RUN_B: e.g. CE + weighted CE + focal runs of one task; each model keeps its
    own thresholds, the ensembles combine them; runs that read the data differently are refused."""
    from ecgnet.registry import ConfigError
    other = train(load_config(small_cfg, ["train.epochs=3", "loss.type=focal", "loss.alpha=null"]),
                  work_dir=str(tmp_path / "focal"))
    results = evaluate([kfold_run / "fold0", other], "test", tmp_path / "ens" / "eval" / "test")
    assert set(results) == {"fold0", "focal", "ensemble_vote", "ensemble_mean"}
    alone = evaluate(other, "test", tmp_path / "alone")
    assert results["focal"]["macro_auroc"] == pytest.approx(alone["model"]["macro_auroc"])
    info = json.loads((tmp_path / "ens" / "eval" / "test" / "eval_info.json").read_text())
    assert info["main"] == "ensemble_vote" and len(info["checkpoints"]) == 2
    with pytest.raises(ConfigError, match="--out: required"):
        evaluate([kfold_run / "fold0", other], "test")
    with pytest.raises(ConfigError, match="given twice"):
        evaluate([other, other], "test", tmp_path / "twice")
    resampled = train(load_config(small_cfg, ["train.epochs=3", "preprocess.bandpass_hz=[1, 20]"]),
                      work_dir=str(tmp_path / "bp"))
    with pytest.raises(ConfigError, match="reads the data differently.*preprocess.bandpass_hz"):
        evaluate([other, resampled], "test", tmp_path / "bad")
    # the Targets table reads an ensemble's report folder (no config.yaml there)
    from ecgnet.compare import score_target
    row = score_target({"target": "t", "metric": "test/macro_auroc", "reference": None, "goal": 0.5,
                        "run": str(tmp_path / "ens")})
    assert row.status == "met" and row.value == pytest.approx(results["ensemble_vote"]["macro_auroc"])


def test_resume_of_finished_run_retrains_nothing(kfold_run):
    before = {p: p.stat().st_mtime_ns for p in kfold_run.glob("fold*/best.pt")}
    resume(kfold_run)
    assert before == {p: p.stat().st_mtime_ns for p in kfold_run.glob("fold*/best.pt")}


def test_folds_trained_by_separate_processes_match_one_run(kfold_run, small_cfg, tmp_path, monkeypatch):
    # --only-folds: one process starts the run with fold 2, a second trains fold 1 with --resume and, while it
    # does, a third trains fold 0
    run = train(load_config(small_cfg, ["train.epochs=8"]), work_dir=str(tmp_path / "parallel"), folds=3,
                only_folds=[2])
    assert (run / "fold2" / "best.pt").is_file() and not (run / "fold0").exists()
    assert list(json.loads((run / "val_summary.json").read_text())) == ["fold2"]
    first_wall = json.loads((run / "env.json").read_text())["train_wall_s"]
    with pytest.raises(DataError, match=r"folds 0, 1 of its 3 have no best.pt yet"):
        evaluate(run, "test", tmp_path / "early")
    # folds the other process is still training: best.pt written, not finished -> refused, naming the run
    state = load_checkpoint(run / "fold2" / "best.pt")
    state["finished"] = False
    for k in (0, 1):
        (run / f"fold{k}").mkdir()
        save_checkpoint(state, run / f"fold{k}" / "best.pt")
    with pytest.raises(DataError, match=rf"fold0/best.pt: training did not finish .* --resume {re.escape(str(run))}, "
                                        "or wait for the process still training it"):
        evaluate(run, "test", tmp_path / "early")
    for k in (0, 1):
        shutil.rmtree(run / f"fold{k}")
    fit = Trainer.fit

    def third_process_meanwhile(self):
        if self.fold == 1:
            monkeypatch.setattr(Trainer, "fit", fit)
            resume(run, only_folds=[0])
            assert list(json.loads((run / "val_summary.json").read_text())) == ["fold0", "fold2"]
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", third_process_meanwhile)
    resume(run, only_folds=[1])
    for k in range(3):
        a, b = _weights(kfold_run / f"fold{k}" / "best.pt"), _weights(run / f"fold{k}" / "best.pt")
        assert all(torch.equal(a[name], b[name]) for name in a), f"fold{k}"
    # the second process passed fold 0 unfinished, yet lists it: the summary is read when it ends
    assert list(json.loads((run / "val_summary.json").read_text())) == ["fold0", "fold1", "fold2"]
    assert json.loads((run / "env.json").read_text())["train_wall_s"] > first_wall   # all processes' time


def run_tool(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["tools/train.py", "--config", "cfgs/nope.yaml"], "cfgs/nope.yaml: config file not found"),
    (["tools/train.py", "--config", "cfgs/demo.yaml", "--opts", "train.epohcs=1"], "did you mean 'epochs'?"),
    (["tools/train.py", "--config", "cfgs/demo.yaml", "--opts", "model.type=resnet"], "did you mean 'resnet1d'?"),
    (["tools/train.py", "--config", "cfgs/demo.yaml", "--opts", "train.batch_size=big"], "train.batch_size: expected int"),
    (["tools/evaluate.py", "--ckpt", "runs/does-not-exist"], "no such file or directory"),
    (["tools/train.py", "--config", "cfgs/demo.yaml", "--folds", "3", "--only-folds", "1", "3"],
     "--only-folds: 3: choose fold numbers 0-2"),
    (["tools/train.py", "--config", "cfgs/demo.yaml", "--only-folds", "0"], "--only-folds: the run trains one model"),
])
def test_cli_user_errors_exit_2_without_traceback(args, message):
    result = run_tool(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_bad_yaml_and_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    result = run_tool("tools/train.py", "--config", str(bad))
    assert result.returncode == 2 and "is not valid YAML" in result.stderr and "Traceback" not in result.stderr
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(b"not a checkpoint")
    result = run_tool("tools/evaluate.py", "--ckpt", str(ckpt))
    assert result.returncode == 2 and "not a readable ecgnet checkpoint" in result.stderr


def test_failed_start_leaves_no_run_directory(small_cfg, tmp_path):
    from ecgnet.registry import ConfigError
    with pytest.raises(ConfigError, match="train.monitor"):
        train(load_config(small_cfg, ["train.monitor=macro_f1"]), work_dir=str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_a_last_training_batch_of_one_sample_is_dropped(small_cfg, tmp_path):
    # PTB-XL form, 5-fold: a fold's training records in batches of 64 left one sample, and resnet1d's
    # BatchNorm on the last block (length 1 after its subsampling) stopped the run
    opts = ["train.epochs=2", "schedule.cooldown_epochs=1", "input.window_s=2", "model.type=resnet1d"]
    first = train(load_config(small_cfg, opts), work_dir=str(tmp_path / "probe"))
    n_train = len(json.loads((first / "splits.json").read_text())["folds"][0]["train"])
    run = train(load_config(small_cfg, opts + [f"train.batch_size={n_train - 1}"]), work_dir=str(tmp_path / "odd"))
    assert (run / "best.pt").is_file()


def test_full_length_training_on_variable_length_records(small_cfg, tmp_path):
    opts = ["data.max_duration_s=14", "input.full_length=true", "input.max_length_s=12", "train.epochs=3",
            "schedule.cooldown_epochs=1"]
    run = train(load_config(small_cfg, opts), work_dir=str(tmp_path / "full"))
    state = load_checkpoint(run / "best.pt")
    assert state["full_length"] and state["window"] == 600           # 12 s at 50 Hz caps the length
    results = evaluate(run, "test", tmp_path / "eval")
    assert results["model"]["macro_auroc"] > 0.5
