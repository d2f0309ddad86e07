"""Multi-process training: sharding of every sampler, the global batch, and two CPU processes
under torchrun (gloo) that train like one process, agree on their weights and resume after Ctrl-C."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgnet.build import build
from ecgnet.config import load_config
from ecgnet.data.dataset import BucketBatchSampler
from ecgnet.data.samplers import ShardedSampler, shard
from ecgnet.engine import distributed
from ecgnet.engine.checkpoint import load_checkpoint
from ecgnet.engine.evaluate import evaluate
from ecgnet.engine.run import train
from ecgnet.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]


# ---- sharding: every rank the same number of steps, together the batches of one process ----

def _sampler(kind: str, n: int = 101):
    labels = np.zeros((n, 3), np.float32)
    labels[np.arange(n), np.arange(n) % 3] = 1
    labels[:10] = [1, 0, 0]                              # an imbalance for the balancing samplers
    return build("sampler", {"sampler": {"type": kind}}, labels=labels, seed=3)


@pytest.mark.parametrize("kind", ["random", "class_balanced", "oversample"])
@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_make_up_the_single_process_batches(kind, world):
    batch = 6 * world                                    # the global batch
    sampler = _sampler(kind)
    sampler.set_epoch(4)
    epoch = sampler.positions()
    shards = [list(ShardedSampler(sampler, rank, world)) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(ShardedSampler(sampler, 0, world))
    local = batch // world
    steps = [-(-len(s) // local) for s in shards]
    assert len(set(steps)) == 1 and steps[0] == -(-len(epoch) // batch)   # as many steps as one process takes
    padded = np.resize(epoch, len(shards[0]) * world)
    for step in range(steps[0]):
        together = sorted(p for s in shards for p in s[step * local:(step + 1) * local])
        assert together == sorted(padded[step * batch:(step + 1) * batch].tolist())
    assert (shard(epoch, 0, 1) == epoch).all()


def test_bucket_batches_are_split_over_ranks_batch_by_batch():
    lengths = np.random.default_rng(0).integers(100, 2000, 101)
    sampler = _sampler("random")
    single = BucketBatchSampler(sampler, lengths, batch_size=8, pool_batches=5)
    ranks = [BucketBatchSampler(sampler, lengths, batch_size=8, pool_batches=5, rank=r, world_size=3) for r in range(3)]
    for batches in (single, *ranks):
        batches.set_epoch(2)
    whole, parts = list(single), [list(b) for b in ranks]
    assert all(len(p) == len(whole) == len(single) for p in parts)      # the same steps on every rank
    for i, batch in enumerate(whole):
        assert sorted(p for part in parts for p in part[i]) == sorted(np.resize(batch, -(-len(batch) // 3) * 3))
        assert len({len(part[i]) for part in parts}) == 1


def test_batch_size_is_the_global_batch(monkeypatch):
    assert distributed.local_batch_size(32) == 32
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    assert distributed.local_batch_size(32) == 8
    with pytest.raises(ConfigError, match=r"train.batch_size: 30 is the global batch, split evenly over 4 "
                                          r"processes; use a multiple of 4 \(e.g. 28 or 32\)"):
        distributed.local_batch_size(30)


# ---- two processes with torchrun ----

# BatchNorm frozen (model.freeze): in eval mode it is the same affine map on every rank, so two
# processes with batch 8 each compute exactly what one process computes with batch 16, up to the
# order of float additions (gradients averaged over ranks). Trained BatchNorm would normalise each
# rank's 8 rows with their own statistics, a different (equally valid) model. No dropout or amp. On the
# CPU (gloo) also where a GPU is present: two processes would need two GPUs.
CONFIG = """
data: {type: synthetic, num_records: 200, fs: 50, duration_s: 6, leads: [I, II, V1], records_per_patient: 2}
preprocess: {cache_dir: null, bandpass_hz: [0.5, 20]}
model: {type: cnn1d, widths: [16, 32, 64, 64], kernel_size: 7, hidden: 16, dropout: 0.0, freeze: ["*bn.*"]}
loss: {type: bce}
optimizer: {type: adamw, lr: 0.003}
schedule: {type: warmup_cooldown, warmup_epochs: 0, cooldown_epochs: 1}
train: {epochs: 8, batch_size: 16, eval_batch_size: 16, tensorboard: false, early_stop_patience: null,
        progress: "off", log_every_s: null, amp: "off", monitor: val/loss, device: cpu}
