"""Using a trained model: temperature scaling, and tools/predict.py on recordings in every format it
reads (fixtures written with wfdb.wrsamp, scipy.io.savemat + a WFDB header, ecgnet's HDF5 writer,
csv and numpy), checked against the evaluation pipeline's own probabilities."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch
import wfdb

from ecgnet.build import build, resolve_config
from ecgnet.calibration import brier_score, expected_calibration_error, fit_temperature
from ecgnet.config import load_config
from ecgnet.data.base import RecordSet
from ecgnet.data.pack import write_hdf5
from ecgnet.data.recordings import Recording, read_inputs
from ecgnet.data.transforms import resample
from ecgnet.engine.checkpoint import load_checkpoint
from ecgnet.engine.evaluate import evaluate
from ecgnet.engine.predictor import Predictor, predict_files
from ecgnet.engine.run import prepare_data, train
from ecgnet.models import MODELS
from ecgnet.registry import DataError
from test_cinc2020 import write_record as write_cinc2020
from test_ptbxl import ROWS, STATEMENT_COLUMNS, STATEMENTS, ecg, record_name
from test_ptbxl import write_record as write_ptbxl

REPO = Path(__file__).resolve().parents[1]
LEADS = ["I", "II", "V1"]
SMALL = """
data: {type: synthetic, num_records: 320, fs: 50, duration_s: 6, leads: [I, II, V1], records_per_patient: 2}
preprocess: {bandpass_hz: [0.5, 20]}
model: {type: cnn1d, widths: [16, 32, 64, 64], kernel_size: 7, hidden: 32, dropout: 0.1}
loss: {type: bce}
optimizer: {type: radam, lr: 0.003}
schedule: {type: warmup_cooldown, warmup_epochs: 1, cooldown_epochs: 2}
input: {window_s: 3, eval_stride_s: 1.5}
train: {epochs: 8, batch_size: 32, tensorboard: false, early_stop_patience: null}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("cfg") / "small.yaml"
    cfg.write_text(SMALL)
    return train(load_config(cfg), work_dir=str(tmp_path_factory.mktemp("runs") / "small"))


@pytest.fixture(scope="module")
def test_records(run):
    """The run's test records as the adapter reads them (before preprocessing), with their ids."""
    state = load_checkpoint(run / "best.pt")
    adapter = build("data", resolve_config(state["config"]))
    ids = adapter.records().ids
    wanted = state["split"]["test"][:6]
    return {rid: adapter.load(ids.index(rid)) for rid in wanted}


# ---- temperature scaling ----

def test_fit_temperature_recovers_the_overconfidence_it_is_given():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, (4000, 3))
    y = (rng.random((4000, 3)) < 1 / (1 + np.exp(-true_logit))).astype(float)
    t = fit_temperature(3.0 * true_logit, np.arange(4000), y, True, "mean")
    assert np.allclose(t, 3.0, rtol=0.15)
    # single-label: one temperature; argmax unchanged by construction
    z = rng.normal(0, 1, (3000, 4))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(4, p=row) for row in p])
    t = fit_temperature(0.5 * z, np.arange(3000), np.eye(4)[labels], False, "mean")
    assert len(t) == 1 and t[0] == pytest.approx(0.5, rel=0.15)


def test_ece_and_brier_are_zero_for_perfect_forecasts_and_positive_otherwise():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], float)
    assert expected_calibration_error(y, y, True) == 0 and brier_score(y, y, True) == 0
    assert expected_calibration_error(y, np.full_like(y, 0.9), True) > 0.3
    assert brier_score(np.eye(3), np.full((3, 3), 1 / 3), False) == pytest.approx(2 / 3)


