"""Speed settings that must not change results: train.amp auto on CPUs with native bf16, progress
lines without a terminal, inference loader workers, k-fold evaluation in one pass, train.num_workers
auto and train.compile."""
import json
import logging
import re

import numpy as np
import pytest
import torch

import ecgnet.engine.distributed as distributed_mod
import ecgnet.engine.evaluate as evaluate_mod
import ecgnet.engine.predict as predict_mod
import ecgnet.models  # noqa: F401  (registers every backbone)
from ecgnet.config import load_config
from ecgnet.data.dataset import EvalWindows
from ecgnet.data.transforms import Normalizer
from ecgnet.engine.predict import (ProgressLog, amp_dtype, cpu_bf16_feature, describe_amp, format_eta, predict,
                                   predict_many)
from ecgnet.engine.checkpoint import load_checkpoint
from ecgnet.engine.run import train
from ecgnet.registry import MODELS, ConfigError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


# ---- train.amp: auto ----

def test_amp_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_elsewhere(monkeypatch):
    monkeypatch.setattr(predict_mod, "cpu_bf16_feature", lambda: "AMX-BF16")
    assert amp_dtype("auto", CPU) is torch.bfloat16
    assert describe_amp("auto", CPU, torch.bfloat16) == "amp: bf16 autocast (CPU has AMX-BF16)"
    assert amp_dtype("off", CPU) is None and amp_dtype("bf16", CPU) is torch.bfloat16
    monkeypatch.setattr(predict_mod, "cpu_bf16_feature", lambda: None)
    assert amp_dtype("auto", CPU) is None
    assert describe_amp("auto", CPU, None) == "amp: off (fp32): this CPU has no native bf16 (AMX-BF16 or AVX512-BF16)"
    assert amp_dtype("bf16", CPU) is torch.bfloat16                      # asked for: emulated, but allowed
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        amp_dtype("fp16", CPU)
    # CUDA is unchanged: bf16 where supported, else fp16, whatever the CPU has
    for cpu_feature in ("AMX-BF16", None):
        monkeypatch.setattr(predict_mod, "cpu_bf16_feature", lambda f=cpu_feature: f)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        assert amp_dtype("auto", CUDA) is torch.bfloat16
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
        assert amp_dtype("auto", CUDA) is torch.float16 and amp_dtype("fp16", CUDA) is torch.float16


def test_cpu_bf16_detection_from_torch_or_cpuinfo(monkeypatch, tmp_path):
    def detect(caps, cpuinfo=""):
        monkeypatch.setattr(torch.cpu, "get_capabilities", caps, raising=False)
        (tmp_path / "cpuinfo").write_text(cpuinfo)
        monkeypatch.setattr(predict_mod, "_CPUINFO", tmp_path / "cpuinfo")
        cpu_bf16_feature.cache_clear()
        try:
            return cpu_bf16_feature()
        finally:
            cpu_bf16_feature.cache_clear()

    def broken():
        raise RuntimeError("no cpuinfo")

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert detect(lambda: {"amx_bf16": True, "avx512_bf16": True}) == "AMX-BF16"
    assert detect(lambda: {"amx_bf16": False, "avx512_bf16": True}) == "AVX512-BF16"
    assert detect(lambda: {"avx2": True, "avx512_f": True}) is None               # AVX-512 alone is not enough
    assert detect(broken, "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 vnni\n") == "AVX512-BF16"
    assert detect(broken, "flags\t\t: fpu sse2 avx2 amx_tile amx_bf16\n") == "AMX-BF16"
    assert detect(broken, "flags\t\t: fpu sse2 avx2\n") is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert detect(lambda: {}) == "AVX512-BF16"                                    # an older torch's private probe


def test_amp_auto_on_this_machine_agrees_with_its_cpu_flags():
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    assert (amp_dtype("auto", CPU) is torch.bfloat16) == native
    assert (cpu_bf16_feature() is not None) == native


# ---- progress lines without a terminal ----

def test_progress_log_rates_eta_and_interval(caplog, monkeypatch):
    clock = iter([100.0, 101.0, 102.0, 103.0, 190.0])
    monkeypatch.setattr(predict_mod.time, "monotonic", lambda: next(clock))
    caplog.set_level(logging.INFO, logger="ecgnet")
    watch = ProgressLog("fold 1 epoch 2", 10, every_s=2.0)        # started at t=100
    watch.step(1, 32)                                              # t=101: too soon
    watch.step(2, 32)                                              # t=102: 64 samples in 2 s, 8 steps left
    watch.step(3, 32)                                              # t=103: too soon after the last line
    watch.step(10, 32)                                             # the last step: the epoch line follows
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["fold 1 epoch 2: step 2/10, 32.0 samples/s, ETA 0:08"]
    assert format_eta(59.6) == "1:00" and format_eta(3725) == "1:02:05"


