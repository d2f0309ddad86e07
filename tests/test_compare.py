"""compare_runs: tables from fixture run directories (config.yaml, env.json, eval/test/*.json)."""
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecgnet.compare import (CARRIED, compare, digits_against, find_reference, fmt_cell, fmt_command, fmt_duration,
                            load_references)
from ecgnet.registry import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]

BASE = {"name": "demo", "seed": 0, "work_dir": "runs",
        "data": {"type": "synthetic", "num_records": 1200, "fs": 100},
        "model": {"type": "resnet1d", "dropout": 0.1, "widths": [16, 32]},
        "loss": {"type": "bce"}, "train": {"epochs": 10, "device": "auto"},
        "kfold": {"folds": 0, "ensemble": "vote"}, "eval": {"split": "test"}}


def metrics(auroc, f1, ci=True, **extra):
    m = {"n": 244, "macro_auroc": auroc, "macro_f1": f1, "hamming_loss": round(1 - f1, 3), "per_class": [],
         "confusion_matrix": [[1, 0], [0, 1]], "auroc_undefined": [], **extra}
    if ci:
        m["ci"] = {"macro_auroc": [auroc - 0.02, auroc + 0.015], "macro_f1": [f1 - 0.03, f1 + 0.03]}
        m["bootstrap"] = {"resamples": 1000, "unit": "patient"}
    return m


def make_run(root: Path, name: str, changes: dict, models: dict | None, wall=61.2, info=True) -> Path:
    cfg = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        section = cfg
        for key in path:
            section = section.setdefault(key, {})
        section[last] = value
    run = root / name
    run.mkdir(parents=True)
    cfg["name"], cfg["work_dir"] = name, str(root)          # noisy keys: must never become columns
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {"command": ["tools/train.py", "--config", "cfgs/demo.yaml", "--work-dir", f"runs/{name}"],
           "device": "cpu", "started": "2026-12-01T10:00:00", "git_commit": "abc", "ecgnet": "0.1.0"}
    if wall is not None:
        env["train_wall_s"] = wall
    (run / "env.json").write_text(json.dumps(env))
    if models is not None:
        (run / "eval" / "test").mkdir(parents=True)
        (run / "eval" / "test" / "metrics.json").write_text(json.dumps(models))
        if info:
            main = "ensemble_vote" if "ensemble_vote" in models else "model"
            (run / "eval" / "test" / "eval_info.json").write_text(json.dumps(
                {"command": ["tools/evaluate.py", "--ckpt", f"runs/{name}"], "wall_s": 7.1, "split": "test",
                 "device": "cpu", "main": main}))
    return run


@pytest.fixture
def runs(tmp_path):
    single = make_run(tmp_path, "single", {}, {"model": metrics(0.95, 0.80)})
    folds = {f"fold{k}": metrics(a, f, ci=False) for k, (a, f) in enumerate([(0.90, 0.70), (0.92, 0.74), (0.94, 0.75)])}
    kfold = make_run(tmp_path, "kfold_focal", {"model.dropout": 0.3, "loss": {"type": "focal", "gamma": 2.0},
                                               "kfold.folds": 3},
                     {**folds, "ensemble_vote": metrics(0.96, 0.78), "ensemble_mean": metrics(0.955, 0.77)})
    ptbxl = make_run(tmp_path, "ptbxl_super", {"data": {"type": "ptbxl", "task": "superdiagnostic", "fs": 100}},
                     {"model": metrics(0.876, 0.674)}, wall=None, info=False)   # older run: no wall, no eval_info
    cinc = make_run(tmp_path, "cinc_ce", {"data": {"type": "cinc17"}, "loss.type": "ce"},
                    {"model": metrics(0.94, 0.70, cinc17_f1=0.763, f1_noisy=0.714)})
    return {"single": single, "kfold": kfold, "ptbxl": ptbxl, "cinc": cinc}


def test_differing_keys_become_columns(runs, capsys):
    (table,) = compare([str(runs["single"]), str(runs["kfold"])], references=None)
    assert table.keys == ["model.dropout", "loss.type", "kfold.folds", "loss.gamma"]   # config order, absent counts
    out = capsys.readouterr().out
    header = out.splitlines()[1].split()
    for key in ("model.dropout", "loss.type", "loss.gamma", "kfold.folds"):
        assert key in header
    for same in ("name", "work_dir", "train.epochs", "data.type", "model.widths", "seed"):
        assert same not in header


