"""Data layer: splits, samplers, transforms, augmentations, the synthetic adapter."""
import numpy as np
import pytest

from ecgnet.build import build, build_augmentations
from ecgnet.data.base import RecordSet
from ecgnet.data.dataset import EvalWindows, TrainWindows
from ecgnet.data.splits import assert_disjoint, make_splits
from ecgnet.data.transforms import Normalizer, bandpass, crop_or_pad, resample, window_starts
from ecgnet.registry import ConfigError, DataError

SPLIT = {"type": "random", "val_fraction": 0.1, "test_fraction": 0.2, "train_folds": None, "val_folds": None,
         "test_folds": None, "seed": 0}


def fake_records(n=300, classes=4, per_patient=3, multilabel=True, seed=0):
    rng = np.random.default_rng(seed)
    if multilabel:
        labels = (rng.random((n, classes)) < [0.5, 0.2, 0.1, 0.05][:classes]).astype(np.float32)
    else:
        labels = rng.choice(classes, size=n, p=[0.6, 0.25, 0.1, 0.05][:classes]).astype(np.int64)
    return RecordSet(ids=[f"r{i}" for i in range(n)], groups=[f"p{i // per_patient}" for i in range(n)],
                     labels=labels, class_names=[f"c{k}" for k in range(classes)], fs=100.0, leads=["I"],
                     folds=np.arange(n) % 10 + 1)


@pytest.mark.parametrize("multilabel", [True, False])
def test_random_split_is_patient_disjoint_and_stratified(multilabel):
    records = fake_records(multilabel=multilabel)
    splits = make_splits(records, SPLIT)
    train, val = splits["folds"][0]
    test = splits["test"]
    assert len(train) + len(val) + len(test) == len(records.ids)
    groups = np.asarray(records.groups)
    assert not set(groups[train]) & set(groups[test]) and not set(groups[val]) & set(groups[test])
    assert not set(groups[train]) & set(groups[val])
    assert abs(len(test) / len(records.ids) - 0.2) < 0.05
    overall = records.multi_hot().mean(0)
    assert np.abs(records.multi_hot(test).mean(0) - overall).max() < 0.07


def test_kfold_covers_pool_once_with_common_test():
    records = fake_records()
    splits = make_splits(records, SPLIT, kfolds=4)
    vals = [v for _, v in splits["folds"]]
    pool = np.setdiff1d(np.arange(len(records.ids)), splits["test"])
    assert np.array_equal(np.sort(np.concatenate(vals)), pool)          # each pooled record validates once
    for train, val in splits["folds"]:
        assert np.array_equal(np.sort(np.concatenate([train, val])), pool)
        assert_disjoint(records, {"train": train, "val": val, "test": splits["test"]})


def test_predefined_split_uses_dataset_folds():
    records = fake_records(per_patient=1)
    cfg = {**SPLIT, "type": "predefined", "train_folds": list(range(1, 9)), "val_folds": [9], "test_folds": [10]}
    splits = make_splits(records, cfg)
    assert set(records.folds[splits["test"]]) == {10}
    assert set(records.folds[splits["folds"][0][1]]) == {9}
    with pytest.raises(ConfigError, match="split.test_folds: required"):
        make_splits(records, {**cfg, "test_folds": None})
    # no validation fold: a stratified share of the train folds validates
    held = make_splits(records, {**cfg, "val_folds": None, "train_folds": list(range(1, 10))})
    train, val = held["folds"][0]
    assert set(records.folds[val]) <= set(range(1, 10)) and 0.05 < len(val) / (len(train) + len(val)) < 0.15


def test_split_with_a_patient_in_two_predefined_folds_is_rejected():
    records = fake_records(per_patient=3)      # folds cycle per record, so patients straddle folds
    cfg = {**SPLIT, "type": "predefined", "train_folds": list(range(1, 9)), "val_folds": [9], "test_folds": [10]}
    with pytest.raises(DataError, match="are in both"):
        make_splits(records, cfg)