def test_training_stores_a_temperature_and_evaluate_reports_calibration_before_and_after(run, tmp_path):
    state = load_checkpoint(run / "best.pt")
    assert len(state["temperature"]) == len(state["class_names"]) and all(t > 0 for t in state["temperature"])
    results = evaluate(run, "val", tmp_path / "val")
    cal = results["model"]["calibration"]
    assert cal["temperature"] == state["temperature"]
    # fitted on this split: the calibrated probabilities have the lower NLL there, and here the lower ECE
    assert cal["ece"] < cal["uncalibrated"]["ece"]
    assert cal["brier"] <= cal["uncalibrated"]["brier"] + 1e-9
    assert (tmp_path / "val" / "reliability.png").stat().st_size > 0
    assert "uncalibrated: ECE" in (tmp_path / "val" / "summary.txt").read_text()
    # the ablation: raw probabilities
    raw = evaluate(run, "val", tmp_path / "raw", eval_overrides={"calibration": "none"})
    assert raw["model"]["calibration"]["ece"] == pytest.approx(cal["uncalibrated"]["ece"])


def test_calibration_none_trains_without_a_temperature(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    out = train(load_config(cfg, ["calibration=none", "train.epochs=3"]), work_dir=str(tmp_path / "run"))
    assert load_checkpoint(out / "best.pt")["temperature"] is None


# ---- predict ----

def write_wfdb(folder: Path, name: str, x: np.ndarray, fs: float, leads=LEADS) -> Path:
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=x.T.astype(np.float64),
                fmt=["32"] * len(leads), adc_gain=[1e5] * len(leads), baseline=[0] * len(leads), write_dir=str(folder))
    return folder / f"{name}.hea"


def test_predict_matches_the_evaluation_pipeline(run, test_records, tmp_path):
    """A test record written as WFDB and read back by predict gets the probabilities evaluate computes."""
    for rid, x in test_records.items():
        write_wfdb(tmp_path, rid, x, 50.0)
    results, errors = predict_files(run, tmp_path, tmp_path / "out.json", progress=False)
    assert not errors and len(results) == len(test_records)
    # the evaluation pipeline on the same records: prepare_data + the checkpoint, as evaluate does
    state = load_checkpoint(run / "best.pt")
    data = prepare_data(resolve_config(state["config"]))
    predictor = Predictor(run)
    index = [data.records.ids.index(rid) for rid in test_records]
    expected = predictor.predict_signals([data.signals[i] for i in index])
    by_id = {r["record"]: r for r in results}
    for rid, want in zip(test_records, expected):
        got = by_id[rid]
        assert got["windows"] == want["windows"] == 3            # 6 s, 3 s windows every 1.5 s
        for c in predictor.class_names:
            assert got["probabilities"][c] == pytest.approx(want["probabilities"][c], abs=2e-3)
        assert got["labels"] == want["labels"]
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["model"]["classes"] == predictor.class_names and saved["model"]["calibrated"]
    assert saved["records"][0]["thresholds"] == pytest.approx(state["thresholds"])


def test_other_rates_are_resampled_and_leads_found_by_name_in_any_order(run, test_records, tmp_path):
    rid, x = next(iter(test_records.items()))
    write_wfdb(tmp_path, "same", x, 50.0)
    write_wfdb(tmp_path, "fast", resample(x, 50, 250), 250.0)                   # 5x the model's rate
    write_wfdb(tmp_path, "shuffled", x[[2, 0, 1]], 50.0, leads=["v1", "I", "ii"])
    results, _ = predict_files(run, tmp_path, progress=False)
    by_id = {r["record"]: r["probabilities"] for r in results}
    for other in ("fast", "shuffled"):
        for c, p in by_id["same"].items():
            assert by_id[other][c] == pytest.approx(p, abs=0.03 if other == "fast" else 1e-6), (other, c)


