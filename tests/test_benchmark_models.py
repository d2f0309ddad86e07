"""The PTB-XL benchmark's models (xresnet1d101/50, inception1d, resnet1d_wang; Strodthoff et al. 2021):
the benchmark's parameter counts and downsampling, masking of zero-padded batches at the benchmark's
sizes, their configs, bf16 training steps."""
from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from ecgnet.build import build, resolve_config
from ecgnet.config import load_config
from ecgnet.models import MODELS, accepts_lengths
from ecgnet.models.layers import MaskedAvgPool1d, MaskedGlobalMaxPool1d, SamePadMaxPool1d
from ecgnet.models.xresnet1d import FeatureBatchNorm1d, MaskedConcatPool1d
from ecgnet.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]
NAMES = ["xresnet1d101", "xresnet1d50", "inception1d", "resnet1d_wang"]
LEADS, CLASSES = 12, 5

# Parameter counts at 12 leads and 5 classes of the benchmark's own modules, built as their fastai_model.py
# builds them (kernel_size=5, so inception1d gets 8 * 5 = 40; lin_ftrs_head=[128], ps_head=0.5), from
# github.com/helme/ecg_ptbxl_benchmarking at commit cdbf4e6 (code/models/{xresnet1d,inception1d,resnet1d,
# basic_conv1d}.py, with fastai v1's bn_drop_lin, Flatten and listify written out by hand, fastai v1 not being
# installed). The hand counts below, from the architecture, give the same numbers.
BENCHMARK_PARAMETERS = {"xresnet1d101": 1_872_261, "xresnet1d50": 953_989, "inception1d": 507_653,
                        "resnet1d_wang": 473_349}


def conv_bn(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k + 2 * c_out            # bias-free conv, BN weight and bias


def head(channels: int, hidden: int = 128) -> int:
    """concat pool -> BN(2C) -> Linear(2C, 128) -> ReLU -> BN(128) -> Linear(128, classes)"""
    return 2 * 2 * channels + (2 * channels * hidden + hidden) + 2 * hidden + (hidden * CLASSES + CLASSES)


def xresnet_by_hand(blocks: list[int]) -> int:
    n = conv_bn(LEADS, 32, 5) + conv_bn(32, 32, 5) + conv_bn(32, 64, 5)       # stem
    channels = 64
    for count in blocks:                                                    # 64 hidden, 256 out in every stage
        for _ in range(count):
            n += conv_bn(channels, 64, 1) + conv_bn(64, 64, 5) + conv_bn(64, 256, 1)
            n += conv_bn(channels, 256, 1) if channels != 256 else 0           # projection, first block only
            channels = 256
    return n + head(256)


def inception_by_hand(depth: int = 6) -> int:
    n = 0
    for d in range(depth):
        c_in = LEADS if d == 0 else 128
        # 1x1 bottleneck to 32, convs of k = 39, 19, 9 from 32 to 32, max-pool branch 1x1 to 32, BN(128)
        n += c_in * 32 + 32 * 32 * (39 + 19 + 9) + c_in * 32 + 2 * 128
    return n + conv_bn(LEADS, 128, 1) + conv_bn(128, 128, 1) + head(128)      # shortcuts around blocks 1-3, 4-6


def wang_by_hand() -> int:
    n = conv_bn(LEADS, 128, 7)
    for i in range(3):
        n += conv_bn(128, 128, 5) + conv_bn(128, 128, 3) + (conv_bn(128, 128, 1) if i else 0)
    return n + head(128)


BY_HAND = {"xresnet1d101": xresnet_by_hand([3, 4, 23, 3]), "xresnet1d50": xresnet_by_hand([3, 4, 6, 3]),
           "inception1d": inception_by_hand(), "resnet1d_wang": wang_by_hand()}


def make(name: str, **settings) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build({"type": name, **settings}, "model", in_leads=LEADS, num_classes=CLASSES)


def calibrated(model: nn.Module) -> nn.Module:
    """BN running statistics averaged over two training batches, as after some training (a fresh
    xresnet1d101 in eval mode adds up 33 un-normalised residual branches: logits ~1e7)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    torch.manual_seed(5)
    with torch.no_grad():
        for _ in range(2):
            model.train()(torch.randn(8, LEADS, 250, dtype=next(model.parameters()).dtype))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    return model.eval()


def padded(records: list[torch.Tensor], fill: str = "zeros", extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(leads, L_i)`` records, padded at the end with zeros or 1e3-scale garbage, ``extra``
    samples longer than the longest record."""
    lengths = torch.tensor([r.shape[-1] for r in records])
    shape = (len(records), LEADS, int(lengths.max()) + extra)
    x = 1e3 * torch.randn(shape) if fill == "garbage" else torch.zeros(shape)
    x = x.to(records[0].dtype)
    for i, r in enumerate(records):
        x[i, :, :r.shape[-1]] = r
    return x, lengths


def close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float, msg: str = "") -> None:
    """Equal up to ``rel`` times the largest magnitude of ``expected`` (fp32 sums taken over another
    padded length round differently, by amounts relative to the tensor's scale, not each element's)."""
    actual, expected = actual.double(), expected.double()
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * float(expected.abs().max()) + 1e-12, msg=msg)