eval: {bootstrap: 0, plots: false}
"""
# Measured here: the two runs' weights (|w| <= 1) differ by 3e-6 at most and their metrics and
# thresholds by 1e-7 (float addition order); 1e-4 leaves room for other CPUs' kernels, while twice
# the steps (every rank taking the whole epoch) or half the learning rate moves weights by 0.15-0.2.
TOLERANCE = 1e-4


def torchrun(*args: str, interrupt_after_epochs: int | None = None, history: Path | None = None,
             timeout: float = 120) -> tuple[int, str]:
    """``torchrun --standalone --nproc_per_node 2 tools/train.py ARGS`` on a free port -> (exit code, output).
    With ``interrupt_after_epochs``: SIGINT (Ctrl-C) to torchrun once ``history`` has that many epochs.
    A hang is killed (with the workers) after ``timeout`` seconds and fails the test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "tools/train.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        if interrupt_after_epochs is not None:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if history.is_file() and len(history.read_text().splitlines()) > interrupt_after_epochs:
                    proc.send_signal(signal.SIGINT)
                    break
                time.sleep(0.01)
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun {' '.join(args)} hung for {timeout} s:\n{output[-3000:]}")
    return proc.returncode, output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (in this one), and two processes interrupted by Ctrl-C after 2 epochs, then resumed."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "cfg.yaml").write_text(CONFIG)
    single = train(load_config(root / "cfg.yaml"), work_dir=str(root / "single"))
    ddp = root / "ddp"
    code, interrupted = torchrun("--config", str(root / "cfg.yaml"), "--work-dir", str(ddp),
                                 interrupt_after_epochs=2, history=ddp / "history.csv")
    assert (ddp / "last.pt").is_file(), interrupted[-3000:]
    stopped_at = load_checkpoint(ddp / "last.pt")["next_epoch"]
    code_resumed, resumed = torchrun("--resume", str(ddp))
    return {"single": single, "ddp": ddp, "interrupted": (code, interrupted, stopped_at),
            "resumed": (code_resumed, resumed)}


def test_ddp_resumes_after_ctrl_c(runs):
    code, output, stopped_at = runs["interrupted"]
    assert code != 0 and f"interrupted; continue with --resume {runs['ddp']}" in output, output[-3000:]
    assert output.count("interrupted; continue") == 1                  # rank 0 says it for both
    assert 2 <= stopped_at < 8
    code, output = runs["resumed"]
    assert code == 0, output[-3000:]
    assert f"fold 0: resuming at epoch {stopped_at + 1}" in (runs["ddp"] / "train.log").read_text()
    history = (runs["ddp"] / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == [str(e) for e in range(1, 9)]
    assert load_checkpoint(runs["ddp"] / "best.pt")["finished"]


def test_ddp_ranks_hold_identical_weights(runs):
    code, output = runs["resumed"]
    assert code == 0, output[-3000:]
    # both ranks' sha256 of every parameter and buffer, compared after training; a difference raises
    assert "fold 0: all 2 processes hold identical weights (sha256 " in output
    assert output.count("fold 0 epoch 8:") == 1                         # rank 1 logs warnings only


def test_ddp_trains_like_one_process_with_the_same_global_batch(runs, tmp_path):
    single, ddp = runs["single"], runs["ddp"]
    for name in ("best.pt", "last.pt"):
        a, b = load_checkpoint(single / name), load_checkpoint(ddp / name)
        assert a["model"].keys() == b["model"].keys()                  # no module./_orig_mod. prefixes
        for key in a["model"]:
            torch.testing.assert_close(b["model"][key], a["model"][key], rtol=0, atol=TOLERANCE, msg=key)
    a, b = load_checkpoint(single / "best.pt"), load_checkpoint(ddp / "best.pt")
    assert a["best"]["epoch"] == b["best"]["epoch"]
    assert b["val_metrics"] == pytest.approx(a["val_metrics"], abs=TOLERANCE)
    assert b["thresholds"] == pytest.approx(a["thresholds"], abs=TOLERANCE)
    test_single = evaluate(single, "test", tmp_path / "single")["model"]
    test_ddp = evaluate(ddp, "test", tmp_path / "ddp")["model"]
    for key in ("macro_auroc", "macro_f1", "macro_auprc", "hamming_loss"):
        assert test_ddp[key] == pytest.approx(test_single[key], abs=TOLERANCE), key
    assert test_single["macro_auroc"] > 0.6                            # it learned something to compare


def test_sync_batchnorm_is_plain_batchnorm_for_every_model_on_fixed_windows():
    """``train.sync_bn`` converts every BatchNorm (the masked ones too) to SyncBatchNorm, which has no
    lengths argument: fixed windows never pass lengths, so each model must compute what it did, with
    the same state dict keys (outside a process group SyncBatchNorm is plain BatchNorm)."""
    import copy

    import ecgnet.models  # noqa: F401  (registers every backbone)
    from ecgnet.registry import MODELS
    x = torch.randn(4, 3, 400, generator=torch.Generator().manual_seed(0))
    for name in MODELS.names():
        torch.manual_seed(0)
        model = MODELS.get(name, "model")(in_leads=3, num_classes=4)
        synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()), name
        assert synced.state_dict().keys() == model.state_dict().keys(), name
        for mode in (True, False):
            model.train(mode), synced.train(mode)
            outputs = []
            for m in (model, synced):
                torch.manual_seed(1)                                        # the same dropout draws
                outputs.append(m(x))
            torch.testing.assert_close(outputs[1], outputs[0], msg=f"{name} training={mode}")