def test_every_input_format(run, test_records, tmp_path):
    (rid, x), (rid2, x2) = list(test_records.items())[:2]
    folder = tmp_path / "in"
    folder.mkdir()
    # CinC style: MATLAB v4 .mat with a WFDB header naming it (gain 1000/mV, int16)
    val = np.round(x * 1000).astype(np.int16)
    scipy.io.savemat(folder / "cinc.mat", {"val": val}, format="4")
    (folder / "cinc.hea").write_text(f"cinc 3 50 {val.shape[1]}\n" + "".join(
        f"cinc.mat 16+24 1000/mV 16 0 {val[k, 0]} 0 0 {lead}\n" for k, lead in enumerate(LEADS)))
    with open(folder / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LEADS)
        w.writerows(x.T.tolist())
    np.save(folder / "one.npy", x)
    np.save(folder / "many.npy", np.stack([x, x2]))
    np.savez(folder / "named.npz", signal=x[[1, 0, 2]], fs=50.0, leads=np.array(["II", "I", "V1"]))
    records = RecordSet(ids=[rid, rid2], groups=["p0", "p1"], labels=np.zeros((2, 2), np.float32),
                        class_names=["a", "b"], fs=50.0, leads=LEADS)
    write_hdf5(folder / "packed.h5", records, [(0, x), (1, x2)], fs=50.0)
    results, errors = predict_files(run, folder, folder.parent / "out.csv", fs=50.0, progress=False)
    assert not errors
    by_id = {r["record"]: r["probabilities"] for r in results}
    assert set(by_id) == {"cinc", "table", "one", "many#0", "many#1", "named", rid, rid2}
    reference = by_id["one"]
    for name in ("cinc", "table", "many#0", "named", rid):
        for c, p in reference.items():
            assert by_id[name][c] == pytest.approx(p, abs=0.01), (name, c)
    for c, p in by_id["many#1"].items():
        assert by_id[rid2][c] == pytest.approx(p, abs=1e-5)
    rows = list(csv.DictReader(open(folder.parent / "out.csv")))
    assert len(rows) == 8 and all(r["error"] == "" for r in rows) and "threshold_NORM" in rows[0]


def test_bad_files_are_reported_and_skipped_the_rest_written(run, test_records, tmp_path):
    rid, x = next(iter(test_records.items()))
    write_wfdb(tmp_path, "good", x, 50.0)
    write_wfdb(tmp_path, "two_leads", x[:2], 50.0, leads=["I", "II"])             # no V1
    (tmp_path / "garbage.hea").write_text("not a header\n")
    (tmp_path / "lonely.mat").write_bytes(b"\0" * 10)
    np.save(tmp_path / "flat.npy", np.zeros(10))                                  # 1-D
    results, errors = predict_files(run, tmp_path, tmp_path / "out.json", fs=50.0, progress=False)
    assert [r["record"] for r in results] == ["good"]
    reasons = {Path(e.source).name: e.reason for e in errors}
    assert set(reasons) == {"two_leads.hea", "garbage.hea", "lonely.mat", "flat.npy"}
    assert "has no lead V1" in reasons["two_leads.hea"]
    assert "no lonely.hea beside it" in reasons["lonely.mat"]
    saved = json.loads((tmp_path / "out.json").read_text())
    assert len(saved["records"]) == 1 and len(saved["errors"]) == 4


