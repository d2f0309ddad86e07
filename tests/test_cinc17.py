"""CinC 2017 adapter: REFERENCE.csv + .mat/.hea reading, the shipped split file and its generator,
the challenge F1, crop/pad and sliding-window aggregation, cache, skip-and-count of bad records.

Fixtures are written in the official formats: MATLAB v4 .mat (``val``, int16 1 x n, 24-byte
preamble, as in training2017.zip) with scipy.io.savemat, the WFDB header text PhysioNet ships,
and a header-less REFERENCE.csv."""
import importlib.util
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch

from ecgnet.build import build
from ecgnet.config import PreprocessCfg, load_yaml_tree
from ecgnet.data.cinc17 import (ABSENT_FILES, ABSENT_FROM_REFERENCE, CLASSES, SHIPPED_SPLIT, CinC2017,
                                challenge_f1)
from ecgnet.data.dataset import EvalWindows, TrainWindows, load_signals
from ecgnet.data.splits import assert_disjoint, make_splits
from ecgnet.data.transforms import Normalizer, crop_or_pad, window_starts
from ecgnet.engine.predict import predict
from ecgnet.registry import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "cinc17"
FS = 300


def write_record(folder: Path, rid: str, n: int, seed: int = 0) -> np.ndarray:
    val = np.random.default_rng(seed).integers(-2000, 2000, size=(1, n)).astype(np.int16)
    scipy.io.savemat(folder / f"{rid}.mat", {"val": val}, format="4")
    (folder / f"{rid}.hea").write_text(f"{rid} 1 300 {n} 05:05:15 1/05/2000 \n"
                                       f"{rid}.mat 16+24 1000/mV 16 0 {val[0, 0]} 0 0 ECG\n")
    return val


def write_dataset(root: Path, records: dict[str, tuple[str, int]]) -> dict[str, np.ndarray]:
    """records: id -> (label, samples). Writes root/training2017/{REFERENCE.csv, *.mat, *.hea}."""
    folder = root / "training2017"
    folder.mkdir(parents=True, exist_ok=True)
    vals = {rid: write_record(folder, rid, n, seed=k) for k, (rid, (_, n)) in enumerate(records.items())}
    (folder / "REFERENCE.csv").write_text("".join(f"{rid},{label}\n" for rid, (label, _) in records.items()))
    return vals


def write_split(path: Path, parts: dict[str, str]) -> Path:
    pd.DataFrame(sorted(parts.items()), columns=["record", "split"]).to_csv(path, index=False)
    return path


RECORDS = {   # id -> (label, samples): lengths from 2 s (shorter than a window) to 9 s
    "A00001": ("N", 9 * FS), "A00002": ("A", 2 * FS), "A00003": ("O", 5 * FS + 17), "A00004": ("~", 3 * FS),
    "A00005": ("N", 4 * FS), "A00006": ("A", 7 * FS), "A00007": ("O", 6 * FS), "A00008": ("N", 8 * FS + 1),
    "A00009": ("N", 3 * FS), "A00010": ("O", 4 * FS),
}
PARTS = {"A00001": "train", "A00002": "train", "A00003": "train", "A00004": "train", "A00005": "train",
         "A00006": "val", "A00007": "val", "A00008": "test", "A00009": "test", "A00010": "test"}


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "cinc17"
    vals = write_dataset(root, RECORDS)
    split = write_split(tmp_path / "split.csv", PARTS)
    return root, split, vals


def preprocess_cfg(cache_dir=None) -> dict:
    out = {f: getattr(PreprocessCfg(), f) for f in PreprocessCfg.__dataclass_fields__}
    return {**out, "cache_dir": None if cache_dir is None else str(cache_dir)}


class CountingCinC2017(CinC2017):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = 0

    def load(self, index):
        self.reads += 1
        return super().load(index)