def test_samplers_are_reproducible_per_epoch_and_balance_classes():
    records = fake_records(n=400, per_patient=1)
    labels = records.multi_hot()
    for name in ("random", "class_balanced", "oversample"):
        s = build("sampler", {"sampler": {"type": name}}, labels=labels, seed=1)
        s.set_epoch(3)
        first = list(s)
        s.set_epoch(3)
        assert list(s) == first
        s.set_epoch(4)
        assert list(s) != first
    random = build("sampler", {"sampler": {"type": "random"}}, labels=labels, seed=1)
    assert sorted(random) == list(range(400))
    balanced = build("sampler", {"sampler": {"type": "class_balanced", "num_samples": 20000}}, labels=labels, seed=1)
    drawn = labels[np.array(list(balanced))].sum(0)
    assert drawn[3] / drawn[0] > 3 * labels[:, 3].sum() / labels[:, 0].sum()   # the rare class is boosted
    over = build("sampler", {"sampler": {"type": "oversample"}}, labels=labels, seed=1)
    positions = np.array(list(over))
    assert len(positions) > 400 and positions.max() >= 400                      # duplicates are marked
    assert set(positions % 400) == set(range(400))


def test_oversampled_duplicates_get_noise():
    signals = [np.ones((1, 50), np.float32) for _ in range(4)]
    ds = TrainWindows(signals, np.zeros(4, np.int64), np.arange(4), 50, Normalizer("none"),
                      duplicate_noise_std=0.1, seed=0)
    assert np.all(ds[1][0].numpy() == 1) and ds[5][0].numpy().std() > 0.05


def test_crop_pad_and_windows():
    x = np.arange(10, dtype=np.float32)[None]
    assert crop_or_pad(x, 4, 8).tolist() == [[8, 9, 0, 0]]
    assert window_starts(10, 4, 4) == [0, 4, 6]           # last window ends at the record end
    assert window_starts(3, 4, 2) == [0]
    ds = EvalWindows([np.zeros((1, 10), np.float32), np.zeros((1, 3), np.float32)], np.array([0, 1]), 4, 4,
                     Normalizer("none"))
    assert [pos for _, pos in (ds[i] for i in range(len(ds)))] == [0, 0, 0, 1]


def test_resample_and_bandpass():
    t = np.arange(0, 10, 1 / 500)
    x = np.stack([np.sin(2 * np.pi * 5 * t) + 2.0 + np.sin(2 * np.pi * 0.05 * t)]).astype(np.float32)
    y = resample(x, 500, 100)
    assert y.shape == (1, 1000)
    filtered = bandpass(y, 100, 0.5, 40)
    assert abs(filtered.mean()) < 0.05                    # offset and slow drift removed
    assert filtered[0, 200:800].std() == pytest.approx(np.sqrt(0.5), rel=0.05)   # 5 Hz kept


def test_normalizer_uses_only_the_signals_it_is_fitted_on():
    train = [np.full((2, 100), 3.0, np.float32) + np.random.default_rng(0).normal(0, 1, (2, 100)).astype(np.float32)]
    norm = Normalizer("per_lead").fit(train)
    assert norm.mean[:, 0] == pytest.approx([3.0, 3.0], abs=0.3)
    restored = Normalizer.from_state(norm.state_dict())
    x = np.ones((2, 5), np.float32)
    assert np.allclose(restored(x), norm(x))


def test_augmentations_change_signal_deterministically():
    cfg = {"augment": [{"type": t, "p": 1.0} for t in
                       ("gaussian_noise", "amplitude_scale", "time_warp", "random_crop", "baseline_wander")]}
    x = np.sin(np.linspace(0, 20, 500, dtype=np.float32))[None].repeat(2, 0)
    for aug in build_augmentations(cfg, fs=100.0):
        a = aug(x, np.random.default_rng(0))
        assert a.shape == x.shape and a.dtype == np.float32 and not np.allclose(a, x)
        assert np.array_equal(a, aug(x, np.random.default_rng(0)))


