"""Bootstrap CIs: the vectorised metrics equal scikit-learn on materialised resamples, the
cluster bootstrap keeps a patient's records together, seeding, coverage, ``extra``."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from ecgnet.bootstrap import bootstrap_cis, metrics_from_weights, resample_weights


def _multilabel(n=120, c=5, seed=0):
    """Tied scores (1 decimal), class 4 rare (2 positives), so it drops out of some resamples."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < [0.5, 0.3, 0.1, 0.6, 0.0]).astype(int)
    y[[3, 50], 4] = 1
    p = np.clip(0.35 * y + 0.65 * rng.random((n, c)), 0, 1).round(1)
    d = (p >= 0.5).astype(int)
    d[:, 2] = 0                      # class 2 never predicted: F1 0 where labelled, else undefined
    d[:, 4] = 0
    d[3, 4] = 1                      # class 4 only predicted on a record that is labelled with it
    return y, p, d


def _single_label(n=150, c=4, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.choice(c, n, p=[0.5, 0.3, 0.17, 0.03])
    y = np.eye(c, dtype=int)[lab]
    p = (rng.dirichlet(np.ones(c), n) + 0.6 * y).round(1)
    d = np.eye(c, dtype=int)[np.argmax(p + 1e-3 * rng.random((n, c)), axis=1)]
    return y, p, d


def _explicit_weights(n, seed, drop):
    """A few resamples: ordinary bootstrap draws, plus one dropping the records ``drop`` (those
    of the last, rare class) and many others (zero weights) and one with uneven repeats."""
    rng = np.random.default_rng(seed)
    W = [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(4)]
    w = rng.integers(0, 4, n)
    w[drop] = 0
    W.append(w)
    w = np.zeros(n, dtype=int)
    w[rng.choice(n, n // 3, replace=False)] = rng.integers(1, 6, n // 3)
    W.append(w)
    return np.array(W)


def _reference(y, p, d, multilabel):
    """sklearn on one materialised resample, with the engine's "leave out undefined" rule."""
    C = y.shape[1]
    auroc = [roc_auc_score(y[:, c], p[:, c]) if 0 < y[:, c].sum() < len(y) else np.nan for c in range(C)]
    auprc = [average_precision_score(y[:, c], p[:, c]) if y[:, c].sum() > 0 else np.nan for c in range(C)]
    defined = [c for c in range(C) if y[:, c].any() or d[:, c].any()]
    f1 = np.full(C, np.nan)
    f1[defined] = f1_score(y, d, labels=defined, average=None, zero_division=0)
    out = {"auroc": auroc, "auprc": auprc, "f1": f1,
           "macro_auroc": np.nanmean(auroc), "macro_auprc": np.nanmean(auprc),
           "macro_f1": f1_score(y, d, labels=defined, average="macro", zero_division=0),
           "weighted_f1": f1_score(y, d, labels=defined, average="weighted", zero_division=0),
           "exact_match": accuracy_score(y, d)}
    if not multilabel:
        out["accuracy"] = accuracy_score(y.argmax(1), d.argmax(1))
    return out


@pytest.mark.parametrize("multilabel", [True, False])
def test_vectorised_metrics_equal_sklearn_on_materialised_resamples(multilabel):
    y, p, d = _multilabel() if multilabel else _single_label()
    W = _explicit_weights(len(y), seed=1, drop=np.flatnonzero(y[:, -1]))
    got = metrics_from_weights(y, p, d, W, multilabel)
    assert set(got) == set(_reference(y, p, d, multilabel))
    for b in range(len(W)):
        idx = np.repeat(np.arange(len(y)), W[b])
        ref = _reference(y[idx], p[idx], d[idx], multilabel)
        for key, value in ref.items():
            np.testing.assert_allclose(got[key][b], value, rtol=1e-12, atol=1e-12, err_msg=f"{key}, resample {b}")
    # the data really exercised a class missing from resample 4: multi-label, it is neither
    # labelled nor predicted there (F1 undefined); single-label, it is still predicted (F1 0)
    assert np.isnan(got["auroc"][4, -1]) and np.isnan(got["auprc"][4, -1])
    assert np.isnan(got["f1"][4, -1]) if multilabel else got["f1"][4, -1] == 0
    assert not np.isnan(got["f1"][:, -1]).all()


def test_cluster_weights_keep_patients_together():
    groups = np.repeat(["p%02d" % i for i in range(30)], np.arange(30) % 4 + 1)  # 1-4 records each
    W, unit, n_units = resample_weights(len(groups), 200, np.random.default_rng(0), groups)
    assert (unit, n_units) == ("patient", 30)
    for g in np.unique(groups):
        cols = W[:, groups == g]
        assert (cols == cols[:, :1]).all()           # drawn together, every resample
    first = np.unique(groups, return_index=True)[1]
    assert (W[:, first].sum(axis=1) == 30).all()     # 30 patients drawn per resample
    # all-unique ids are plain record resampling
    W2, unit2, _ = resample_weights(10, 5, np.random.default_rng(0), list("abcdefghij"))
    assert unit2 == "record" and (W2.sum(axis=1) == 10).all()


def test_cluster_bootstrap_of_copied_records_equals_record_bootstrap_of_originals():
    """Each patient = k identical copies of one record: the patient bootstrap must give the CIs
    of the de-duplicated records (metrics are scale-invariant); resampling the copies
    independently would give narrower ones."""
    y, p, d = _multilabel(n=80)
    k = 3
    groups = np.repeat(np.arange(80), k)
    rep = lambda a: np.repeat(a, k, axis=0)
    clustered = bootstrap_cis(rep(y), rep(p), rep(d), True, groups=groups, resamples=200, seed=3)
    original = bootstrap_cis(y, p, d, True, resamples=200, seed=3)
    naive = bootstrap_cis(rep(y), rep(p), rep(d), True, resamples=200, seed=3)
    assert clustered["unit"] == "patient" and clustered["n_units"] == 80
    for key, ci in original["ci"].items():
        np.testing.assert_allclose(clustered["ci"][key], ci, rtol=1e-9, err_msg=key)
    width = lambda r: np.diff(r["ci"]["macro_auroc"])[0]
    assert width(naive) < 0.8 * width(clustered)


def test_seeded():
    y, p, d = _multilabel()
    a = bootstrap_cis(y, p, d, True, resamples=100, seed=7)
    assert a == bootstrap_cis(y, p, d, True, resamples=100, seed=7)
    assert a["ci"] != bootstrap_cis(y, p, d, True, resamples=100, seed=8)["ci"]


def _synthetic(n, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.2, (n, 3)))))
    return y, p, (p > 0.5).astype(int)


