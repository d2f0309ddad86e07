"""Evaluation you can publish: inputs padded only after normalising, full-length predictions that do
not depend on their batch, macro averages over defined classes, window/unit aggregation, cache keys
that follow the code, AAMI beat tables, and CIs + AUPRC in every report."""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgnet.config import load_config
from ecgnet.data.base import RecordSet
from ecgnet.data.dataset import EvalWindows, TrainWindows, load_signals
from ecgnet.data.transforms import Normalizer
from ecgnet.engine.predict import pool_rows, predict, to_units
from ecgnet.metrics import aami_metrics, aami_table, classification_metrics
import ecgnet.models  # noqa: F401  (registers every backbone)
from ecgnet.registry import MODELS
from test_masking import SMALL as SMALL_MODELS   # the masking tests' small settings per family

REPO = Path(__file__).resolve().parents[1]


# ---- padding comes after normalisation ----

def test_eval_and_train_windows_pad_with_zeros_after_normalising():
    record = np.full((2, 30), 5.0, np.float32)
    record[:, ::2] = 7.0                                          # mean 6, std 1 per lead
    norm = Normalizer("per_lead", mean=[1.0, 2.0], std=[2.0, 4.0])
    x, _ = EvalWindows([record], np.arange(1), 50, 50, norm)[0]
    assert x.shape == (2, 50)
    assert np.allclose(x[:, :30].numpy(), norm(record)) and x[:, 30:].abs().sum() == 0   # was -mean/std
    x, _ = TrainWindows([record], np.zeros((1, 1), np.float32), np.arange(1), 50, norm)[0]
    assert np.allclose(x[:, :30].numpy(), norm(record)) and x[:, 30:].abs().sum() == 0
    # per-record statistics come from the real samples only: they normalise to exactly +-1
    x, _ = EvalWindows([record], np.arange(1), 50, 50, Normalizer("per_record"))[0]
    assert np.allclose(np.abs(x[:, :30].numpy()), 1.0, atol=1e-4) and x[:, 30:].abs().sum() == 0


# ---- full-length predictions do not depend on the batch ----

@pytest.mark.parametrize("name", MODELS.names())
def test_full_length_record_scores_the_same_alone_and_batched_with_long_records(name):
    torch.manual_seed(0)
    model = MODELS.get(name, "model")(in_leads=2, num_classes=3, **SMALL_MODELS.get(name, {}))
    model.eval()
    rng = np.random.default_rng(0)
    signals = [rng.normal(size=(2, n)).astype(np.float32) for n in (37, 400, 451, 390)]
    norm = Normalizer("none")
    batched = EvalWindows(signals, np.arange(4), 1000, 1000, norm, pad=False)
    probs, _ = predict(model, batched, True, torch.device("cpu"), None, batch_size=4)
    for i, signal in enumerate(signals):
        alone, _ = predict(model, EvalWindows([signal], np.arange(1), 1000, 1000, norm, pad=False), True,
                           torch.device("cpu"), None, batch_size=1)
        assert np.allclose(alone[0], probs[i], atol=1e-5), (name, i)


def test_full_length_refuses_a_model_that_cannot_mask(tmp_path):
    from ecgnet.engine.run import train
    from ecgnet.registry import ConfigError

    @MODELS.register("_no_lengths_net")
    class NoLengths(torch.nn.Module):
        def __init__(self, in_leads: int, num_classes: int):
            super().__init__()
            self.fc = torch.nn.Linear(in_leads, num_classes)

        def forward(self, x):
            return self.fc(x.mean(-1))

    try:
        cfg = load_config(REPO / "cfgs/demo.yaml", ["model={type: _no_lengths_net}", "input.full_length=true",
                                                     "data.num_records=40", "train.epochs=1",
                                                     "schedule.warmup_epochs=0", "schedule.cooldown_epochs=0"])
        with pytest.raises(ConfigError, match="input.full_length.*_no_lengths_net"):
            train(cfg, work_dir=str(tmp_path / "run"))
    finally:
        MODELS._entries.pop("_no_lengths_net", None)


# ---- macro averages leave out classes the split does not contain ----

