"""Losses against hand-computed values."""
import math

import pytest
import torch

from ecgnet.build import build
from ecgnet.losses import balance_weights
from ecgnet.registry import ConfigError


def make(loss_cfg, multilabel=True, counts=(10, 5, 2)):
    return build("loss", {"loss": loss_cfg}, multilabel=multilabel, class_counts=list(counts))


def bce(z, y):   # by hand
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.5, -2.0]])
TARGETS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_bce_matches_hand_computation():
    expected = sum(bce(z, y) for z, y in zip(LOGITS.flatten().tolist(), TARGETS.flatten().tolist())) / 6
    assert make({"type": "bce"})(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_bce_auto_pos_weight_is_nmax_over_ni():
    loss = make({"type": "weighted_bce", "pos_weight": "auto"}, counts=(10, 5, 2))
    assert loss.pos_weight.tolist() == pytest.approx([1.0, 2.0, 5.0])
    w = [1.0, 2.0, 5.0]
    expected = 0.0
    for row_z, row_y in zip(LOGITS.tolist(), TARGETS.tolist()):
        for c, (z, y) in enumerate(zip(row_z, row_y)):
            p = 1 / (1 + math.exp(-z))
            expected += -(w[c] * y * math.log(p) + (1 - y) * math.log(1 - p))
    assert loss(LOGITS, TARGETS).item() == pytest.approx(expected / 6, rel=1e-6)


def test_weighted_bce_explicit_list_and_wrong_length():
    assert make({"type": "weighted_bce", "pos_weight": [1, 1, 3]}).pos_weight.tolist() == [1, 1, 3]
    with pytest.raises(ConfigError, match="3 weights for 2 classes|2 weights for 3 classes"):
        make({"type": "weighted_bce", "pos_weight": [1, 2]})


def test_focal_gamma0_without_alpha_equals_bce():
    focal = make({"type": "focal", "gamma": 0.0, "alpha": None})
    assert focal(LOGITS, TARGETS).item() == pytest.approx(make({"type": "bce"})(LOGITS, TARGETS).item(), rel=1e-6)


def test_focal_sigmoid_by_hand():
    z, y, gamma, alpha = 1.2, 1.0, 2.0, 0.25
    p = 1 / (1 + math.exp(-z))
    expected_pos = -alpha * (1 - p) ** gamma * math.log(p)
    expected_neg = -(1 - alpha) * p ** gamma * math.log(1 - p)   # same logit, negative target
    focal = make({"type": "focal"}, counts=(1,))
    got = focal(torch.tensor([[z], [z]]), torch.tensor([[y], [0.0]])).item()
    assert got == pytest.approx((expected_pos + expected_neg) / 2, rel=1e-6)


def test_focal_down_weights_easy_examples():
    focal = make({"type": "focal", "alpha": None}, counts=(1,))
    plain = make({"type": "bce"}, counts=(1,))
    easy = (torch.tensor([[4.0]]), torch.tensor([[1.0]]))
    hard = (torch.tensor([[-1.0]]), torch.tensor([[1.0]]))
    assert focal(*easy) / plain(*easy) < 0.01 < focal(*hard) / plain(*hard)


def test_softmax_focal_gamma0_is_ce_and_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.3, -0.2, 1.1]])
    target = torch.tensor([1, 2])
    ce = make({"type": "ce"}, multilabel=False)(logits, target).item()
    assert make({"type": "focal", "gamma": 0.0, "alpha": None}, multilabel=False)(logits, target).item() == pytest.approx(ce)
    p = torch.softmax(logits, 1)[[0, 1], target]
    expected = (-(0.25) * (1 - p) ** 2 * torch.log(p)).mean().item()
    assert make({"type": "focal"}, multilabel=False)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_auto():
    loss = make({"type": "weighted_ce"}, multilabel=False, counts=(8, 4, 2))
    assert loss.weight.tolist() == pytest.approx([1.0, 2.0, 4.0])
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    # one example of class 2: weighted mean = w * ce / w = ln 3
    assert loss(logits, torch.tensor([2])).item() == pytest.approx(math.log(3))


def test_task_type_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="'ce' does not fit a multi-label task"):
        make({"type": "ce"}, multilabel=True)
    with pytest.raises(ConfigError, match="'bce' does not fit a single-label task"):
        make({"type": "bce"}, multilabel=False)


def test_balance_weights_handles_empty_class():
    assert balance_weights([4, 0, 2]) == [1.0, 1.0, 2.0]


def test_cosface_margin_lowers_only_the_true_class_logit():
    from pathlib import Path
    from ecgnet.build import build_loss, resolve_config
    from ecgnet.config import load_config
    demo = Path(__file__).resolve().parents[1] / "cfgs/demo.yaml"
    cfg = resolve_config(load_config(demo, ["loss.type=ce", "classifier.type=cosine", "classifier.scale=30",
                                            "classifier.margin=0.2"]))
    loss = build_loss(cfg, multilabel=False, class_counts=[5, 5, 5])
    logits, targets = torch.tensor([[6.0, 3.0, -3.0], [0.0, 9.0, 1.0]]), torch.tensor([0, 2])
    shifted = logits - 30 * 0.2 * torch.nn.functional.one_hot(targets, 3)     # 6 off each true class's logit
    expected = torch.nn.functional.cross_entropy(shifted, targets)
    assert float(loss(logits, targets)) == pytest.approx(float(expected))
    assert float(loss(logits, targets)) > float(torch.nn.functional.cross_entropy(logits, targets))
    # margin 0 is the plain loss; a margin needs the cosine classifier and one true class per record
    plain = build_loss(resolve_config(load_config(demo, ["loss.type=ce", "classifier.type=cosine"])), False, [5, 5, 5])
    assert float(plain(logits, targets)) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)))
    with pytest.raises(ConfigError, match="classifier.margin: 0.2 is CosFace's margin"):
        resolve_config(load_config(demo, ["loss.type=ce", "classifier.margin=0.2"]))
    with pytest.raises(ConfigError, match="needs a single-label task"):
        build_loss(resolve_config(load_config(demo, ["classifier.type=cosine", "classifier.margin=0.2"])), True, [5, 5, 5])
    with pytest.raises(ConfigError, match="classifier.margin"):
        resolve_config(load_config(demo, ["classifier.type=cosine", "classifier.margin=1.5"]))