def test_labels_class_order_variable_lengths_and_units(dataset):
    root, split, vals = dataset
    adapter = build("data", {"data": {"type": "cinc17", "root": str(root), "split_file": str(split)}})
    records = adapter.records()
    assert records.class_names == ["N", "A", "O", "~"] == CLASSES
    assert records.ids == sorted(RECORDS) and records.groups == records.ids      # no patient ids published
    assert records.labels.dtype == np.int64 and not records.multilabel
    assert [CLASSES[k] for k in records.labels] == [RECORDS[r][0] for r in records.ids]
    assert records.fs == 300 and records.leads == ["ECG"] and adapter.record_length_s is None
    assert records.folds.tolist() == [{"train": 1, "val": 2, "test": 3}[PARTS[r]] for r in records.ids]
    for i, rid in enumerate(records.ids):
        x = adapter.load(i)
        assert x.dtype == np.float32 and x.shape == (1, RECORDS[rid][1])
        np.testing.assert_allclose(x, vals[rid] / 1000.0, rtol=1e-6)            # 1000 adu/mV, baseline 0
    assert records.skipped == {}


def test_split_file_with_absent_records_is_reported_not_fatal(dataset, tmp_path):
    root, _, _ = dataset
    (root / "training2017" / "A00007.mat").unlink()          # labelled, but its signal is gone
    parts = {**PARTS, "A09998": "train", "A09999": "test"}    # in the split, not on disk
    adapter = CinC2017(str(root), str(write_split(tmp_path / "bigger.csv", parts)))
    records = adapter.records()
    assert records.skipped == {ABSENT_FROM_REFERENCE: ["A09998", "A09999"], ABSENT_FILES: ["A00007"]}
    assert len(records.ids) == 9 and "A00007" not in records.ids


def test_default_is_the_shipped_split_of_all_8528_records(dataset):
    root, _, _ = dataset
    shipped = pd.read_csv(SHIPPED_SPLIT)
    assert len(shipped) == 8528 and shipped["record"].is_unique
    assert Counter(shipped["split"]) == {"train": 5970, "val": 853, "test": 1705}
    records = CinC2017(str(root)).records()              # the fixture ids A00001-A00010 are real ids
    assert records.ids == sorted(RECORDS) and len(records.skipped[ABSENT_FROM_REFERENCE]) == 8518
    fold = dict(zip(shipped["record"], shipped["split"].map({"train": 1, "val": 2, "test": 3})))
    assert records.folds.tolist() == [fold[r] for r in records.ids]


def test_labelled_record_missing_from_split_file_is_an_error(dataset, tmp_path):
    root, _, _ = dataset
    parts = {k: v for k, v in PARTS.items() if k != "A00004"}
    adapter = CinC2017(str(root), str(write_split(tmp_path / "short.csv", parts)))
    with pytest.raises(DataError, match=r"1 record\(s\) of .*REFERENCE.csv are not in the split file "
                                        r"\(e.g. A00004\).*make_cinc17_split.py"):
        adapter.records()


def test_missing_folder_and_bad_files_are_one_line_errors(dataset, tmp_path):
    root, split, _ = dataset
    with pytest.raises(DataError, match="CinC 2017 not found.*experiments/cinc17/setup.sh") as err:
        CinC2017(str(tmp_path / "nowhere"))
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="split file not found"):
        CinC2017(str(root), str(tmp_path / "none.csv")).records()
    (root / "training2017" / "REFERENCE.csv").write_text("A00001,N\nA00002,X\n")
    with pytest.raises(DataError, match=r"REFERENCE.csv: line 2: label 'X' of A00002 is not one of N A O ~"):
        CinC2017(str(root), str(split)).records()


def test_cfg_split_has_no_record_overlap(dataset):
    root, split, _ = dataset
    cfg = load_yaml_tree(REPO / "cfgs" / "_base_" / "data" / "cinc17.yaml")
    split_cfg = {"val_fraction": 0.1, "test_fraction": 0.2, "seed": 0, **cfg["split"]}
    records = CinC2017(str(root), str(split)).records()
    parts = make_splits(records, split_cfg)
    train, val = parts["folds"][0]
    ids = np.asarray(records.ids)
    assert sorted(ids[train]) == sorted(r for r, s in PARTS.items() if s == "train")
    assert sorted(ids[val]) == ["A00006", "A00007"] and sorted(ids[parts["test"]]) == ["A00008", "A00009", "A00010"]
    assert_disjoint(records, {"train": train, "val": val, "test": parts["test"]})
    assert not (set(ids[train]) & set(ids[val]) or set(ids[train]) & set(ids[parts["test"]])
                or set(ids[val]) & set(ids[parts["test"]]))