def train_runs(model: nn.Module, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple]:
    """(logits, buffers, gradients) of one training step of a copy of ``model`` per (x, lengths)."""
    weights = torch.randn(len(inputs[0][1]), CLASSES)
    runs = []
    for x, lengths in inputs:
        m = copy.deepcopy(model).train()
        out = m(x, lengths)
        (out * weights).sum().backward()
        runs.append((out.detach(), dict(m.named_buffers()), {k: p.grad for k, p in m.named_parameters()}))
    return runs


def assert_same_runs(runs: list[tuple], rel: float) -> None:
    (out0, buffers0, grads0), *others = runs
    for out, buffers, grads in others:
        close_to_scale(out, out0, rel, "logits")
        for key, value in buffers.items():
            close_to_scale(value, buffers0[key], rel, key)
        for key, value in grads.items():
            assert torch.isfinite(value).all(), key
            close_to_scale(value, grads0[key], rel, key)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_the_benchmark(name):
    count = sum(p.numel() for p in make(name).parameters())
    assert BY_HAND[name] == BENCHMARK_PARAMETERS[name]
    assert count == BENCHMARK_PARAMETERS[name], (name, count)


@pytest.mark.parametrize("name, samples, steps", [("xresnet1d101", 250, 8), ("xresnet1d101", 1000, 32),
                                                  ("inception1d", 250, 250), ("resnet1d_wang", 250, 63)])
def test_downsampling_and_widths_as_the_benchmark(name, samples, steps):
    """xresnet: stride 2 stem conv, max pool, 3 strided stages (32x), 256 channels; inception: no
    striding, 128 channels, kernels 39/19/9; resnet1d_wang: 2 strided blocks (4x), 128 channels."""
    model = make(name).eval()
    features = {}
    model.head.register_forward_hook(lambda m, args, out: features.setdefault("x", args[0]))
    with torch.no_grad():
        model(torch.randn(1, LEADS, samples))
    channels = {"xresnet1d101": 256, "inception1d": 128, "resnet1d_wang": 128}[name]
    assert features["x"].shape == (1, channels, steps)
    if name == "inception1d":
        assert [conv.kernel_size[0] for conv in model.blocks[0].convs] == [39, 19, 9]


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name):
    model = make(name)
    for samples in (250, 1000, 9):
        for train in (True, False):
            with torch.no_grad():
                logits = model.train(train)(torch.randn(2, LEADS, samples))
            assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all(), (name, samples, train)