def test_rows_sorted_by_first_metric(runs):
    (table,) = compare([str(runs["single"]), str(runs["kfold"])], references=None)
    assert [(r.run.path.name, r.label) for r in table.rows] == [
        ("kfold_focal", "ensemble_vote"), ("single", "model"), ("kfold_focal", "fold mean (3)")]
    # macro F1 puts the single model first; a loss sorts ascending
    (table,) = compare([str(runs["kfold"]), str(runs["single"])], ["test/macro_f1"], references=None)
    assert [r.label for r in table.rows] == ["model", "ensemble_vote", "fold mean (3)"]
    (table,) = compare([str(runs["kfold"]), str(runs["single"])], ["test/hamming_loss"], references=None)
    assert [r.label for r in table.rows] == ["model", "ensemble_vote", "fold mean (3)"]
    assert [r.cells["test/hamming_loss"][0] for r in table.rows] == pytest.approx([0.2, 0.22, 0.27])


def test_kfold_gives_ensemble_and_fold_mean_rows(runs, capsys):
    (table,) = compare([str(runs["kfold"])], references=None)
    ensemble, mean = table.rows
    assert ensemble.label == "ensemble_vote" and mean.label == "fold mean (3)"
    value, ci, sd = mean.cells["test/macro_auroc"]
    assert ci is None
    assert value == pytest.approx(0.92) and sd == pytest.approx(statistics.stdev([0.90, 0.92, 0.94]))
    assert mean.cells["test/macro_f1"][0] == pytest.approx((0.70 + 0.74 + 0.75) / 3)
    out = capsys.readouterr().out
    assert "0.960 [0.940, 0.975]" in out                      # the ensemble's bootstrap CI
    assert "0.920 ±0.020" in out                               # the folds' spread, not a CI
    assert "±sd" in out and "1000 resamples by patient" in out   # the legend says which is which


def test_cells_and_durations():
    assert fmt_cell(0.9123, (0.9011, 0.9234), None) == "0.912 [0.901, 0.923]"
    assert fmt_cell(0.9123, None, None) == "0.912"
    assert fmt_cell(0.9123, None, 0.0104) == "0.912 ±0.010"
    assert fmt_cell(None, None, None) == "-"
    assert fmt_cell(0.95976, (0.9433, 0.9749), None, digits=4) == "0.9598 [0.943, 0.975]"
    # a value that rounds onto its goal shows the digit that decides met or not
    assert [digits_against(v, 0.96) for v in (0.9598, 0.95998, 0.9612, 0.96, None)] == [4, 5, 3, 3, 3]
    assert digits_against(0.94998, 0.95) == 5 and digits_against(0.9598, "within_ci") == 3
    assert [fmt_duration(s) for s in (7.1, 61.2, 3725, None)] == ["7 s", "1 min 1 s", "1 h 2 min", "-"]


def test_commands_read_as_run_from_the_repository_root():
    # the run's own relative argv is kept; a tools/ script started by absolute path (fivefold.sh) loses the
    # checkout's path; console scripts show their name
    assert fmt_command(["tools/train.py", "--config", "a b.yaml"]) == "python tools/train.py --config 'a b.yaml'"
    assert fmt_command(["/work/snap/tools/evaluate.py", "--ckpt", "r"]) == "python tools/evaluate.py --ckpt r"
    assert (fmt_command(["/work/snap/tools/train.py", "--config", "/work/snap/cfgs/x.yaml", "--work-dir", "/work/r"])
            == "python tools/train.py --config cfgs/x.yaml --work-dir /work/r")
    assert fmt_command(["/work/scripts/mine.py"]) == "python /work/scripts/mine.py"
    assert fmt_command(["/usr/bin/ecgnet-train", "--folds", "5"]) == "ecgnet-train --folds 5"
    assert fmt_command(None) == "-"


def test_missing_ci_shows_value_only(tmp_path, capsys):
    m = metrics(0.95, 0.80)
    del m["ci"]["macro_f1"]
    compare([str(make_run(tmp_path, "r", {}, {"model": m}))], references=None)
    row = capsys.readouterr().out.splitlines()[3]
    assert "0.950 [0.930, 0.965]" in row and "0.800  " in row and "1 min 1 s + 7 s" in row