def test_point_estimate_inside_ci_and_ci_narrows_with_n():
    widths = []
    for n in (200, 2000):
        y, p, d = _synthetic(n, seed=n)
        r = bootstrap_cis(y, p, d, True, resamples=300, seed=0)
        point = _reference(y, p, d, True)
        for key in ("macro_auroc", "macro_auprc", "macro_f1", "weighted_f1", "exact_match"):
            lo, hi = r["ci"][key]
            assert lo <= point[key] <= hi, (n, key)
        for c, (lo, hi) in enumerate(r["per_class"]["auroc"]):
            assert lo <= point["auroc"][c] <= hi
        widths.append(np.diff(r["ci"]["macro_auroc"])[0])
    assert widths[1] < 0.5 * widths[0]     # ~ 1/sqrt(10)


def test_extra_called_per_resample_and_reported():
    y, p, d = _single_label()
    sizes = []

    def extra(yy, pp, dd):
        sizes.append(len(yy))
        return {"own_f1": f1_score(yy.argmax(1), dd.argmax(1), average="macro"), "skipped": None}

    r = bootstrap_cis(y, p, d, False, resamples=50, seed=0, extra=extra)
    assert sizes == [len(y)] * 50
    lo, hi = r["ci"]["own_f1"]
    assert 0 <= lo < hi <= 1
    assert r["ci"]["skipped"] is None
    assert r["ci"]["accuracy"] is not None and r["unit"] == "record"