def test_synthetic_adapter_is_deterministic_and_labelled():
    cfg = {"data": {"type": "synthetic", "num_records": 60, "fs": 100, "duration_s": 5}}
    a, b = build("data", cfg), build("data", cfg)
    rec = a.records()
    assert rec.multilabel and rec.class_names[0] == "NORM"
    assert np.all(rec.labels.sum(1) >= 1)                                  # NORM when nothing else
    assert not np.any(rec.labels[:, rec.class_names.index("brady")] * rec.labels[:, rec.class_names.index("tachy")])
    assert np.array_equal(a.load(7), b.load(7)) and a.load(7).shape == (12, 500)
    single = build("data", {"data": {**cfg["data"], "mode": "single_label", "leads": ["II"]}}).records()
    assert single.labels.dtype == np.int64 and single.leads == ["II"]
    varlen = build("data", {"data": {**cfg["data"], "max_duration_s": 9}})
    assert varlen.record_length_s is None and len({varlen.load(i).shape[1] for i in range(5)}) > 1
    with pytest.raises(ConfigError, match="data.leads: unknown lead"):
        build("data", {"data": {**cfg["data"], "leads": ["V7"]}})


def test_bucket_batches_cover_the_epoch_with_similar_lengths():
    from ecgnet.data.dataset import BucketBatchSampler
    labels = np.zeros((200, 1), np.float32)
    lengths = np.random.default_rng(0).integers(100, 2000, 200)
    sampler = build("sampler", {"sampler": {"type": "random"}}, labels=labels, seed=0)
    batches = BucketBatchSampler(sampler, lengths, batch_size=8, pool_batches=25)
    batches.set_epoch(1)
    drawn = list(batches)
    assert sorted(p for b in drawn for p in b) == list(range(200)) and len(drawn) == len(batches) == 25
    spread = np.mean([np.ptp(lengths[b]) for b in drawn])
    assert spread < 0.2 * np.ptp(lengths)                 # sorted pools keep each batch's lengths close
    batches.set_epoch(1)
    assert list(batches) == drawn
    # 201 records in batches of 8 would end with a batch of one, which BatchNorm cannot train on: it is dropped
    odd = BucketBatchSampler(build("sampler", {"sampler": {"type": "random"}}, labels=np.zeros((201, 1), np.float32),
                                   seed=0), np.append(lengths, 500), batch_size=8, pool_batches=25)
    odd.set_epoch(1)
    assert len(odd) == len(list(odd)) == 25 and min(len(b) for b in odd) > 1


def test_collate_pads_and_unpadded_eval_windows():
    from ecgnet.data.dataset import collate
    signals = [np.ones((2, n), np.float32) for n in (30, 80, 50)]
    ds = EvalWindows(signals, np.arange(3), 60, 60, Normalizer("none"), pad=False)
    items = [ds[i] for i in range(len(ds))]
    assert [x.shape[1] for x, _ in items] == [30, 50, 60, 60]      # by length; the long record gives 2 windows
    x, pos, lengths, features = collate(items)
    assert x.shape == (4, 2, 60) and x[0, :, 30:].abs().sum() == 0 and pos.tolist() == [0, 2, 1, 1]
    assert lengths.tolist() == [30, 50, 60, 60] and features is None
    assert collate(items[2:]).lengths is None                # nothing padded: no lengths to mask with


def test_windows_serve_each_records_features():
    from ecgnet.data.dataset import collate
    signals = [np.full((1, 40), i, np.float32) for i in range(4)]
    features = np.arange(8, dtype=np.float32).reshape(4, 2) * 10
    evals = EvalWindows(signals, np.array([3, 1]), 20, 20, Normalizer("none"), features=features)
    batch = collate([evals[i] for i in range(len(evals))])
    assert batch.targets.tolist() == [0, 0, 1, 1]              # record positions: 2 windows each
    assert batch.features.tolist() == [[60, 70], [60, 70], [20, 30], [20, 30]]
    train = TrainWindows(signals, np.arange(4), np.array([2, 0]), 20, Normalizer("none"), features=features)
    x, y, f = train[1]
    assert int(y) == 0 and f.tolist() == [0, 10] and float(x[0, 0]) == 0