def test_grouped_by_dataset(runs, capsys):
    tables = compare([str(p) for p in runs.values()], references=None)
    assert [t.title for t in tables] == ["cinc17", "ptbxl / superdiagnostic", "synthetic"]
    cinc, ptbxl, synthetic = tables
    assert cinc.metrics == ["test/macro_auroc", "test/macro_f1", "test/cinc17_f1", "test/f1_noisy"]   # its own scores
    assert ptbxl.metrics == synthetic.metrics == ["test/macro_auroc", "test/macro_f1"]
    assert cinc.keys == ptbxl.keys == []                                    # one run each: nothing differs
    assert "data.type" not in synthetic.keys and "model.dropout" in synthetic.keys
    out = capsys.readouterr().out
    assert "== ptbxl / superdiagnostic (1 run) ==" in out and "== synthetic (2 runs) ==" in out
    ptbxl_row = next(line for line in out.splitlines() if line.startswith("ptbxl_super"))
    assert ptbxl_row.rstrip().endswith("- + -  cpu")                      # no train_wall_s, no eval_info


def test_references_match_dataset_task_and_keys():
    refs = load_references(REPO / "experiments" / "references.yaml")
    cfg = {"data.type": "ptbxl", "data.task": "rhythm"}
    assert find_reference(refs, cfg, "test/macro_auroc")["value"] == 0.957
    assert find_reference(refs, {**cfg, "data.task": "identification"}, "test/accuracy")["value"] == 0.752
    assert find_reference(refs, {"data.type": "cinc17", "loss.type": "weighted_ce"}, "test/cinc17_f1")["value"] == 0.846
    assert find_reference(refs, {"data.type": "cinc17", "loss.type": "bce"}, "test/cinc17_f1") is None
    ped = {"data.type": "hdf5", "data.root": "data/pediatric/pediatric.h5", "loss.type": "focal"}
    assert find_reference(refs, ped, "test/macro_f1")["value"] == 0.8599
    assert find_reference(refs, {**ped, "data.root": "/tmp/smoke.h5"}, "test/macro_f1") is None
    intra = {"data.type": "mitdb", "data.preset": "kaggle", "data.split_mode": "intra"}
    assert find_reference(refs, intra, "test/accuracy")["value"] == 0.985
    assert find_reference(refs, {**intra, "data.split_mode": "inter"}, "test/accuracy") is None
    assert all(r["source"] for r in refs)


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "tools" / "compare_runs.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=60)


def test_cli_markdown_with_commands_and_references(runs, tmp_path):
    listing = tmp_path / "runs.txt"
    listing.write_text(f"# the runs of the results table\n{runs['single']}\n\n{runs['kfold']}  # k-fold\n")
    md = tmp_path / "out" / "RESULTS.md"
    done = cli(runs["ptbxl"], runs["cinc"], "--runs-file", listing, "--md", md)
    assert done.returncode == 0, done.stderr
    assert "kfold_focal" in done.stdout and "fold mean (3)" in done.stdout
    text = md.read_text()
    assert f"Generated by `python tools/compare_runs.py {runs['ptbxl']}" in text    # started by absolute path
    assert "| run | model | test/macro_auroc | test/macro_f1 | reference |" in text
    row = next(line for line in text.splitlines() if line.startswith("| ptbxl_super |"))
    assert "| 0.930 |" in row                                                  # fold-10 superdiagnostic reference
    assert "Strodthoff et al. 2021" in text
    cinc_row = next(line for line in text.splitlines() if line.startswith("| cinc_ce |"))
    assert "| cinc17_f1 0.839 |" in cinc_row           # the first metric has none: the dataset score's, named
    assert next(line for line in text.splitlines() if line.startswith("| single |")).count("| - |") >= 1
    assert (f"- `kfold_focal`: `python tools/train.py --config cfgs/demo.yaml --work-dir runs/kfold_focal`, "
            f"then `python tools/evaluate.py --ckpt runs/kfold_focal`") in text


def test_not_evaluated_run_is_skipped_or_an_error(runs, tmp_path, caplog):
    fresh = make_run(tmp_path, "fresh", {}, None)
    (table,) = compare([str(runs["single"]), str(fresh)], references=None)
    assert [r.run.path.name for r in table.rows] == ["single"]
    assert f"python tools/evaluate.py --ckpt {fresh}" in caplog.text
    with pytest.raises(DataError, match=r"not evaluated on the test split .* run python tools/evaluate.py --ckpt"):
        compare([str(fresh)])
    done = cli(fresh)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: {fresh}: not evaluated on the test split (no eval/test/metrics.json); "
                                   f"run python tools/evaluate.py --ckpt {fresh}")


def test_not_a_run_directory_exits_2_with_one_line(runs, tmp_path):
    done = cli(runs["single"], tmp_path / "nothing_here")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nothing_here'}: not a run directory (no config.yaml); "
        "pass directories written by tools/train.py"]


