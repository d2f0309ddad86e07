"""Variable-length batches: with ``lengths`` every model ignores the zero padding at the end of a row,
so a record's logits, training statistics and gradients do not depend on its batch-mates."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ecgnet.models import MODELS, accepts_lengths
from ecgnet.models.layers import MaskedBatchNorm1d, MaskedMaxPool1d, shrink_lengths

SMALL = {
    "cnn1d": {"widths": [8, 16], "kernel_size": 4, "hidden": 8},
    "resnet1d": {"base_width": 8, "num_blocks": 4, "widen_every": 2, "kernel_size": 8},
    "se_resnet1d": {"widths": [8, 8, 16, 16], "kernel_size": 7, "se_reduction": 4, "hidden": 8},
    "se_attention1d": {"widths": [8, 8, 16, 16], "kernel_size": 7, "se_reduction": 4, "attention_dim": 8,
                       "hidden": 8},
    "xresnet1d101": {"blocks": [1, 1, 1], "widths": [8, 8, 8], "stem_widths": [8, 8, 16], "hidden": 16},
    "xresnet1d50": {"blocks": [1, 1], "widths": [8, 16], "stem_widths": [8, 8, 16], "hidden": 16},
    "inception1d": {"kernel_size": 8, "depth": 3, "filters": 4, "bottleneck": 4, "hidden": 16},
    "resnet1d_wang": {"widths": [8, 16, 16], "hidden": 16},
}
NAMES = MODELS.names()
LEADS = 3
TOL = {"atol": 1e-5, "rtol": 1e-5}


def build(name: str, **settings) -> nn.Module:
    """A small model whose BN layers have random running statistics and affine parameters, so that
    padding would shift the SE and pooling averages noticeably (a fresh model's barely move)."""
    torch.manual_seed(0)
    model = MODELS.build({"type": name, **SMALL.get(name, {}), **settings}, "model",
                         in_leads=LEADS, num_classes=4)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.5)
    return model