TINY = """
data: {type: synthetic, num_records: 90, fs: 50, duration_s: 4, max_duration_s: 8, leads: [I, II, V1],
       records_per_patient: 2}
input: {window_s: 6}
model: {type: cnn1d, widths: [8, 16], kernel_size: 5, hidden: 16, dropout: 0.0}
loss: {type: bce}
schedule: {type: warmup_cooldown, warmup_epochs: 0, cooldown_epochs: 1}
train: {epochs: 2, batch_size: 16, eval_batch_size: 16, tensorboard: false, early_stop_patience: null,
        progress: "off", log_every_s: 0.0}
eval: {bootstrap: 0, plots: false}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-fold run (records 4-8 s, windows 6 s: short records are padded), with its log."""
    root = tmp_path_factory.mktemp("speed")
    (root / "tiny.yaml").write_text(TINY)
    handler = _Collect()
    logger = logging.getLogger("ecgnet")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run = train(load_config(root / "tiny.yaml"), work_dir=str(root / "run"), folds=2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return run, handler.lines


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_training_logs_step_rate_and_eta_without_a_terminal(tiny_run):
    run, lines = tiny_run
    steps = [line for line in lines if re.fullmatch(r"fold [01] epoch [12]: step \d+/\d+, [\d.]+ samples/s, "
                                                    r"ETA \d+:\d\d", line)]
    assert any(line.startswith("fold 0 epoch 1: step 1/") for line in steps)
    assert any(line.startswith("fold 1 epoch 2: step ") for line in steps)
    assert any(re.fullmatch(r"fold 0 validation: batch \d+/\d+, [\d.]+ windows/s, ETA \d+:\d\d", line)
               for line in lines)
    amp_lines = [line for line in lines if line.startswith("amp: ")]
    assert len(amp_lines) == 1, amp_lines                          # once per run, not once per fold
    assert amp_lines[0] == describe_amp("auto", CPU, amp_dtype("auto", CPU))


def test_no_progress_lines_when_log_every_s_is_null(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="ecgnet")
    windows = EvalWindows(*_signals_and_index(), 100, 50, Normalizer("none"))
    predict(_model("cnn1d"), windows, True, CPU, None, 2, log_every_s=None)
    assert not caplog.records
    predict(_model("cnn1d"), windows, True, CPU, None, 2, log_every_s=0.0, what="test split")
    assert any(r.getMessage().startswith("test split: batch 1/") for r in caplog.records)


# ---- inference: loader workers, one pass for K models ----

def _signals_and_index():
    rng = np.random.default_rng(0)
    lengths = (37, 400, 250, 100, 90, 151)            # 37 and 90 are shorter than a 100-sample window
    offsets = np.array([[3.0], [-2.0], [0.5]])          # per-lead offsets: padding must not take -mean/std
    return [(rng.normal(size=(3, n)) * 2 + offsets).astype(np.float32) for n in lengths], np.array([5, 0, 1, 2, 3, 4])


def _model(name, seed=0):
    torch.manual_seed(seed)
    sizes = {"cnn1d": {"widths": [8, 16], "kernel_size": 5, "hidden": 16}, "resnet1d": {"base_width": 8,
                                                                                        "num_blocks": 4}}
    return MODELS.get(name, "model")(in_leads=3, num_classes=4, **sizes[name]).eval()


def test_predict_with_loader_workers_equals_without():
    signals, index = _signals_and_index()
    windows = EvalWindows(signals, index, 100, 50, Normalizer("per_record"))
    model = _model("cnn1d")
    y = (np.random.default_rng(1).random((len(index), 4)) < 0.5).astype(np.float32)
    p0, loss0 = predict(model, windows, True, CPU, None, 3, torch.nn.BCEWithLogitsLoss(), y)
    p1, loss1 = predict(model, windows, True, CPU, None, 3, torch.nn.BCEWithLogitsLoss(), y, num_workers=1)
    assert np.array_equal(p0, p1) and loss0 == loss1 and p0.shape == (len(index), 4)


def _fold_normalizers(signals):
    return [Normalizer("per_lead").fit(signals[k::2]) for k in range(2)] + [
        Normalizer("per_lead", mean=[1.0, -1.0, 4.0], std=[0.5, 3.0, 2.0])]


@pytest.mark.parametrize("full_length", [False, True])
@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_one_pass_for_k_models_equals_k_passes(full_length, aggregate):
    signals, index = _signals_and_index()
    window, stride = (1000, 1000) if full_length else (100, 50)
    normalizers = _fold_normalizers(signals)
    assert not np.allclose(normalizers[0].mean, normalizers[1].mean)
    models = [_model("resnet1d" if full_length else "cnn1d", seed) for seed in range(3)]
    separate = [predict(m, EvalWindows(signals, index, window, stride, n, pad=not full_length), True, CPU, None, 4,
                        aggregate=aggregate)[0] for m, n in zip(models, normalizers)]
    shared = EvalWindows(signals, index, window, stride, Normalizer("none"), pad=not full_length)
    joint = predict_many(models, shared, True, CPU, None, 4, normalizers=normalizers, aggregate=aggregate)
    for a, (b, _) in zip(separate, joint):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    # the padded short records are what the masking is for: without it they would change
    unmasked = predict_mod.DeviceNormalizer(normalizers[0], CPU)
    x = torch.zeros(1, 3, 10)
    assert unmasked(x, torch.tensor([4]))[:, :, 4:].abs().sum() == 0
    assert unmasked(x, None).abs().sum() > 0


def test_one_pass_refuses_windows_that_already_normalise():
    signals, index = _signals_and_index()
    windows = EvalWindows(signals, index, 100, 50, Normalizer("per_record"))
    with pytest.raises(ValueError, match="Normalizer\\('none'\\)"):
        predict_many([_model("cnn1d")] * 3, windows, True, CPU, None, 4, normalizers=_fold_normalizers(signals))


def test_kfold_evaluation_in_one_pass_matches_one_pass_per_model(tiny_run, tmp_path, monkeypatch):
    run, _ = tiny_run
    calls = []
    many = evaluate_mod.window_logits
    monkeypatch.setattr(evaluate_mod, "window_logits", lambda models, *a, **k: calls.append(len(models)) or
                        many(models, *a, **k))
    joint = evaluate_mod.evaluate(run, "test", tmp_path / "one_pass")
    assert calls == [2]
    monkeypatch.setattr(evaluate_mod, "_one_pass", lambda states, split: False)   # the K-pass path
    separate = evaluate_mod.evaluate(run, "test", tmp_path / "k_passes")
    assert calls == [2, 1, 1] and set(joint) == {"fold0", "fold1", "ensemble_vote", "ensemble_mean"}
    for name in joint:
        a, b = joint[name], separate[name]
        for key in ("macro_auroc", "macro_f1", "macro_auprc", "hamming_loss", "exact_match"):
            assert a[key] == pytest.approx(b[key], abs=1e-9), (name, key)
        assert [r["auroc"] for r in a["per_class"]] == pytest.approx([r["auroc"] for r in b["per_class"]], abs=1e-9)
    assert json.loads((tmp_path / "one_pass" / "metrics.json").read_text()).keys() == joint.keys()
    # the validation split differs per fold: one pass per model, as before
    calls.clear()
    evaluate_mod.evaluate(run, "val", tmp_path / "val")
    assert calls == [1, 1]


# ---- train.num_workers: auto ----

@pytest.mark.parametrize("cores, processes, workers", [(16, 1, 8), (16, 2, 7), (4, 1, 3), (8, 8, 0), (1, 1, 0)])
def test_num_workers_auto_is_the_process_share_of_cores_on_cuda_and_0_on_cpu(monkeypatch, cores, processes, workers):
    monkeypatch.setattr(distributed_mod.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert distributed_mod.resolve_num_workers("auto", CUDA) == workers      # min(8, cores / processes - 1)
    assert distributed_mod.resolve_num_workers("auto", CPU) == 0
    assert distributed_mod.resolve_num_workers(3, CPU) == 3 and distributed_mod.resolve_num_workers(0, CUDA) == 0


def test_num_workers_setting_takes_auto_or_a_count(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    assert load_config(tmp_path / "tiny.yaml")["train"]["num_workers"] == "auto"
    assert load_config(tmp_path / "tiny.yaml", ["train.num_workers=2"])["train"]["num_workers"] == 2
    with pytest.raises(ConfigError, match="train.num_workers: expected int or 'auto', got 'many'"):
        load_config(tmp_path / "tiny.yaml", ["train.num_workers=many"])


# ---- train.compile ----

def test_compiled_training_saves_plain_checkpoints_that_evaluate_loads(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    run = train(load_config(tmp_path / "tiny.yaml", ["train.compile=true", "train.epochs=1",
                                                    "schedule.cooldown_epochs=0"]), work_dir=str(tmp_path / "run"))
    plain = MODELS.get("cnn1d", "model")(in_leads=3, num_classes=6, widths=[8, 16], kernel_size=5, hidden=16)
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(run / name)
        assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])
        plain.load_state_dict(state["model"])                       # strict: the keys of the uncompiled model
    assert evaluate_mod.evaluate(run, "test", tmp_path / "eval")["model"]["macro_auroc"] >= 0