def test_unknown_metric_lists_available_keys(runs):
    with pytest.raises(ConfigError, match=r"test/macro_aurco: in no run's metrics \(did you mean test/macro_auroc\?\)"
                                          r"; available: .*test/cinc17_f1.*test/macro_auroc"):
        compare([str(runs["single"]), str(runs["cinc"])], ["test/macro_aurco"])
    with pytest.raises(ConfigError, match="expected SPLIT/KEY"):
        compare([str(runs["single"])], ["macro_auroc"])


def test_two_trained_runs_differing_by_one_opt(tmp_path):
    """End to end: train and evaluate two small runs that differ in one --opts value; the table
    built from their directories has that key as its only config column."""
    small = ["data.num_records=160", "data.duration_s=6", "data.fs=50", "model.base_width=8", "model.num_blocks=4",
             "train.epochs=2", "schedule.warmup_epochs=0", "schedule.cooldown_epochs=1", "train.tensorboard=false",
             "eval.plots=false", "eval.bootstrap=50"]
    def tool(name, *args):
        return subprocess.run([sys.executable, str(REPO / "tools" / name), *args], capture_output=True, text=True,
                              cwd=REPO, timeout=300)

    for name, dropout in (("a", 0.1), ("b", 0.3)):
        out = tool("train.py", "--config", "cfgs/demo.yaml", "--work-dir", str(tmp_path / name),
                   "--opts", *small, f"model.dropout={dropout}")
        assert out.returncode == 0, out.stderr
        out = tool("evaluate.py", "--ckpt", str(tmp_path / name))
        assert out.returncode == 0, out.stderr
    out = cli(tmp_path / "a", tmp_path / "b", "--md", tmp_path / "R.md")
    assert out.returncode == 0, out.stderr
    header = next(line for line in out.stdout.splitlines() if line.startswith("run "))
    assert "model.dropout" in header and "loss.type" not in header and "train.epochs" not in header
    rows = [line for line in out.stdout.splitlines() if line.startswith(("a ", "b "))]
    assert len(rows) == 2 and all(re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", r) for r in rows)
    md = (tmp_path / "R.md").read_text()
    assert "model.dropout=0.3" in md and "tools/evaluate.py" in md


def test_targets_are_marked_met_or_not_from_each_runs_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = make_run(tmp_path, "good", {}, {"model": metrics(0.94, 0.80)})
    (good / "eval" / "test_thresholds-fixed").mkdir()
    (good / "eval" / "test_thresholds-fixed" / "metrics.json").write_text(json.dumps({"model": metrics(0.94, 0.70)}))
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump([
        {"target": "AUROC above", "metric": "test/macro_auroc", "reference": 0.93, "goal": 0.935, "run": "good"},
        {"target": "F1 above", "metric": "test/macro_f1", "reference": 0.9, "goal": 0.85, "run": "good",
         "note": "too few epochs"},
        {"target": "reproduced", "metric": "test/macro_f1", "reference": 0.82, "goal": "within_ci", "run": "good"},
        {"target": "fixed thresholds", "metric": "test/macro_f1", "reference": None, "goal": 0.75, "run": "good",
         "report": "test_thresholds-fixed"},
        {"target": "later", "metric": "test/macro_f1", "reference": 0.9, "goal": 0.9, "run": None},
        {"target": "ablation", "metric": "test/macro_f1", "reference": None, "goal": None, "run": "good"},
        {"target": "just short", "metric": "test/macro_auroc", "reference": 0.93, "goal": 0.9403, "run": "good"},
    ]))
    md = tmp_path / "R.md"
    compare([str(good)], md=str(md), targets=str(targets))
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "target" not in line][:7]
    assert "0.940 [0.920, 0.955]" in rows[0] and rows[0].endswith("| met |")
    assert rows[1].endswith("| not met [1] |") and "1. too few epochs" in text
    assert rows[2].endswith("| met |")                        # 0.82 lies in [0.77, 0.83]
    assert "eval/test_thresholds-fixed" in rows[3] and "0.700" in rows[3] and rows[3].endswith("| not met |")
    assert rows[4].endswith("| not run |")
    assert rows[5].endswith("| 0.800 [0.770, 0.830] | - | - | reported |")
    assert "| 0.9400 [0.920, 0.955] | 0.930 | >= 0.9403 | not met |" in rows[6]     # not "0.940 ... >= 0.940"
    assert text.index("## Targets") < text.index("## synthetic")
    assert "not met [1]" in capsys.readouterr().out
    targets.write_text(yaml.safe_dump([{"target": "x", "metric": "test/f1", "reference": 1, "goal": "high",
                                        "run": None}]))
    with pytest.raises(ConfigError, match="goal must be a number, within_ci or null"):
        compare([str(good)], targets=str(targets))