def test_macro_f1_leaves_out_a_class_with_neither_labels_nor_predictions():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    d = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    p = np.clip(d * 0.8 + 0.1, 0, 1)
    m = classification_metrics(y, p, d, ["a", "b", "absent"], True)
    assert m["f1_undefined"] == ["absent"] and m["per_class"][2]["f1"] is None
    assert m["macro_f1"] == pytest.approx((1.0 + 2 / 3) / 2)       # was (1 + 2/3 + 0) / 3
    assert m["auroc_undefined"] == ["absent"] and m["auprc_undefined"] == ["absent"]
    # a class that is predicted but absent is a real error: it stays in, with F1 = 0
    d2 = d.copy()
    d2[3, 2] = 1
    m2 = classification_metrics(y, p, d2, ["a", "b", "absent"], True)
    assert m2["f1_undefined"] == [] and m2["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 0) / 3)


def test_auprc_and_specificity_match_their_definitions():
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(1)
    y = (rng.random((200, 3)) < 0.3).astype(int)
    p = np.clip(y * 0.3 + rng.random((200, 3)) * 0.7, 0, 1)
    d = (p > 0.5).astype(int)
    m = classification_metrics(y, p, d, ["a", "b", "c"], True)
    aps = [average_precision_score(y[:, c], p[:, c]) for c in range(3)]
    assert [r["auprc"] for r in m["per_class"]] == pytest.approx(aps)
    assert m["macro_auprc"] == pytest.approx(np.mean(aps))
    tn = ((d == 0) & (y == 0)).sum(0)
    assert [r["specificity"] for r in m["per_class"]] == pytest.approx(tn / (y == 0).sum(0))


# ---- windows -> records (mean or max) -> evaluation units ----

def test_predict_combines_a_records_windows_by_mean_or_max():
    class Echo(torch.nn.Module):          # logit = the window's first sample: probabilities are known
        def forward(self, x):
            return x[:, :, 0]

    signal = np.array([[0.0, 0.0, 2.0, 2.0, -1.0, -1.0]], np.float32)
    windows = EvalWindows([signal], np.arange(1), 2, 2, Normalizer("none"))
    sig = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0])))
    mean, _ = predict(Echo(), windows, True, torch.device("cpu"), None, 8)
    top, _ = predict(Echo(), windows, True, torch.device("cpu"), None, 8, aggregate="max")
    assert mean[0, 0] == pytest.approx(sig.mean()) and top[0, 0] == pytest.approx(sig.max())


def test_units_regroup_records_and_take_the_union_of_labels():
    records = RecordSet(ids=["a#w0", "a#w1", "b#w0", "c#w0", "c#w1"], groups=["p", "p", "q", "p", "p"],
                        labels=np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], np.float32),
                        class_names=["x", "y"], fs=100, leads=["I"], units=["p", "p", "q", "p", "p"])
    probs = np.array([[0.2, 0.1], [0.4, 0.3], [0.9, 0.8], [0.6, 0.5], [0.0, 0.7]])
    index = np.array([2, 0, 1, 3, 4])
    ids, y, p, groups = to_units(records, index, probs[index], "mean")
    assert ids == ["q", "p"] and y.tolist() == [[0, 1], [1, 1]] and list(groups) == ["q", "p"]
    assert p[1] == pytest.approx(probs[[0, 1, 3, 4]].mean(0))
    _, _, p_max, _ = to_units(records, index, probs[index], "max")
    assert p_max[1] == pytest.approx(probs[[0, 1, 3, 4]].max(0))
    assert pool_rows(np.ones((2, 1)), np.array([0, 0]), 1, "mean").tolist() == [[1.0]]


# ---- a cache entry follows the code that produced it ----

ADAPTER_SOURCE = '''
import numpy as np
from ecgnet.data.base import ECGAdapter, RecordSet


class Gain(ECGAdapter):
    def records(self):
        return RecordSet(ids=["r0", "r1"], groups=["r0", "r1"], labels=np.array([0, 1]),
                         class_names=["a", "b"], fs=100.0, leads=["I"])

    def load(self, i):
        return np.full((1, 50), GAIN * (i + 1), np.float32)

    def cache_key(self):
        return "fixed: the data files never change"


GAIN = {gain}
'''


def test_cache_is_rebuilt_when_the_adapters_code_changes(tmp_path, monkeypatch):
    module = tmp_path / "gain_adapter.py"
    module.write_text(ADAPTER_SOURCE.format(gain=1.0))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"fs": None, "bandpass_hz": None, "filter_order": 3, "cache_dir": str(tmp_path / "cache")}
    mod = importlib.import_module("gain_adapter")
    _, signals = load_signals(mod.Gain(), cfg, "gain")
    assert float(signals[1][0, 0]) == 2.0
    module.write_text(ADAPTER_SOURCE.format(gain=10.0))            # same data files, new code
    mod = importlib.reload(mod)
    _, signals = load_signals(mod.Gain(), cfg, "gain")
    assert float(signals[1][0, 0]) == 20.0                         # not the stale 2.0
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_cache_key_includes_the_ecgnet_version(tmp_path, monkeypatch):
    from ecgnet.data import cache
    cfg = {"fs": None, "bandpass_hz": None, "filter_order": 3}
    before = cache.cache_dir_for(str(tmp_path), "d", "key", cfg, "code")
    monkeypatch.setattr(cache, "__version__", "9.9.9")
    assert cache.cache_dir_for(str(tmp_path), "d", "key", cfg, "code") != before
    assert cache.cache_dir_for(str(tmp_path), "d", "key", cfg, "other code") != before