def padded(records: list[torch.Tensor], fill: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(leads, L_i)`` records, padding at the end with zeros or large garbage."""
    lengths = torch.tensor([r.shape[-1] for r in records])
    x = 1e3 * torch.randn(len(records), LEADS, int(lengths.max())) if fill == "garbage" \
        else torch.zeros(len(records), LEADS, int(lengths.max()))
    for i, r in enumerate(records):
        x[i, :, :r.shape[-1]] = r
    return x, lengths


@pytest.mark.parametrize("name", NAMES)
def test_record_alone_equals_record_in_a_padded_batch(name):
    model = build(name).eval()
    torch.manual_seed(1)
    # odd lengths, lengths not a multiple of the total stride (4 or 8 here), a multiple of it,
    # a record shorter than the stride, and all rows of equal length
    for short, others in [(37, (300, 251)), (101, (300, 173)), (64, (300, 255)), (5, (300, 299)),
                          (160, (160, 160))]:
        records = [torch.randn(LEADS, n) for n in (short, *others)]
        x, lengths = padded(records)
        with torch.no_grad():
            batch = model(x, lengths)
            for i, r in enumerate(records):
                torch.testing.assert_close(batch[i], model(r[None])[0], **TOL, msg=f"{name} L={r.shape[-1]}")


def test_attention_weights_ignore_the_padding():
    model = build("se_attention1d").eval()
    short, long = torch.randn(LEADS, 101), torch.randn(LEADS, 400)
    x, lengths = padded([short, long])
    weights = model.attention(x, lengths)
    steps = int(shrink_lengths(torch.tensor(101), 8))
    assert torch.equal(weights[0, steps:], torch.zeros(weights.shape[1] - steps))
    torch.testing.assert_close(weights[0, :steps], model.attention(short[None])[0], **TOL)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))


@pytest.mark.parametrize("name", NAMES)
def test_padding_content_does_not_matter(name):
    """Zeros, garbage or extra garbage in the padding: same eval logits, and in training the same
    outputs, BN running statistics and gradients."""
    torch.manual_seed(2)
    records = [torch.randn(LEADS, n) for n in (57, 300, 133, 211)]
    x_zero, lengths = padded(records)
    x_junk, _ = padded(records, fill="garbage")
    x_longer = torch.cat([x_junk, 1e3 * torch.randn(len(records), LEADS, 37)], dim=-1)
    model = build(name, dropout=0.0)
    weights = torch.randn(len(records), 4)

    model.eval()
    with torch.no_grad():
        expected = model(x_zero, lengths)
        for x in (x_junk, x_longer):
            torch.testing.assert_close(model(x, lengths), expected, **TOL)

    runs = []
    for x in (x_zero, x_junk, x_longer):
        m = copy.deepcopy(model).train()
        out = m(x, lengths)
        (out * weights).sum().backward()
        runs.append((out.detach(), dict(m.named_buffers()), {k: p.grad for k, p in m.named_parameters()}))
    out0, buf0, grad0 = runs[0]
    # the longer input sums in another order: fp32 rounding relative to each tensor's scale, which the
    # benchmark models' BN head over 4 rows amplifies (their gradients reach ~20)
    for (out1, buf1, grad1), rel in zip(runs[1:], (1e-5, 1e-4)):
        def close(a, b, msg=""):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=rel * max(1.0, float(b.abs().max())), msg=msg)
        close(out1, out0)
        for key in buf0:
            close(buf1[key], buf0[key], key)
        for key in grad0:
            assert torch.isfinite(grad1[key]).all(), key
            close(grad1[key], grad0[key], key)


@pytest.mark.parametrize("momentum", [0.3, None])
def test_masked_batchnorm_statistics_come_from_real_samples_only(momentum):
    torch.manual_seed(3)
    records = [torch.randn(LEADS, n) * 3 + 1 for n in (7, 20, 13)]
    masked, plain = MaskedBatchNorm1d(LEADS, momentum=momentum), nn.BatchNorm1d(LEADS, momentum=momentum)
    with torch.no_grad():
        masked.weight.uniform_(0.5, 2)
        masked.bias.normal_()
    plain.load_state_dict(masked.state_dict())
    for step in range(3):
        x, lengths = padded([r + step for r in records], fill="garbage")
        x.requires_grad_(True)
        concat = torch.cat([r + step for r in records], dim=1)[None].requires_grad_(True)
        y_masked, y_plain = masked(x, lengths), plain(concat)
        pieces = torch.split(y_plain[0], lengths.tolist(), dim=1)
        for i, piece in enumerate(pieces):
            torch.testing.assert_close(y_masked[i, :, :lengths[i]], piece, atol=1e-5, rtol=1e-5)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(masked, name), getattr(plain, name), atol=1e-6, rtol=1e-6)
        # the same loss on the real samples gives the same gradients
        w = torch.randn_like(concat)
        wp = torch.zeros_like(x)
        for i, piece in enumerate(torch.split(w[0], lengths.tolist(), dim=1)):
            wp[i, :, :lengths[i]] = piece
        masked.zero_grad(), plain.zero_grad()
        (y_masked * wp).sum().backward()
        (y_plain * w).sum().backward()
        torch.testing.assert_close(masked.weight.grad, plain.weight.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(masked.bias.grad, plain.bias.grad, atol=1e-5, rtol=1e-5)
        for i, piece in enumerate(torch.split(concat.grad[0], lengths.tolist(), dim=1)):
            torch.testing.assert_close(x.grad[i, :, :lengths[i]], piece, atol=1e-5, rtol=1e-5)
        assert torch.equal(x.grad[0, :, lengths[0]:], torch.zeros(LEADS, int(lengths.max() - lengths[0])))
    masked.eval(), plain.eval()   # eval: the running statistics, padding irrelevant
    x, lengths = padded(records)
    torch.testing.assert_close(masked(x, lengths), plain(x))


def test_masked_max_pool_never_picks_the_padding():
    x = (-1 - torch.rand(2, 3, 9)).requires_grad_()   # all real values negative, padding is 0
    lengths = torch.tensor([5, 9])
    pool = MaskedMaxPool1d(2)
    out = pool(x.masked_fill(torch.arange(9) >= lengths[:, None, None], 0), lengths)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out[0, :, :3], nn.MaxPool1d(2, ceil_mode=True)(x[:1, :, :5])[0])
    assert torch.equal(out[0, :, 3:], torch.zeros(3, 2))            # zero again past ceil(5 / 2)
    torch.testing.assert_close(out[1], nn.MaxPool1d(2, ceil_mode=True)(x[1:])[0])
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.equal(x.grad[0, :, 5:], torch.zeros(3, 4))


@pytest.mark.parametrize("name", NAMES)
def test_no_lengths_equals_full_lengths(name):
    model = build(name, dropout=0.0)
    x = torch.randn(3, LEADS, 203)
    full = torch.full((3,), 203)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x, full), model(x), **TOL)
        train = copy.deepcopy(model).train()
        torch.testing.assert_close(train(x, full), model.train()(x), **TOL)
    for key, value in train.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key], **TOL, msg=key)


def test_accepts_lengths():
    class Plain(nn.Module):
        def forward(self, x):
            return x

    for name in NAMES:
        assert accepts_lengths(MODELS.build({"type": name, **SMALL.get(name, {})}, "model", in_leads=1,
                                            num_classes=2)), name
    assert not accepts_lengths(Plain())


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_with_lengths(name):
    model = build(name)
    torch.manual_seed(4)
    x, lengths = padded([torch.randn(LEADS, n) for n in (45, 190, 120)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.train()(x, lengths)
        out.float().sum().backward()
        with torch.no_grad():
            logits = model.eval()(x, lengths)
    for y in (out, logits):
        assert y.shape == (3, 4) and torch.isfinite(y.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_masked_batchnorm_after_a_plain_call_in_the_same_graph_still_backpropagates():
    from ecgnet.models.layers import MaskedBatchNorm1d
    bn = MaskedBatchNorm1d(4).train()
    x = torch.randn(3, 4, 20, requires_grad=True)
    out = bn(x).sum() + (bn(x, torch.tensor([20, 10, 5])) ** 2).sum()
    out.backward()                       # raised "modified by an inplace operation" before
    assert torch.isfinite(x.grad).all() and int(bn.num_batches_tracked) == 2
