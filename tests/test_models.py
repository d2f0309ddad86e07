"""Every registered model: output shapes, fitting a tiny batch, eval determinism, config errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ecgnet.models import MODELS
from ecgnet.models.layers import SamePadConv1d
from ecgnet.registry import ConfigError

# Small settings per family keep each test to a few seconds on a 2-core CPU; a family missing here
# is tested at its defaults (slower, but never skipped).
SMALL = {
    "cnn1d": {"widths": [16, 32, 32], "hidden": 32},
    "resnet1d": {"base_width": 8, "num_blocks": 4, "widen_every": 2, "kernel_size": 8},
    "se_resnet1d": {"widths": [8, 8, 16, 16], "kernel_size": 7, "se_reduction": 4, "hidden": 16},
    "se_attention1d": {"widths": [8, 8, 16, 16], "kernel_size": 7, "se_reduction": 4, "attention_dim": 8,
                       "hidden": 16},
    "xresnet1d101": {"blocks": [1, 1, 1], "widths": [8, 8, 8], "stem_widths": [8, 8, 16], "hidden": 16},
    "xresnet1d50": {"blocks": [1, 1], "widths": [8, 16], "stem_widths": [8, 8, 16], "hidden": 16},
    "inception1d": {"kernel_size": 8, "depth": 3, "filters": 4, "bottleneck": 4, "hidden": 16},
    "resnet1d_wang": {"widths": [8, 16, 16], "hidden": 16},
}
NAMES = MODELS.names()


def build(name: str, in_leads: int = 12, num_classes: int = 5, **settings) -> nn.Module:
    cfg = {"type": name, **SMALL.get(name, {}), **settings}
    return MODELS.build(cfg, "model", in_leads=in_leads, num_classes=num_classes)


def test_families_are_registered():
    assert {"cnn1d", "resnet1d", "se_resnet1d", "se_attention1d"} <= set(NAMES)


def test_attention_weights_are_a_distribution_over_time():
    model = build("se_attention1d").eval()
    weights = model.attention(torch.randn(3, 12, 400))
    assert weights.shape == (3, 50)                  # 400 samples / 8 (strided stem + 2 strided blocks)
    assert torch.allclose(weights.sum(1), torch.ones(3)) and (weights >= 0).all()


@pytest.mark.parametrize("kernel_size", [1, 3, 15, 16])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("length", [1, 7, 16, 187, 1000, 1001])
def test_same_pad_conv_length(kernel_size, stride, length):
    conv = SamePadConv1d(2, 3, kernel_size, stride)
    assert conv(torch.randn(1, 2, length)).shape == (1, 3, -(-length // stride))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_leads", [1, 12])
def test_output_shape(name, in_leads):
    torch.manual_seed(0)
    model = build(name, in_leads=in_leads, num_classes=5).eval()
    for length in (187, 1000, 1001, 7):
        with torch.no_grad():
            logits = model(torch.randn(3, in_leads, length))
        assert logits.shape == (3, 5), (name, length)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_defaults_build_and_run(name):
    model = MODELS.build({"type": name}, "model", in_leads=12, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 12, 1001)).shape == (2, 5)


@pytest.mark.parametrize("name", NAMES)
def test_overfits_tiny_batch(name):
    """Gradients reach every layer well enough to memorise 8 random signals with random labels."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 12, 256), torch.randint(0, 4, (8,))
    model = build(name, num_classes=4, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()   # BN running statistics have converged to the batch's after 100 steps
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    assert accuracy == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic(name):
    torch.manual_seed(0)
    model = build(name, dropout=0.5)
    x = torch.randn(4, 12, 300)
    model.train()
    with torch.no_grad():
        model(x)   # update BN running statistics once so eval differs from a fresh model
    model.eval()
    buffers = [b.clone() for b in model.buffers()]
    with torch.no_grad():
        first, second = model(x), model(x)
        alone = model(x[:1])
    assert torch.equal(first, second)
    assert torch.allclose(first[:1], alone, atol=1e-5), "eval output depends on the rest of the batch"
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers())), "eval changed BN statistics"
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x), first), "train mode should use dropout and batch statistics"


@pytest.mark.parametrize("name", NAMES)
def test_misspelt_setting_suggests_the_right_one(name):
    with pytest.raises(ConfigError, match=r"dropuot.*did you mean 'dropout'"):
        build(name, dropuot=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_settings_from_data_are_rejected(name):
    with pytest.raises(ConfigError, match="set from the data"):
        MODELS.build({"type": name, "num_classes": 3}, "model", in_leads=12, num_classes=5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [{"dropout": "high"}, {"dropout": 1.5}, {"kernel_size": 0}])
def test_bad_values_raise_config_error(name, bad):
    with pytest.raises(ConfigError):
        build(name, **bad)


@pytest.mark.parametrize("name", ["cnn1d", "se_resnet1d"])
@pytest.mark.parametrize("widths", [[], [16, "x"], [16, 0], 16])
def test_bad_widths_raise_config_error(name, widths):
    with pytest.raises(ConfigError, match="widths"):
        build(name, widths=widths)


def test_cosine_classifier_scores_are_scaled_cosines_and_it_trains(tmp_path):
    from pathlib import Path
    REPO = Path(__file__).resolve().parents[1]
    from ecgnet.build import build_model, resolve_config
    from ecgnet.config import load_config
    from ecgnet.engine.checkpoint import load_checkpoint
    from ecgnet.engine.evaluate import evaluate
    from ecgnet.engine.run import train
    from ecgnet.models import CosineClassifier
    from ecgnet.registry import ConfigError
    cfg = resolve_config(load_config(REPO / "cfgs/demo.yaml", ["classifier.type=cosine", "classifier.embed_dim=16",
                                                                 "classifier.scale=10"]))
    model = build_model(cfg, 12, 6).eval()
    assert isinstance(model, CosineClassifier) and model.weight.shape == (6, 16)
    with torch.no_grad():
        logits = model(torch.randn(4, 12, 250))
    assert logits.shape == (4, 6) and float(logits.abs().max()) <= 10 + 1e-4      # |scale x cosine| <= scale
    with pytest.raises(ConfigError, match="classifier.type: cosine does not take per-record features"):
        build_model(cfg, 12, 6, ["pre_rr_s"])
    # end to end: trained, saved, rebuilt from the checkpoint by evaluate
    run = train(load_config(REPO / "cfgs/demo.yaml", ["classifier.type=cosine", "data.num_records=120",
                                                       "train.epochs=2", "schedule.warmup_epochs=0",
                                                       "schedule.cooldown_epochs=1", "train.tensorboard=false",
                                                       "eval.plots=false", "eval.bootstrap=0"]),
                work_dir=str(tmp_path / "cos"))
    assert "weight" in load_checkpoint(run / "best.pt")["model"]
    assert 0 <= evaluate(run, "test", tmp_path / "report")["model"]["macro_auroc"] <= 1