# ---- beat tables as the inter-patient literature reports them ----

def test_aami_sveb_veb_sensitivity_ppv_and_fpr():
    names = ["N", "S", "V", "F", "Q"]
    true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    pred = np.array([0, 0, 1, 2, 1, 0, 0, 2, 2, 0])
    y, d = np.eye(5)[true], np.eye(5)[pred]
    m = aami_metrics(y, d, names)
    assert m["sveb_se"] == pytest.approx(1 / 3) and m["sveb_ppv"] == pytest.approx(1 / 2)
    assert m["sveb_fpr"] == pytest.approx(1 / 7)
    assert m["veb_se"] == pytest.approx(1.0) and m["veb_ppv"] == pytest.approx(2 / 3)
    assert m["veb_fpr"] == pytest.approx(1 / 8)
    metrics = classification_metrics(y, d, d, names, False)
    table = aami_table(metrics)
    assert "S (SVEB)" in table and "33.3" in table and "accuracy 50.0 %" in table


# ---- what a report holds ----

def test_demo_evaluation_reports_cis_auprc_and_record_info(tmp_path):
    from ecgnet.engine.evaluate import evaluate
    from ecgnet.engine.run import train
    cfg = load_config(REPO / "cfgs/demo.yaml", ["data.num_records=240", "train.epochs=2", "schedule.warmup_epochs=0",
                                                 "schedule.cooldown_epochs=1", "train.tensorboard=false",
                                                 "eval.bootstrap=200"])
    run = train(cfg, work_dir=str(tmp_path / "run"), folds=2)
    results = evaluate(run)
    for name in ("fold0", "fold1", "ensemble_vote", "ensemble_mean"):
        m = results[name]
        assert m["bootstrap"]["resamples"] == 200 and m["bootstrap"]["unit"] == "patient"
        for key in ("macro_auroc", "macro_f1", "macro_auprc", "exact_match"):
            lo, hi = m["ci"][key]
            assert lo <= m[key] <= hi, (name, key)
        assert all(len(r["auroc_ci"]) == 2 and len(r["f1_ci"]) == 2 for r in m["per_class"])
    summary = (run / "eval/test/summary.txt").read_text()
    assert "95 % CIs: percentile bootstrap, 200 resamples of patients" in summary and "AUPRC" in summary
    info = json.loads((run / "eval/test/eval_info.json").read_text())
    assert info["main"] == "ensemble_vote" and info["wall_s"] > 0 and info["units"] == results["fold0"]["n"]
    assert json.loads((run / "env.json").read_text())["train_wall_s"] > 0
    header = (run / "eval/test/fold0/per_class.csv").read_text().splitlines()[0]
    assert "auprc" in header and "auroc_ci_low" in header and (run / "eval/test/fold0/pr.png").stat().st_size
    no_ci = evaluate(run, out=tmp_path / "again", config=None)
    assert no_ci["fold0"]["macro_auroc"] == results["fold0"]["macro_auroc"]     # seeded: same numbers again
    assert no_ci["fold0"]["ci"] == results["fold0"]["ci"]


def test_evaluate_overrides_are_checked_like_a_config(tmp_path, monkeypatch):
    from ecgnet.engine.evaluate import evaluate
    from ecgnet.engine.run import train
    from ecgnet.registry import ConfigError
    cfg = load_config(REPO / "cfgs/demo.yaml", ["data.num_records=120", "train.epochs=1", "schedule.warmup_epochs=0",
                                                 "schedule.cooldown_epochs=0", "train.tensorboard=false",
                                                 "eval.plots=false", "eval.bootstrap=0"])
    run = train(cfg, work_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="eval.bootstrap: must be >= 0"):
        evaluate(run, eval_overrides={"bootstrap": -1})
    with pytest.raises(ConfigError, match="eval.aggregat: unknown setting.*aggregate"):
        evaluate(run, eval_overrides={"aggregat": "max"})
    results = evaluate(run, eval_overrides={"aggregate": "max"})
    assert (run / "eval/test_aggregate-max/metrics.json").is_file() and results["model"]["n"] > 0
    # thresholds ablation: the tuned per-class thresholds against the fixed default, on the same probabilities
    import ecgnet.engine.evaluate as evaluate_module
    from ecgnet.engine.checkpoint import load_checkpoint
    used = []

    def spy(probs, thresholds, multilabel):
        used.append(thresholds)
        return decide(probs, thresholds, multilabel)

    decide = evaluate_module.decide
    monkeypatch.setattr(evaluate_module, "decide", spy)
    tuned = evaluate(run, eval_overrides={"thresholds": "tuned"})
    fixed = evaluate(run, eval_overrides={"thresholds": "fixed"})
    stored = load_checkpoint(run / "best.pt")["thresholds"]
    assert stored != [0.5] * 6 and used == [stored, [0.5] * 6]
    assert fixed["model"]["macro_auroc"] == tuned["model"]["macro_auroc"]        # same probabilities
    assert "fixed threshold 0.5" in (run / "eval/test_thresholds-fixed/summary.txt").read_text().splitlines()[0]
    assert "tuned on validation" in (run / "eval/test_thresholds-tuned/summary.txt").read_text().splitlines()[0]
    info = json.loads((run / "eval/test_thresholds-fixed/eval_info.json").read_text())
    assert info["thresholds"] == "fixed"


