"""Schedules, thresholds, ensembles and metrics."""
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from ecgnet.ensemble import majority_vote, mean_probability
from ecgnet.metrics import classification_metrics
from ecgnet.optim import warmup_cooldown
from ecgnet.registry import ConfigError
from ecgnet.thresholds import decide, tune_thresholds


def lr_curve(**kwargs):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = warmup_cooldown(opt, steps_per_epoch=10, epochs=10, **kwargs)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


def test_schedule_warmup_hold_cosine_cooldown():
    lrs = lr_curve(warmup_epochs=2, cooldown_epochs=3, cooldown="cosine", final_lr_ratio=0.0)
    assert lrs[:20] == pytest.approx(np.arange(1, 21) / 20)        # linear warmup over 20 steps
    assert np.all(lrs[20:70] == 1.0)                              # hold
    assert lrs[70] == pytest.approx(1.0)                          # cooldown starts at the top
    assert lrs[85] == pytest.approx(0.5 * (1 + np.cos(np.pi * 15 / 30)))
    assert np.all(np.diff(lrs[70:]) < 0) and lrs[-1] < 0.01


def test_schedule_step_cooldown():
    lrs = lr_curve(warmup_epochs=0, cooldown_epochs=4, cooldown="step", step_gamma=0.1, step_every_epochs=2,
                   final_lr_ratio=0.0)
    assert np.all(lrs[:60] == 1.0)
    assert lrs[60:80] == pytest.approx([0.1] * 20)
    assert lrs[80:] == pytest.approx([0.01] * 20)


def test_schedule_rejects_too_long_warmup():
    with pytest.raises(ConfigError, match="exceed train.epochs"):
        lr_curve(warmup_epochs=6, cooldown_epochs=5)


def test_tuned_thresholds_beat_half_on_skewed_case():
    rng = np.random.default_rng(0)
    n = 2000
    y = (rng.random((n, 2)) < [0.05, 0.5]).astype(int)
    # a calibrated-looking but under-confident model for the rare class: positives score ~0.3
    probs = np.where(y == 1, rng.normal(0.3, 0.08, y.shape), rng.normal(0.1, 0.08, y.shape)).clip(0, 1)
    thresholds = tune_thresholds(y, probs, ["rare", "common"])
    tuned = f1_score(y, decide(probs, thresholds, True), average=None)
    half = f1_score(y, decide(probs, None, True), average=None, zero_division=0)
    assert tuned[0] > half[0] + 0.5
    assert 0.1 < thresholds[0] < 0.3


def test_constant_classes_keep_default_threshold_with_one_warning(caplog):
    y = np.array([[1, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.1, 0.6], [0.1, 0.7, 0.2, 0.6], [0.8, 0.1, 0.3, 0.6]])
    with caplog.at_level("WARNING", logger="ecgnet.thresholds"):
        assert tune_thresholds(y, probs, ["a", "b", "c", "d"], default=0.4)[1:] == [0.4, 0.4, 0.4]
    assert [r.getMessage() for r in caplog.records] == [
        "3 class(es) constant in the validation split keep the threshold 0.40: b, c, d"]


def test_single_label_decisions_are_one_hot_argmax():
    probs = np.array([[0.2, 0.5, 0.3], [0.8, 0.1, 0.1]])
    assert decide(probs, None, False).tolist() == [[0, 1, 0], [1, 0, 0]]
    # thresholds rescale the scores: class 2 needs only 0.2 to count as much as class 1's 0.5
    assert decide(probs, [0.5, 0.5, 0.2], False).tolist() == [[0, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize("votes, expected", [
    ((0, 0, 0), 0), ((1, 0, 0), 0), ((0, 1, 0), 0), ((0, 0, 1), 0),
    ((1, 1, 0), 1), ((1, 0, 1), 1), ((0, 1, 1), 1), ((1, 1, 1), 1),
])
def test_majority_vote_truth_table_three_models(votes, expected):
    decisions = [np.array([[v]]) for v in votes]
    probs = [np.array([[0.9 if v else 0.1]]) for v in votes]
    assert majority_vote(decisions, probs, multilabel=True)[0, 0] == expected


def test_majority_vote_even_tie_uses_mean_probability():
    decisions = [np.array([[1, 1]]), np.array([[0, 0]])]
    probs = [np.array([[0.9, 0.55]]), np.array([[0.3, 0.2]])]
    assert majority_vote(decisions, probs, True).tolist() == [[1, 0]]


def test_majority_vote_tie_is_broken_against_the_folds_mean_tuned_threshold():
    # class 0: mean p 0.35 >= mean threshold 0.3 -> positive (against 0.5 it was negative);
    # class 1: mean p 0.6 < mean threshold 0.7 -> negative (against 0.5 it was positive)
    decisions = [np.array([[1, 1]]), np.array([[0, 0]])]
    probs = [np.array([[0.45, 0.8]]), np.array([[0.25, 0.4]])]
    thresholds = [[0.2, 0.6], [0.4, 0.8]]
    assert majority_vote(decisions, probs, True, thresholds).tolist() == [[1, 0]]
    # the same rule as the mean-probability ensemble on a tie
    assert mean_probability(probs, thresholds, True)[1].tolist() == [[1, 0]]


def test_majority_vote_single_label():
    d = lambda c: np.eye(3, dtype=int)[[c]]
    p = lambda c: np.eye(3)[[c]] * 0.8 + 0.2 / 3
    assert majority_vote([d(2), d(2), d(0)], [p(2), p(2), p(0)], False).tolist() == [[0, 0, 1]]
    # a three-way tie goes to the highest mean probability
    probs = [np.array([[0.5, 0.3, 0.2]]), np.array([[0.1, 0.6, 0.3]]), np.array([[0.1, 0.2, 0.7]])]
    assert majority_vote([d(0), d(1), d(2)], probs, False).tolist() == [[0, 0, 1]]


def test_mean_probability_applies_mean_threshold():
    probs = [np.array([[0.30]]), np.array([[0.40]])]
    mean_p, decisions = mean_probability(probs, [[0.3], [0.4]], True)
    assert mean_p[0, 0] == pytest.approx(0.35) and decisions[0, 0] == 1
    _, decisions = mean_probability(probs, [[0.5], [0.5]], True)
    assert decisions[0, 0] == 0


def test_metrics_agree_with_definitions_and_flag_undefined_auroc():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.2], [0.6, 0.4, 0.3], [0.2, 0.1, 0.1]])
    pred = decide(probs, [0.5, 0.5, 0.5], True)
    m = classification_metrics(y, probs, pred, ["a", "b", "c"], True)
    assert m["exact_match"] == pytest.approx(0.75)          # row 3 misses b
    assert m["hamming_loss"] == pytest.approx(1 / 12)
    assert m["auroc_undefined"] == ["c"] and m["per_class"][2]["auroc"] is None
    assert m["per_class"][1]["recall"] == pytest.approx(0.5)
    assert m["macro_auroc"] == pytest.approx(1.0)
    assert np.asarray(m["confusion_matrix"]).shape == (3, 2, 2)
    lean = classification_metrics(y, probs, pred, ["a", "b", "c"], True, confusion=False)
    assert "confusion_matrix" not in lean and lean["per_class"] == m["per_class"]