def _split_tool():
    spec = importlib.util.spec_from_file_location("make_cinc17_split", REPO / "tools" / "make_cinc17_split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_tool_is_stratified_70_10_20_and_deterministic(tmp_path, capsys):
    counts = {"N": 500, "A": 80, "O": 240, "~": 30}
    rng = np.random.default_rng(1)
    labels = rng.permutation([c for c, n in counts.items() for _ in range(n)])
    reference = tmp_path / "REFERENCE.csv"
    reference.write_text("".join(f"A{i + 1:05d},{label}\n" for i, label in enumerate(labels)))
    tool = _split_tool()
    outs = [tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"]
    for out, seed in zip(outs, (7, 7, 8)):
        assert tool.main(["--reference", str(reference), "--out", str(out), "--seed", str(seed)]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()            # same input and seed -> same file
    assert outs[0].read_bytes() != outs[2].read_bytes()            # the seed matters
    split = pd.read_csv(outs[0])
    assert list(split.columns) == ["record", "split"] and split["record"].is_monotonic_increasing
    assert sorted(split["record"]) == [f"A{i + 1:05d}" for i in range(len(labels))]
    label_of = dict(zip([f"A{i + 1:05d}" for i in range(len(labels))], labels))
    table = Counter(zip(split["split"], split["record"].map(label_of)))
    for c, n in counts.items():                                    # exact per-class shares, up to rounding
        assert abs(table["train", c] - 0.7 * n) <= 0.5 and abs(table["val", c] - 0.1 * n) <= 0.5
        assert table["train", c] + table["val", c] + table["test", c] == n
    assert "850 records" in capsys.readouterr().out
    assert tool.main(["--reference", str(tmp_path / "none.csv"), "--out", str(outs[0])]) == 2


def test_challenge_f1_hand_computed():
    # true N N N A A O O ~ / predicted N N A A O O N ~
    true = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    pred = np.array([0, 0, 1, 1, 2, 2, 0, 3])
    # official: F1_c = 2 * hits_c / (true_c + predicted_c): N 4/6, A 2/4, O 2/4, ~ 2/2
    score, per_class = challenge_f1(true, pred)
    np.testing.assert_allclose(per_class, [4 / 6, 0.5, 0.5, 1.0])
    assert score == pytest.approx((4 / 6 + 0.5 + 0.5) / 3)
    eye = np.eye(4, dtype=np.int64)
    metrics = CinC2017.dataset_metrics(None, eye[true], eye[pred].astype(float), eye[pred])
    assert metrics == {"cinc17_f1": pytest.approx(0.5555556), "f1_noisy": 1.0}


class StubModel(torch.nn.Module):
    """Deterministic logits from simple window statistics (no parameters to train)."""

    def forward(self, x):
        return torch.stack([x.mean((1, 2)), x.abs().mean((1, 2)), x[:, :, :50].mean((1, 2)), x.std((1, 2))], 1) * 3


def test_crop_pad_and_window_average_end_to_end(dataset):
    root, split, _ = dataset
    records, signals = load_signals(CinC2017(str(root), str(split)), preprocess_cfg(), "cinc17")
    window, stride = 3 * FS, int(1.5 * FS)
    normalizer = Normalizer("per_lead").fit(signals)
    index = np.arange(len(records.ids))
    # training: every draw is exactly one window; a 2 s record is zero-padded at the end
    short = records.ids.index("A00002")
    train = TrainWindows(signals, records.labels, index, window, Normalizer("none"))
    x, y = train[short]
    assert x.shape == (1, window) and int(y) == CLASSES.index("A")
    assert torch.equal(x[0, :2 * FS], torch.from_numpy(signals[short][0])) and not x[0, 2 * FS:].any()
    # evaluation: windows cover each whole record; predict averages their probabilities per record
    windows = EvalWindows(signals, index, window, stride, normalizer)
    starts = [window_starts(s.shape[1], window, stride) for s in signals]
    assert len(windows) == sum(map(len, starts)) and len(starts[records.ids.index("A00001")]) == 5
    probs, _ = predict(StubModel(), windows, multilabel=False, device=torch.device("cpu"), dtype=None, batch_size=4)
    expected = []
    for s, st in zip(signals, starts):
        batch = torch.from_numpy(np.stack([crop_or_pad(normalizer(s[:, a:a + window]), window) for a in st]))  # pad after normalising
        expected.append(torch.softmax(StubModel()(batch), 1).mean(0).numpy())
    np.testing.assert_allclose(probs, np.stack(expected), rtol=1e-5, atol=1e-6)
    assert probs.shape == (len(records.ids), 4)


def test_cache_hit_and_rebuild(dataset, tmp_path):
    root, split, _ = dataset
    first = CountingCinC2017(str(root), str(split))
    _, sig1 = load_signals(first, preprocess_cfg(tmp_path / "cache"), "cinc17")
    again = CountingCinC2017(str(root), str(split))
    _, sig2 = load_signals(again, preprocess_cfg(tmp_path / "cache"), "cinc17")
    assert first.reads == 10 and again.reads == 0
    assert all(np.array_equal(a, b) for a, b in zip(sig1, sig2))
    write_record(root / "training2017", "A00003", 4 * FS, seed=99)        # a source file changes
    changed = CountingCinC2017(str(root), str(split))
    records, sig3 = load_signals(changed, preprocess_cfg(tmp_path / "cache"), "cinc17")
    assert changed.reads == 10 and sig3[records.ids.index("A00003")].shape == (1, 4 * FS)
    moved = {**PARTS, "A00001": "val"}                                      # another split file
    other = CountingCinC2017(str(root), str(write_split(tmp_path / "other.csv", moved)))
    load_signals(other, preprocess_cfg(tmp_path / "cache"), "cinc17")
    assert other.reads == 10 and len(list((tmp_path / "cache").iterdir())) == 3


def test_corrupt_mat_is_skipped_counted_and_strict_fails(dataset, tmp_path, caplog):
    root, split, _ = dataset
    mat = root / "training2017" / "A00005.mat"
    mat.write_bytes(mat.read_bytes()[:100])                                 # truncated download
    (root / "training2017" / "A00009.mat").write_bytes(b"not a mat file at all")
    with caplog.at_level(logging.WARNING):
        records, signals = load_signals(CinC2017(str(root), str(split)), preprocess_cfg(tmp_path / "c"), "cinc17")
    assert records.skipped == {"unreadable": ["A00005", "A00009"]} and len(signals) == 8
    assert "skipped 2 unreadable record(s)" in caplog.text and "A00005.mat" in caplog.text
    with pytest.raises(DataError, match=r"A00005.mat: unreadable"):
        load_signals(CinC2017(str(root), str(split), strict=True), preprocess_cfg(), "cinc17")


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs the CinC 2017 subset in ../shared/data/cinc17")
def test_shared_subset_labels_and_split_coverage():
    adapter = CinC2017(str(SHARED))
    records = adapter.records()
    assert len(records.ids) == 1000
    assert Counter(CLASSES[k] for k in records.labels) == {"N": 592, "O": 288, "A": 87, "~": 33}
    assert adapter.load(records.ids.index("A00013")).shape == (1, 9000)
    everything = pd.read_csv(SHARED / "REFERENCE-all.csv", header=None, names=["record", "label"])
    shipped = pd.read_csv(SHIPPED_SPLIT)
    assert len(everything) == 8528 and set(shipped["record"]) == set(everything["record"]) and len(shipped) == 8528
    assert records.skipped == {ABSENT_FROM_REFERENCE: sorted(set(everything["record"]) - set(records.ids))}


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/cinc17/REFERENCE-all.csv")
def test_shipped_split_is_reproduced_by_the_tool(tmp_path):
    out = tmp_path / "split.csv"
    assert _split_tool().main(["--reference", str(SHARED / "REFERENCE-all.csv"), "--out", str(out)]) == 0
    assert out.read_bytes() == SHIPPED_SPLIT.read_bytes()