def test_records_rebuild_the_results_without_the_run_directories(tmp_path, monkeypatch):
    # what compare reads is copied under --records; a machine without the runs rebuilds the same file from it
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "runs", "single", {}, {"model": metrics(0.91, 0.70)})
    kfold = make_run(tmp_path / "runs", "kfold", {"kfold.folds": 3},
                     {"ensemble_vote": metrics(0.93, 0.75), "fold0": metrics(0.92, 0.71)})
    (kfold / "fold0").mkdir()
    (kfold / "fold0" / "best.pt").write_bytes(b"weights")                  # never copied
    (kfold / "eval" / "val").mkdir()
    (kfold / "eval" / "val" / "metrics.json").write_text(json.dumps({"ensemble_vote": metrics(0.94, 0.8)}))
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump([{"target": "ensemble", "metric": "test/macro_auroc", "reference": 0.9,
                                        "goal": 0.92, "run": "runs/kfold"}]))
    args = dict(md="R.md", targets=str(targets), records="records", references=None)
    compare(["runs/single", "runs/kfold"], **args)
    first = Path("R.md").read_text()
    assert sorted(str(p.relative_to("records")) for p in Path("records").rglob("*") if p.is_file()) == [
        "runs/kfold/config.yaml", "runs/kfold/env.json", "runs/kfold/eval/test/eval_info.json",
        "runs/kfold/eval/test/metrics.json", "runs/kfold/eval/val/metrics.json",
        "runs/single/config.yaml", "runs/single/env.json", "runs/single/eval/test/eval_info.json",
        "runs/single/eval/test/metrics.json"]
    assert "| ensemble | kfold (ensemble_vote) | 0.930 [0.910, 0.945] |" in first and CARRIED not in first
    shutil.rmtree("runs")
    compare(["runs/single", "runs/kfold"], **args)
    assert Path("R.md").read_text() == first


def test_the_committed_records_are_not_ignored_by_git():
    # .gitignore leaves out runs/; the records of the documented command live under experiments/records/runs/
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    record = "experiments/records/runs/full/some_run_5fold/eval/test/metrics.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", record], cwd=REPO)
    assert ignored.returncode == 1, f"{record} is ignored by git: see .gitignore"
    assert subprocess.run(["git", "check-ignore", "-q", "--no-index", "runs/full/some_run_5fold/fold0/best.pt"],
                          cwd=REPO).returncode == 0


def test_rows_of_runs_gone_without_a_record_are_carried_over_marked(tmp_path, monkeypatch, caplog):
    # runs made before records existed: their rows in the file being rewritten are kept, marked, and a fixed point
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "runs", "old", {}, {"model": metrics(0.91, 0.70)})
    make_run(tmp_path / "runs", "old_cinc", {"data.type": "cinc17"}, {"model": metrics(0.88, 0.60)})
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump([
        {"target": "old goal", "metric": "test/macro_auroc", "reference": 0.9, "goal": 0.95, "run": "runs/old",
         "note": "why not"},
        {"target": "new goal", "metric": "test/macro_auroc", "reference": 0.9, "goal": 0.9, "run": "runs/new"}]))
    compare(["runs/old", "runs/old_cinc"], md="R.md", targets=str(targets), references=None)   # no records yet
    before = Path("R.md").read_text()
    shutil.rmtree("runs")
    make_run(tmp_path / "runs", "new", {"model.dropout": 0.3}, {"model": metrics(0.93, 0.72)})
    compare(["runs/old", "runs/old_cinc", "runs/new"], md="R.md", targets=str(targets), records="records",
            references=None)
    text = Path("R.md").read_text()
    assert "| old goal | old † | 0.910 [0.890, 0.925] | 0.900 | >= 0.950 | not met [1] |" in text
    assert "| new goal | new | 0.930 [0.910, 0.945] | 0.900 | >= 0.900 | met |" in text
    assert "carried over from" in caplog.text and "old old_cinc" in caplog.text
    synthetic = text[text.index("## synthetic"):]
    live, carried = synthetic.split("† Carried over")
    assert "| new |" in live and "| old |" not in live
    old_row = next(line for line in before.splitlines() if line.startswith("| old |"))
    assert old_row in carried and "- `old`: `python tools/train.py" in carried
    assert "## cinc17" in text and next(line for line in before.splitlines() if line.startswith("| old_cinc |")) in text
    compare(["runs/old", "runs/old_cinc", "runs/new"], md="R.md", targets=str(targets), records="records",
            references=None)
    assert Path("R.md").read_text() == text                               # regenerating changes nothing