def test_undefined_class_gets_none_and_zero_resamples_gives_none():
    y, p, d = _multilabel()
    y[:, 4] = 0                                           # class 4 never labelled
    r = bootstrap_cis(y, p, d, True, resamples=50, seed=0)
    assert r["per_class"]["auroc"][4] is None and r["per_class"]["auprc"][4] is None
    assert r["per_class"]["auroc"][0] is not None and "accuracy" not in r["ci"]
    assert bootstrap_cis(y, p, d, True, resamples=0) is None


def test_rare_classes_stay_in_every_resample_so_the_macro_interval_holds_its_estimate():
    """With ten classes of one positive each (scored badly), resamples that lose such a class
    average without it; unconditional percentiles then miss the estimate (PTB-XL 'all' on the
    10 % subset: macro AUPRC 0.238, interval [0.241, 0.323]). Class-preserving resamples, as the
    PTB-XL benchmark draws them, keep every class and the estimate inside its interval."""
    from ecgnet.bootstrap import class_preserving_weights, resample_weights
    from ecgnet.metrics import classification_metrics
    rng = np.random.default_rng(3)
    n, common, rare = 220, 2, 10
    y = np.zeros((n, common + rare), int)
    y[:, :common] = rng.random((n, common)) < 0.4
    for c in range(common, common + rare):
        y[rng.integers(n), c] = 1
    probs = np.clip(0.35 * y + 0.65 * rng.random(y.shape), 0, 1)
    probs[:, common:] = rng.random((n, rare)) * np.where(y[:, common:], 0.3, 1.0)   # rare positives ranked low
    decisions = (probs > 0.5).astype(int)
    point = classification_metrics(y, probs, decisions, [str(c) for c in range(y.shape[1])], True)["macro_auprc"]
    W, _, _, acceptance = class_preserving_weights(y, 300, np.random.default_rng(0))
    assert 0 < acceptance < 0.2 and ((W @ y) > 0).all()
    ci = bootstrap_cis(y, probs, decisions, True, resamples=300, seed=0)["ci"]["macro_auprc"]
    assert ci[0] <= point <= ci[1]
    # the same data resampled without the condition misses the estimate
    W = resample_weights(n, 300, np.random.default_rng(0))[0]
    lo, hi = np.nanpercentile(metrics_from_weights(y, probs, decisions, W, True)["macro_auprc"], [2.5, 97.5])
    assert not lo <= point <= hi


def test_thousands_of_single_record_classes_fall_back_without_drawing(monkeypatch, caplog):
    """Person identification: 2,000 patients with one test record each. No resample keeps every
    class, so the class-preserving draw is skipped up front (it used to draw for minutes)."""
    import ecgnet.bootstrap as bootstrap
    n = 2000
    y = np.eye(n, dtype=np.int64)
    calls = []
    real = bootstrap.resample_weights
    monkeypatch.setattr(bootstrap, "resample_weights", lambda *a, **k: calls.append(1) or real(*a, **k))
    with caplog.at_level("WARNING"):
        W, unit, n_units, acceptance = bootstrap.class_preserving_weights(y, 100, np.random.default_rng(0))
    assert calls == [1] and acceptance == 0.0 and W.shape == (100, n) and "unconditional" in caplog.text


def test_without_class_preserving_resamples_class_averaged_metrics_get_no_interval():
    """600 single-record classes: unconditional resamples average over whichever classes they hold, so a
    macro F1 interval would describe something else than the estimate; accuracy keeps its interval."""
    from ecgnet.bootstrap import bootstrap_cis
    rng = np.random.default_rng(0)
    n = 600
    y = np.eye(n, dtype=np.int64)
    probs = np.abs(y + rng.normal(0, 0.7, (n, n)))
    decisions = np.eye(n)[probs.argmax(1)]
    out = bootstrap_cis(y, probs, decisions, multilabel=False, resamples=200)
    assert out["class_preserving"] is False
    assert all(out["ci"][k] is None for k in ("macro_auroc", "macro_auprc", "macro_f1", "weighted_f1"))
    lo, hi = out["ci"]["accuracy"]
    accuracy = float((decisions.argmax(1) == np.arange(n)).mean())
    assert lo <= accuracy <= hi and hi - lo > 0.01