@pytest.mark.parametrize("name", NAMES)
def test_a_record_scores_the_same_alone_and_in_a_padded_batch(name):
    """Eval logits at the benchmark's sizes, in float64: in fp32 plain torch itself (no padding) gives
    a record alone and in a batch of 4 logits 5e-4 apart for xresnet1d101 (1e-4 for xresnet1d50)."""
    model = calibrated(make(name).double())
    torch.manual_seed(1)
    records = [torch.randn(LEADS, n, dtype=torch.float64) for n in (250, 1000, 613, 251, 9)]
    x, lengths = padded(records)
    with torch.no_grad():
        batch = model(x, lengths)
        for i, record in enumerate(records):
            torch.testing.assert_close(batch[i], model(record[None])[0], atol=1e-9, rtol=1e-9,
                                       msg=f"{name} L={record.shape[-1]}")
        torch.testing.assert_close(model(x, torch.full((5,), 1000)), model(x), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_padding_content_does_not_change_training(name):
    """Zeros or 1e3-scale garbage in the padding give the same training outputs, BN running statistics
    and gradients (bit-identical on the development CPU; checked to 1e-6 of each tensor's scale)."""
    model = make(name, dropout=0.0)
    torch.manual_seed(2)
    records = [torch.randn(LEADS, n) for n in (57, 300, 133, 211)]
    assert_same_runs(train_runs(model, [padded(records), padded(records, "garbage")]), rel=1e-6)


# Shallower versions of each family for the checks below, which compare fp32 sums over different
# padded lengths: at the benchmark's size (xresnet1d101: 33 blocks, no zero-initialised residual
# branches) the rounding grows to ~2e-4 of the training logits. The blocks and their masking are the same.
SHALLOW = {"xresnet1d101": {"blocks": [1, 1, 1, 1]}, "xresnet1d50": {"blocks": [2, 1], "widths": [64, 64]},
           "inception1d": {"depth": 3}, "resnet1d_wang": {}}


@pytest.mark.parametrize("name", NAMES)
def test_a_longer_padding_does_not_change_training(name):
    model = make(name, dropout=0.0, **SHALLOW[name])
    torch.manual_seed(2)
    records = [torch.randn(LEADS, n) for n in (57, 300, 133, 211)]
    # a leak of the garbage would move things by O(1) or more; 1e-3 of the scale is rounding
    assert_same_runs(train_runs(model, [padded(records), padded(records, "garbage", extra=37)]), rel=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_full_lengths_train_as_no_lengths(name):
    model = make(name, dropout=0.0, **SHALLOW[name])
    x = torch.randn(3, LEADS, 250)
    a, b = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    with torch.no_grad():
        close_to_scale(a(x, torch.full((3,), 250)), b(x), 1e-4)
    for key, value in a.state_dict().items():
        close_to_scale(value, b.state_dict()[key], 1e-4, key)


def test_masked_pools_match_torch_on_the_real_samples():
    torch.manual_seed(3)
    lengths = torch.tensor([5, 9, 1])
    real = [-1 - torch.rand(1, 2, n) for n in lengths.tolist()]     # negative, so a zero pad would win a max
    x = torch.zeros(3, 2, 9)
    for i, r in enumerate(real):
        x[i, :, :r.shape[-1]] = r
    cases = [(MaskedAvgPool1d(2), nn.AvgPool1d(2, ceil_mode=True)),
             (SamePadMaxPool1d(3, 2), nn.MaxPool1d(3, 2, padding=1)),
             (SamePadMaxPool1d(3, 1), nn.MaxPool1d(3, 1, padding=1)),
             (MaskedGlobalMaxPool1d(), nn.AdaptiveMaxPool1d(1))]
    for masked, plain in cases:
        out = masked(x, lengths)
        torch.testing.assert_close(masked(x), plain(x))            # no lengths: the plain layer
        for i, r in enumerate(real):
            expected = plain(r)[0]
            torch.testing.assert_close(out[i, :, :expected.shape[-1]], expected, msg=repr(masked))
            assert torch.isfinite(out[i]).all()
    # fastai's AdaptiveConcatPool1d order, [max, average], so the head's weights line up with theirs
    pooled = MaskedConcatPool1d()(x, lengths)
    torch.testing.assert_close(pooled[:, :2], MaskedGlobalMaxPool1d()(x, lengths))
    torch.testing.assert_close(pooled[2, 2:], real[2][0].mean(-1, keepdim=True))


def test_all_accept_lengths():
    assert all(accepts_lengths(make(name)) for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_base_config_resolves_and_builds_the_benchmark_model(name, tmp_path):
    base = REPO / "cfgs" / "_base_"
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent(f"""
        _base_: [{base / 'data' / 'ptbxl.yaml'}, {base / 'models' / f'{name}.yaml'}]
        loss: {{type: bce}}
    """))
    cfg = resolve_config(load_config(path))
    model = build("model", cfg, in_leads=LEADS, num_classes=CLASSES)
    assert cfg["model"]["type"] == name
    assert sum(p.numel() for p in model.parameters()) == BENCHMARK_PARAMETERS[name]


PTBXL_CONFIGS = [p for p in sorted((REPO / "cfgs" / "ptbxl").glob("*.yaml")) if p.stem.rsplit("_", 1)[0] in NAMES]


def test_ptbxl_configs_cover_the_benchmark_models():
    tasks = ("all", "diagnostic", "form", "rhythm", "subdiagnostic", "superdiagnostic")
    assert [p.stem for p in PTBXL_CONFIGS] == [
        "inception1d_form", "inception1d_superdiagnostic", *[f"resnet1d_wang_{task}" for task in tasks],
        *[f"xresnet1d101_{task}" for task in tasks]]


@pytest.mark.parametrize("path", PTBXL_CONFIGS, ids=lambda p: p.stem)
def test_ptbxl_configs_name_their_model_and_task(path):
    model, task = path.stem.rsplit("_", 1)
    cfg = resolve_config(load_config(path))
    assert (cfg["model"]["type"], cfg["data"]["task"], cfg["name"]) == (model, task, f"ptbxl_{path.stem}")
    assert (cfg["optimizer"]["lr"], cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (0.01, 50, 128)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_training_step(name):
    model = make(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(4)
    x, lengths = padded([torch.randn(LEADS, n) for n in (250, 180, 250, 97)])
    y = torch.randint(0, 2, (4, CLASSES)).float()
    for lens in (None, lengths):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model.train()(x, lens)
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad()
        loss.backward()
        assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()


def test_a_one_record_training_batch_uses_running_statistics():
    bn = FeatureBatchNorm1d(4)
    with torch.no_grad():
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
    out = bn.train()(torch.full((1, 4), 3.0))
    torch.testing.assert_close(out, torch.full((1, 4), 1.0), atol=1e-4, rtol=0)   # (3 - 1) / sqrt(4)
    assert torch.equal(bn.running_mean, torch.ones(4)) and int(bn.num_batches_tracked) == 0
    model = make("resnet1d_wang")
    model.train()(torch.randn(1, LEADS, 250)).sum().backward()      # nn.BatchNorm1d would raise here


@pytest.mark.parametrize("name, settings, match", [
    ("xresnet1d101", {"widths": [64, 64]}, "model.widths: .* one entry per stage"),
    ("xresnet1d50", {"blocks": [3, 0, 6, 3]}, "model.blocks: must be a non-empty list of positive integers"),
    ("inception1d", {"depth": 4}, "model.depth: must be a multiple of 3"),
    ("inception1d", {"bottleneck": -1}, "model.bottleneck: must be an integer >= 0"),
    ("inception1d", {"kernel_size": 3}, "model.kernel_size: must be >= 4"),
    ("resnet1d_wang", {"widths": []}, "model.widths: must be a non-empty list"),
    ("resnet1d", {"num_blocks": 0}, "model.num_blocks: must be a positive integer for model 'resnet1d', got 0"),
    ("cnn1d", {"dropout": 1.0}, r"model.dropout: must be in \[0, 1\)"),
])
def test_bad_settings_raise_config_error(name, settings, match):
    """The message starts with the config key a user would edit."""
    with pytest.raises(ConfigError, match="^" + match):
        make(name, **settings)