def test_plots_of_thousands_of_classes_stay_small_and_quick(tmp_path):
    """Person identification has ~2,100 classes: one micro-averaged curve and one confusion image
    (a curve and an annotated cell per class made a 1,500-inch figure that took minutes)."""
    from ecgnet.metrics import classification_metrics
    from ecgnet.reports import MAX_PLOTTED_CLASSES, per_class_table, plot_confusion, plot_pr, plot_roc
    rng = np.random.default_rng(0)
    n = 400
    y = np.eye(n, dtype=np.int64)
    probs = rng.random((n, n)) + 3 * y
    probs /= probs.sum(1, keepdims=True)
    decisions = np.zeros_like(y)
    decisions[np.arange(n), probs.argmax(1)] = 1
    names = [f"p{i}" for i in range(n)]
    metrics = classification_metrics(y, probs, decisions, names, False)
    plot_roc(y, probs, metrics, tmp_path / "roc.png", "t")
    plot_pr(y, probs, metrics, tmp_path / "pr.png", "t")
    plot_confusion(metrics, names, False, tmp_path / "confusion.png", "t")
    assert n > MAX_PLOTTED_CLASSES
    lines = per_class_table(metrics, MAX_PLOTTED_CLASSES).splitlines()     # what evaluate prints
    assert len(lines) == 1 + MAX_PLOTTED_CLASSES + 1 and lines[1].startswith("p0 ")
    assert lines[-1] == f"... and {n - MAX_PLOTTED_CLASSES} more classes (all of them: per_class.csv)"
    assert len(per_class_table(metrics).splitlines()) == 1 + n                 # summary.txt: every class
    for f in ("roc.png", "pr.png", "confusion.png"):
        assert 0 < (tmp_path / f).stat().st_size < 2_000_000, f


def test_many_single_label_classes_keep_only_the_non_zero_confusion_cells(tmp_path, monkeypatch):
    """Above DENSE_CONFUSION_MAX_CLASSES (PTB-XL identification with background patients: 18,869, whose
    dense matrix ran evaluate out of memory) metrics.json holds [true, predicted, count] per non-zero cell."""
    from sklearn.metrics import confusion_matrix
    from ecgnet import metrics as metrics_module
    from ecgnet.reports import plot_confusion
    rng = np.random.default_rng(1)
    n, c = 300, 250
    true_idx, pred_idx = rng.integers(0, c, n), rng.integers(0, c, n)
    pred_idx[:200] = true_idx[:200]
    y, decisions = np.eye(c, dtype=np.int64)[true_idx], np.eye(c, dtype=np.int64)[pred_idx]
    probs = 0.5 * decisions + rng.random((n, c)) / c
    names = [f"p{i}" for i in range(c)]
    dense = metrics_module.classification_metrics(y, probs, decisions, names, False)
    monkeypatch.setattr(metrics_module, "DENSE_CONFUSION_MAX_CLASSES", 100)
    sparse = metrics_module.classification_metrics(y, probs, decisions, names, False)
    assert "confusion_pairs" in sparse and "confusion_matrix" not in sparse
    cm = confusion_matrix(true_idx, pred_idx, labels=range(c))
    assert sorted(map(tuple, sparse["confusion_pairs"])) == [(t, p, cm[t, p]) for t, p in zip(*np.nonzero(cm))]
    assert np.array_equal(np.asarray(dense["confusion_matrix"]), cm)
    assert {k: v for k, v in sparse.items() if k != "confusion_pairs"} == \
        {k: v for k, v in dense.items() if k != "confusion_matrix"}
    plot_confusion(sparse, names, False, tmp_path / "confusion.png", "t")
    assert 0 < (tmp_path / "confusion.png").stat().st_size < 2_000_000
