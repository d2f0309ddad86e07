"""tools/export.py: ONNX (checked with onnxruntime) and TorchScript give the probabilities PyTorch gives,
for every registered backbone, with the model's metadata embedded."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgnet.config import load_config
from ecgnet.engine.checkpoint import load_checkpoint
from ecgnet.engine.predictor import Predictor
from ecgnet.engine.run import train
from ecgnet.export import ProbabilityModel, _export_onnx, _export_torchscript, export, read_metadata
from ecgnet.models import MODELS

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4       # max abs difference of probabilities


def warmed(name: str) -> torch.nn.Module:
    """A backbone with non-trivial BatchNorm statistics (a few training-mode passes), in eval mode."""
    torch.manual_seed(0)
    model = MODELS.build({"type": name}, "model", in_leads=3, num_classes=4)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 250))
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_onnx_and_torchscript_match_pytorch_for_every_backbone(name, tmp_path):
    model = ProbabilityModel([warmed(name)], [{"mode": "per_lead", "mean": [0.1, -0.2, 0.0], "std": [1.5, 2.0, 0.7]}],
                             [[1.3, 0.8, 2.0, 1.0]], multilabel=True).eval()
    meta = {"leads": ["I", "II", "V1"], "window_samples": 250}
    dynamic = _export_onnx(model, meta, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    shapes = [(3, 3, 250), (1, 3, 250)] + ([(2, 3, 377)] if dynamic else [])
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"signal": x.numpy()})[0]
        assert np.abs(got - want).max() <= TOLERANCE, (name, shape)
    assert _export_torchscript(model, meta, tmp_path / "m.pt")        # traced: any length
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    for shape in [(3, 3, 250), (2, 3, 377)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            assert np.abs(scripted(x).numpy() - model(x).numpy()).max() <= TOLERANCE, (name, shape)


def test_single_label_softmax_and_per_record_normalisation(tmp_path):
    model = ProbabilityModel([warmed("resnet1d_wang")], [{"mode": "per_record", "mean": None, "std": None}], [[0.7]],
                             multilabel=False).eval()
    _export_onnx(model, {"leads": ["a", "b", "c"], "window_samples": 250}, tmp_path / "m.onnx")
    x = torch.randn(4, 3, 250) * 3 + 1
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"signal": x.numpy()})[0]
    assert np.allclose(got.sum(1), 1, atol=1e-5)
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() <= TOLERANCE


SMALL = """
data: {type: synthetic, num_records: 200, fs: 50, duration_s: 6, leads: [I, II, V1], records_per_patient: 2}
model: {type: cnn1d, widths: [16, 32], kernel_size: 7, hidden: 16, dropout: 0.1}
loss: {type: bce}
schedule: {type: warmup_cooldown, warmup_epochs: 1, cooldown_epochs: 1}
input: {window_s: 3, eval_stride_s: 1.5}
train: {epochs: 3, batch_size: 32, tensorboard: false}
"""


@pytest.fixture(scope="module")
def kfold(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("cfg") / "small.yaml"
    cfg.write_text(SMALL)
    return train(load_config(cfg), work_dir=str(tmp_path_factory.mktemp("runs") / "kfold"), folds=2)


def test_a_kfold_run_exports_as_one_graph_with_its_metadata(kfold, tmp_path):
    path, meta = export(kfold, "onnx", tmp_path / "ens.onnx")
    saved = read_metadata(path)
    state = load_checkpoint(kfold / "fold0" / "best.pt")
    assert saved["classes"] == state["class_names"] and saved["fs"] == 50 and saved["leads"] == ["I", "II", "V1"]
    assert saved["window_samples"] == 150 and saved["stride_s"] == 1.5 and saved["folds"] == 2
    assert saved["thresholds"] == pytest.approx(np.mean([load_checkpoint(kfold / f"fold{k}" / "best.pt")["thresholds"]
                                                         for k in range(2)], 0).tolist())
    assert len(saved["temperature"]) == 2 and saved["dynamic_length"] == meta["dynamic_length"]
    # the exported ensemble gives what predict's ensemble gives for a window (mean of the folds)
    predictor = Predictor(kfold, amp="off")          # the export runs in fp32
    x = np.random.default_rng(0).normal(0, 0.5, (1, 3, 150)).astype(np.float32)
    want = predictor.predict_signals([x[0]])[0]["probabilities"]
    got = ort.InferenceSession(str(path)).run(None, {"signal": x})[0][0]
    assert np.abs(got - np.array([want[c] for c in saved["classes"]])).max() <= TOLERANCE
    ts_path, _ = export(kfold, "torchscript", tmp_path / "ens.pt")
    assert read_metadata(ts_path)["classes"] == saved["classes"]
    with torch.no_grad():
        assert np.abs(torch.jit.load(str(ts_path))(torch.from_numpy(x)).numpy()[0] - got).max() <= TOLERANCE


def test_cli(kfold, tmp_path):
    result = subprocess.run([sys.executable, "tools/export.py", "--ckpt", str(kfold / "fold1"), "--format",
                             "torchscript", "--out", str(tmp_path / "m.pt")], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "m.pt: torchscript" in result.stdout and "probabilities of 6 classes" in result.stdout
    result = subprocess.run([sys.executable, "tools/export.py", "--ckpt", str(tmp_path / "nope"), "--format", "onnx"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and "no such file or directory" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(json.dumps(read_metadata(tmp_path / "m.pt")))["folds"] == 1