def run_tool(*args):
    return subprocess.run([sys.executable, "tools/predict.py", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_cli_one_line_errors_and_a_table(run, test_records, tmp_path):
    rid, x = next(iter(test_records.items()))
    write_wfdb(tmp_path, "two_leads", x[:2], 50.0, leads=["I", "II"])
    result = run_tool("--ckpt", str(run), "--input", str(tmp_path / "two_leads.hea"))
    assert result.returncode == 2 and "has no lead V1" in result.stderr and "Traceback" not in result.stderr
    with open(tmp_path / "t.csv", "w") as f:
        f.write("I,II,V1\n" + "\n".join(",".join(map(str, row)) for row in x.T))
    result = run_tool("--ckpt", str(run), "--input", str(tmp_path / "t.csv"))
    assert result.returncode == 2 and "pass --fs" in result.stderr
    result = run_tool("--ckpt", str(run), "--input", str(tmp_path / "t.csv"), "--fs", "50", "--per-window",
                      "--out", str(tmp_path / "p.json"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "p.json").read_text())["records"][0]
    assert [w["start_s"] for w in record["per_window"]] == [0.0, 1.5, 3.0]
    result = run_tool("--ckpt", str(run), "--input", str(tmp_path / "t.csv"), "--fs", "50")
    assert result.returncode == 0 and "NORM" in result.stdout.splitlines()[0] and "t " in result.stdout


def test_kfold_run_predicts_as_its_ensemble(tmp_path, test_records):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    kfold = train(load_config(cfg, ["train.epochs=3"]), work_dir=str(tmp_path / "kfold"), folds=2)
    rid, x = next(iter(test_records.items()))
    write_wfdb(tmp_path, "r", x, 50.0)
    predictor = Predictor(kfold)
    assert len(predictor.models) == 2 and predictor.describe()["ensemble"] == "vote"
    signal = predictor.prepare(next(read_inputs([tmp_path / "r.hea"])))
    ensemble = predictor.predict_signals([signal])[0]
    folds = [Predictor(kfold / f"fold{k}").predict_signals([signal])[0] for k in range(2)]
    for c in predictor.class_names:
        assert ensemble["probabilities"][c] == pytest.approx(np.mean([f["probabilities"][c] for f in folds]),
                                                            abs=1e-6)
    # a run with a fold not trained yet is not applied as if it were the whole ensemble
    (kfold / "fold1" / "best.pt").unlink()
    with pytest.raises(DataError, match=r"fold 1 of its 2 has no best.pt.*use one trained fold \(--ckpt .*fold0\)"):
        Predictor(kfold)


def test_models_that_need_more_than_a_recording_are_refused(run, tmp_path):
    state = load_checkpoint(run / "best.pt")
    state["feature_names"] = ["pre_rr"]
    torch.save(state, tmp_path / "features.pt")
    with pytest.raises(DataError, match="per-record features"):
        Predictor(tmp_path / "features.pt")


# ---- external evaluation ----

def test_external_evaluation_at_another_rate_with_a_class_map(run, tmp_path):
    """Another synthetic dataset (another seed, 100 Hz instead of the model's 50 Hz, 12 leads) scored by
    the model: resampled to 50 Hz, its leads picked by name; classes mapped by eval.class_map."""
    other = tmp_path / "other.yaml"
    other.write_text("data: {type: synthetic, num_records: 120, fs: 100, duration_s: 6, seed: 7,\n"
                     "       leads: [V1, I, II, III, aVR, aVL, aVF, V2, V3, V4, V5, V6]}\n"
                     "eval: {class_map: {NORM: NORM, AF: [AF], tachy: tachy}}\n")
    results = evaluate(run, None, tmp_path / "ext", config=other)
    metrics = results["model"]
    assert metrics["n"] == 120 and [r["class"] for r in metrics["per_class"]] == ["NORM", "AF", "tachy"]
    assert metrics["external"]["model_classes_not_scored"] == ["PVC", "brady", "wide_qrs"]
    assert metrics["macro_auroc"] > 0.7          # the same generator at another rate: the model still works
    summary = (tmp_path / "ext" / "summary.txt").read_text()
    assert summary.startswith("EXTERNAL evaluation") and "resampled to 50 Hz" in summary
    # --split test: the other dataset's own test split only
    test_only = evaluate(run, "test", tmp_path / "ext_test", config=other)
    assert test_only["model"]["n"] < 120


def test_external_evaluation_refuses_missing_leads_and_unknown_classes(run, tmp_path):
    from ecgnet.registry import ConfigError
    two_leads = tmp_path / "two.yaml"
    two_leads.write_text("data: {type: synthetic, num_records: 40, fs: 50, duration_s: 6, leads: [I, II]}\n")
    with pytest.raises(DataError, match="no lead V1"):
        evaluate(run, None, tmp_path / "a", config=two_leads)
    bad_map = tmp_path / "map.yaml"
    bad_map.write_text("data: {type: synthetic, num_records: 40, fs: 50, duration_s: 6, leads: [I, II, V1]}\n"
                       "eval: {class_map: {NORM: normal}}\n")
    with pytest.raises(ConfigError, match="normal: not a class of the data"):
        evaluate(run, None, tmp_path / "b", config=bad_map)
    with pytest.raises(ConfigError, match="--split all"):
        evaluate(run, "all", tmp_path / "c")


SHARED_MITDB = REPO.parent / "shared" / "data" / "mitdb"


@pytest.mark.skipif(not (SHARED_MITDB / "RECORDS").is_file(), reason="needs ../shared/data/mitdb")
def test_external_evaluation_on_held_out_mitdb_records_matches_the_test_split(tmp_path):
    """A beat model trained on 4 DS1 records, scored on 2 DS2 records both ways: as its own test
    split and as an external dataset (cfgs/external style record_names); the numbers agree."""
    cfg = tmp_path / "beats.yaml"
    cfg.write_text(f"""
_base_: {REPO}/cfgs/mitdb/cnn1d_inter_patient.yaml
data: {{root: {SHARED_MITDB}, record_names: ["101", "106", "108", "109", "100", "103"]}}
train: {{epochs: 2, tensorboard: false}}
schedule: {{warmup_epochs: 1, cooldown_epochs: 1}}
""")
    trained = train(load_config(cfg), work_dir=str(tmp_path / "run"))
    own = evaluate(trained, "test", tmp_path / "own", eval_overrides={"calibration": "auto", "bootstrap": 0})["model"]
    other = tmp_path / "ds2.yaml"
    other.write_text('data: {type: mitdb, record_names: ["100", "103"]}\neval: {bootstrap: 0}\n')
    external = evaluate(trained, None, tmp_path / "ext", config=other)["model"]
    assert external["n"] == own["n"] and external["accuracy"] == pytest.approx(own["accuracy"], abs=1e-6)


# ---- attribution ----

def test_integrated_gradients_add_up_to_the_probability_change(run, test_records):
    """IG's completeness: over one window, attributions sum to p(record) - p(flat line)."""
    from ecgnet.explain import explain_signal
    predictor = Predictor(run, device="cpu", amp="off")
    rid, x = next(iter(test_records.items()))
    signal = predictor.prepare(Recording(rid, x, 50.0, LEADS, "mem"))[:, :150]      # exactly one 3 s window
    e = explain_signal(predictor, signal, rid, "NORM", steps=64)
    flat = predictor.score_signals([np.zeros_like(signal)])[0][0][predictor.class_names.index("NORM")]
    assert e.attribution.shape == signal.shape and e.class_name == "NORM"
    assert e.attribution.sum() == pytest.approx(e.probability - flat, abs=0.02)


def test_gradcam_and_attention_maps(tmp_path):
    from ecgnet.explain import _window_attribution
    from ecgnet.export import ProbabilityModel
    for name in ("se_attention1d", "resnet1d"):
        torch.manual_seed(0)
        model = MODELS.build({"type": name}, "model", in_leads=3, num_classes=4).eval()
        prob = ProbabilityModel([model], [{"mode": "none", "mean": None, "std": None}], [None], True).eval()
        x = torch.randn(1, 3, 200)
        cam = _window_attribution(prob, x, 1, "gradcam", 8)
        assert cam.shape == (3, 200) and (cam >= 0).all() and np.allclose(cam[0], cam[2])
        if name == "se_attention1d":
            att = _window_attribution(prob, x, 1, "attention", 8)
            assert att.shape == (3, 200) and att.min() >= 0
        else:
            with pytest.raises(Exception, match="no attention weights"):
                _window_attribution(prob, x, 1, "attention", 8)


def test_explain_cli_writes_a_picture_and_arrays(run, test_records, tmp_path):
    rid, x = next(iter(test_records.items()))
    write_wfdb(tmp_path, "r", x, 50.0)
    result = subprocess.run([sys.executable, "tools/explain.py", "--ckpt", str(run), "--input", str(tmp_path / "r.hea"),
                             "--class", "AF", "--steps", "8", "--out", str(tmp_path / "ex")],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "r: p(AF) = " in result.stdout
    arrays = np.load(tmp_path / "ex" / "r_AF.npz")
    assert arrays["attribution"].shape == arrays["signal"].shape == (3, 300) and str(arrays["class_name"]) == "AF"
    assert (tmp_path / "ex" / "r_AF.png").stat().st_size > 10_000
    result = subprocess.run([sys.executable, "tools/explain.py", "--ckpt", str(run), "--input", str(tmp_path / "r.hea"),
                             "--class", "nope"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and "--class nope: not a class" in result.stderr


# ---- report.html ----

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="needs headless Chromium (apt-get install chromium; .ci/run installs it)")
def test_report_html_renders_in_headless_chromium(run, tmp_path):
    assert CHROMIUM, "CI must have Chromium: .ci/run installs it"
    evaluate(run, "test", tmp_path / "report")
    page = tmp_path / "report" / "report.html"
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text     # self-contained
    assert text.count("data:image/png;base64,") >= 5          # 4 plots + attribution examples
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="ok"' in dom                          # every inline image decoded
    assert dom.count("<table") >= 3 and "Per class" in dom and "Attribution examples" in dom
    assert "true positive for" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    import matplotlib.image
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1200) and pixels[..., :3].std() > 0.05     # drawn, not blank


SHARED_PTBXL = REPO.parent / "shared" / "data" / "ptbxl" / "records100" / "00000"


@pytest.mark.skipif(not SHARED_PTBXL.is_dir(), reason="needs ../shared/data/ptbxl")
def test_predict_reads_real_ptbxl_records(tmp_path):
    """Real WFDB files (PTB-XL names its leads AVR, AVL, AVF; models say aVR...) through a 12-lead
    100 Hz model; the numbers mean nothing (synthetic training), the reading and windows do."""
    cfg = tmp_path / "twelve.yaml"
    cfg.write_text(SMALL.replace("leads: [I, II, V1], ", "").replace("fs: 50, duration_s: 6", "fs: 100, duration_s: 10")
                   .replace("input: {window_s: 3, eval_stride_s: 1.5}", "input: {window_s: 2.5, eval_stride_s: 1.25}")
                   .replace("epochs: 8", "epochs: 2").replace("num_records: 320", "num_records: 120"))
    model = train(load_config(cfg, ["schedule.cooldown_epochs=1"]), work_dir=str(tmp_path / "run"))
    files = sorted(SHARED_PTBXL.glob("*.hea"))[:5]
    for f in files:
        for suffix in (".hea", ".dat"):
            (tmp_path / "in").mkdir(exist_ok=True)
            shutil.copy(f.with_suffix(suffix), tmp_path / "in" / f.with_suffix(suffix).name)
    results, errors = predict_files(model, tmp_path / "in", tmp_path / "real.csv", progress=False)
    assert not errors and len(results) == len(files)
    assert all(r["windows"] == 7 and r["duration_s"] == 10.0 for r in results)      # 10 s: 2.5 s every 1.25 s


def test_calibration_lowers_ece_on_the_demo(tmp_path):
    """cfgs/demo.yaml (shortened): its models are underconfident, and the temperature fitted on validation
    lowers the test split's ECE and Brier score (on the full demo: ECE 0.29 -> 0.04, README)."""
    cfg = load_config(REPO / "cfgs" / "demo.yaml", ["data.num_records=400", "train.epochs=4",
                                                    "schedule.cooldown_epochs=2", "train.tensorboard=false"])
    demo = train(cfg, work_dir=str(tmp_path / "demo"))
    cal = evaluate(demo, "test", tmp_path / "report", eval_overrides={"bootstrap": 0, "explain_examples": 0})[
        "model"]["calibration"]
    assert cal["ece"] < cal["uncalibrated"]["ece"] and cal["brier"] < cal["uncalibrated"]["brier"]


def test_ptbxl_model_on_cinc2020_through_the_shipped_class_map(tmp_path):
    """A PTB-XL superdiagnostic model (trained on a PTB-XL fixture, 100 Hz) scored on CinC 2020 fixture
    records (500 Hz, .mat/.hea) through cfgs/external/cinc2020_as_ptbxl_superdiagnostic.yaml."""
    root = tmp_path / "ptbxl"
    root.mkdir()
    pd.DataFrame.from_dict(STATEMENTS, orient="index", columns=STATEMENT_COLUMNS).to_csv(root / "scp_statements.csv")
    pd.DataFrame([{"ecg_id": e, "patient_id": float(p), "recording_date": d, "scp_codes": c, "strat_fold": f,
                   "filename_lr": record_name(e, 100), "filename_hr": record_name(e, 500)}
                  for e, p, d, f, c in ROWS[:10]]).to_csv(root / "ptbxl_database.csv", index=False)
    for e, *_ in ROWS[:10]:
        write_ptbxl(root, e, 100, ecg(e, 100))
    cfg = tmp_path / "ptbxl.yaml"
    cfg.write_text(f"_base_: [{REPO}/cfgs/_base_/data/ptbxl.yaml, {REPO}/cfgs/_base_/models/resnet1d.yaml]\n"
                   f"data: {{root: {root}, task: superdiagnostic, min_count: 1}}\n"
                   "model: {base_width: 8, num_blocks: 2}\nloss: {type: bce}\n"
                   "train: {epochs: 2, batch_size: 4, tensorboard: false}\n"
                   "schedule: {type: warmup_cooldown, warmup_epochs: 1, cooldown_epochs: 1}\n")
    model = train(load_config(cfg), work_dir=str(tmp_path / "run"))
    folder = tmp_path / "cinc2020" / "WFDB"
    for k, dx in enumerate([["426783006"], ["713427006", "270492004"], ["164934002"], ["164889003"]]):
        write_cinc2020(folder, f"A{k:04d}", dx, fs=500, seconds=10.0, seed=k)
    other = tmp_path / "ext.yaml"
    other.write_text(f"_base_: {REPO}/cfgs/external/cinc2020_as_ptbxl_superdiagnostic.yaml\n"
                     f"data: {{root: {tmp_path / 'cinc2020'}}}\neval: {{bootstrap: 0}}\n")
    metrics = evaluate(model, None, tmp_path / "ext", config=other)["model"]
    assert [r["class"] for r in metrics["per_class"]] == ["NORM", "CD", "STTC"]
    assert metrics["n"] == 4 and sorted(metrics["external"]["model_classes_not_scored"]) == ["HYP", "MI"]
    assert metrics["external"]["class_map"]["CD"][:2] == ["IAVB", "CRBBB|RBBB"]
    assert [r["support"] for r in metrics["per_class"]] == [1, 1, 1]        # NSR; CRBBB + IAVB; TAb
    summary = (tmp_path / "ext" / "summary.txt").read_text()
    assert "EXTERNAL" in summary and "resampled to 100 Hz" in summary


def test_unfinished_training_is_refused_by_evaluate_and_predict(run, tmp_path):
    from ecgnet.engine.checkpoint import save_checkpoint
    cut = tmp_path / "cut"
    cut.mkdir()
    state = load_checkpoint(run / "best.pt")
    state["finished"] = False                      # as a run stopped before finalize leaves best.pt
    save_checkpoint(state, cut / "best.pt")
    shutil.copy(run / "config.yaml", cut / "config.yaml")
    for call in (lambda: evaluate(cut, "test", tmp_path / "report"), lambda: Predictor(cut)):
        with pytest.raises(DataError, match=r"training did not finish .* tools/train.py --resume"):
            call()
