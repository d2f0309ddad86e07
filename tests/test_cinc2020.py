"""CinC 2020: the official challenge score on hand-computed cases, the shipped scoring tables, and the
adapter on fixture records written in the challenge's format (MATLAB v4 .mat + WFDB .hea)."""
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from ecgnet.challenge2020 import challenge_metric, load_weights, modified_confusion_matrix, multi_hot
from ecgnet.config import PreprocessCfg, load_config
from ecgnet.data.cinc2020 import LEADS, CinC2020
from ecgnet.data.dataset import load_signals
from ecgnet.data.splits import assert_disjoint, make_splits
from ecgnet.engine.evaluate import evaluate
from ecgnet.engine.run import train
from ecgnet.registry import DataError

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "ecgnet" / "data" / "resources"
NSR, AF, AFL, IAVB = "426783006", "164889003", "164890007", "270492004"
CRBBB, RBBB, PAC, SVPB, PVC, VPB = "713427006", "59118001", "284470004", "63593006", "427172004", "17338001"
LQT = "111975006"
IIAVB = "195042002"        # unscored (dx_mapping_unscored.csv)
NOT_IN_TABLES = "55827005"


# ---- the challenge metric ----

@pytest.fixture(scope="module")
def weights():
    return load_weights()


def score(weights, label_sets, output_sets):
    classes, w = weights
    return challenge_metric(w, multi_hot(label_sets, classes), multi_hot(output_sets, classes), classes)


def test_weights_merge_equivalent_rows_into_a_symmetric_24x24_matrix(weights):
    classes, w = weights
    assert w.shape == (24, 24) and len(classes) == 24
    assert np.array_equal(w, w.T) and np.all(np.diag(w) == 1)
    assert CRBBB in classes and PAC in classes and PVC in classes              # representatives kept
    assert RBBB not in classes and SVPB not in classes and VPB not in classes  # equivalents merged
    assert classes[:3] == [IAVB, AF, AFL] and w[classes.index(AF), classes.index(AFL)] == 0.5


def test_shipped_tables_are_the_official_files():
    official = {  # SHA-256 of dx_mapping_scored.csv, dx_mapping_unscored.csv, weights.csv (evaluation-2020)
        "cinc2020_dx_mapping_scored.csv": "7b98b27a14ce1d52cc58e1fe2d1e1ccd824afb611e93a312a3f9519823e5da03",
        "cinc2020_dx_mapping_unscored.csv": "f82d57c866b73b715f9e436fedb92b8fd791e4298e64dd485437369a4544f966",
        "cinc2020_weights.csv": "879908ab77ce7ea64a3d0c009fe9d31d9393ec7cd8866190a0efeda19afdf9dc"}
    for name, digest in official.items():
        assert hashlib.sha256((RESOURCES / name).read_bytes()).hexdigest() == digest, name
    assert "BSD 2-Clause" in (RESOURCES / "CINC2020_LICENSE.txt").read_text()


def test_equivalent_codes_share_a_column_and_other_codes_are_ignored(weights):
    classes, _ = weights
    y = multi_hot([[RBBB], [CRBBB], [CRBBB, RBBB], [SVPB, IIAVB, NOT_IN_TABLES]], classes)
    assert y.sum(1).tolist() == [1, 1, 1, 1]
    assert y[:3, classes.index(CRBBB)].all() and y[3, classes.index(PAC)]


def test_perfect_outputs_score_1_and_normal_only_outputs_score_0(weights):
    labels = [[AF], [NSR], [RBBB, IAVB], [PVC, PAC, LQT], [IIAVB]]
    assert score(weights, labels, labels) == pytest.approx(1.0)
    assert score(weights, labels, [[NSR]] * len(labels)) == pytest.approx(0.0)
    # outputs may use either code of an equivalent pair: CRBBB for RBBB, VPB for PVC, SVPB for PAC
    assert score(weights, labels, [[AF], [NSR], [CRBBB, IAVB], [VPB, SVPB, LQT], []]) == pytest.approx(1.0)


def test_two_records_by_hand(weights):
    # r1: label {AF}, output {AFL}: |union| = 2, A[AF, AFL] = 1/2, W[AF, AFL] = 0.5  -> observed 0.25
    #     correct A[AF, AF] = 1 -> 1;  inactive {NSR}: A[AF, NSR] = 1/2, W = 0.25   -> 0.125
    # r2: label {NSR}, output {NSR}: 1 in all three sums.
    # score = (1.25 - 1.125) / (2 - 1.125) = 1/7
    assert score(weights, [[AF], [NSR]], [[AFL], [NSR]]) == pytest.approx(1 / 7)


def test_three_records_by_hand_with_an_equivalent_pair_and_an_unscored_record(weights):
    # r1: labels {RBBB -> CRBBB, IAVB}, output {CRBBB}: |union| = 2
    #     observed A[CRBBB, CRBBB] = A[IAVB, CRBBB] = 1/2: 0.5 * 1 + 0.5 * W[IAVB, CRBBB] (0.4) = 0.7
    #     correct: 4 pairs of 1/2: 0.5 + 0.5 + 2 * 0.5 * 0.4 = 1.4
    #     inactive {NSR}: |union| = 3: (W[CRBBB, NSR] 0.35 + W[IAVB, NSR] 0.45) / 3 = 0.8 / 3
    # r2: label {NSR}, outputs {NSR, AF}: |union| = 2: 0.5 * 1 + 0.5 * W[NSR, AF] (0.25) = 0.625; correct 1, inactive 1
    # r3: only an unscored code, output {AF}: no positive label, adds nothing to any sum
    # score = (1.325 - 19/15) / (2.4 - 19/15) = 0.875 / 17 = 7/136
    value = score(weights, [[RBBB, IAVB], [NSR], [IIAVB]], [[CRBBB], [NSR, AF], [AF]])
    assert value == pytest.approx(7 / 136)
    assert score(weights, [[RBBB, IAVB], [NSR]], [[CRBBB], [NSR, AF]]) == pytest.approx(7 / 136)


def test_matches_the_official_scorer_on_a_fixed_case(weights):
    labels = [[RBBB, IAVB], [NSR], [AF, VPB], [SVPB], [IIAVB], [CRBBB, "164934002"]]
    outputs = [[CRBBB, NSR], [NSR, AF], [AF], [PAC, PVC], [AF], [RBBB]]
    # evaluate_12ECG_score.py (evaluation-2020, final version) on these labels as .hea #Dx lines and these
    # outputs as its csv files (27 scored codes, 1 where listed) printed 0.37166424065987386
    assert score(weights, labels, outputs) == pytest.approx(0.37166424065987386, abs=1e-12)


def test_modified_confusion_matrix_normalises_by_the_union():
    labels = np.array([[1, 1, 0], [0, 0, 0]], bool)
    outputs = np.array([[0, 1, 1], [1, 0, 0]], bool)
    expected = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 0]]) / 3   # |{0, 1, 2}| = 3; row 2 has no label
    assert np.allclose(modified_confusion_matrix(labels, outputs), expected)


# ---- fixture records in the challenge format ----

def write_record(folder: Path, rid: str, dx: list[str], fs: float = 500, seconds: float = 4.0, age="61",
                 sex="Female", seed: int = 0, wave_hz: float | None = None) -> np.ndarray:
    """A challenge record: ``val`` int16 (12, n) in a MATLAB v4 .mat (header 'val' at byte 24), and
    a .hea naming it as WFDB format 16+24 at 1000/mV, with the #Age/#Sex/#Dx comments.
    Returns the signal in mV."""
    folder.mkdir(parents=True, exist_ok=True)
    n = int(round(fs * seconds))
    t = np.arange(n) / fs
    rng = np.random.default_rng(seed)
    mv = rng.normal(0, 0.05, (12, n)) if wave_hz is None else np.outer(np.linspace(0.5, 1.6, 12),
                                                                       np.sin(2 * np.pi * wave_hz * t))
    val = np.round(mv * 1000).astype(np.int16)
    scipy.io.savemat(folder / f"{rid}.mat", {"val": val}, format="4")
    lines = [f"{rid} 12 {fs:g} {n} 05-Feb-2020 11:39:16"]
    for k, lead in enumerate(LEADS):
        checksum = int(val[k].astype(np.int64).sum()) & 0xFFFF
        checksum -= 65536 if checksum > 32767 else 0
        lines.append(f"{rid}.mat 16+24 1000/mV 16 0 {val[k, 0]} {checksum} 0 {lead}")
    lines += [f"#Age: {age}", f"#Sex: {sex}", f"#Dx: {','.join(dx)}", "#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    (folder / f"{rid}.hea").write_text("\n".join(lines) + "\n")
    return val / 1000.0


@pytest.fixture
def small(tmp_path):
    """Five records in the tarball layout: two sources, an equivalent pair, unscored codes."""
    root = tmp_path / "cinc2020"
    write_record(root / "Training_WFDB", "A0001", [RBBB], age="74", sex="Male", seed=1)
    write_record(root / "Training_WFDB", "A0002", [CRBBB, AF], seed=2)
    write_record(root / "WFDB", "HR00001", [NSR, NOT_IN_TABLES], age="NaN", seed=3)
    write_record(root / "WFDB", "E00001", [IIAVB], seed=4)                # unscored only
    write_record(root / "Training_2", "Q0001", [SVPB, IIAVB], seed=5)
    return root


def test_labels_folds_and_header_info(small, caplog):
    with caplog.at_level(logging.WARNING):
        adapter = CinC2020(str(small))
    records = adapter.records()
    assert records.ids == ["A0001", "A0002", "E00001", "HR00001", "Q0001"]
    assert records.labels.dtype == np.float32 and records.labels.shape == (5, 24)
    assert records.class_names[4] == "CRBBB|RBBB" and records.class_names[20] == "NSR"
    crbbb, af, pac = (records.class_names.index(n) for n in ("CRBBB|RBBB", "AF", "PAC|SVPB"))
    y = records.labels
    assert y[0, crbbb] == y[1, crbbb] == 1 and y[1, af] == 1 and y[4, pac] == 1
    assert y.sum(1).tolist() == [1, 2, 0, 1, 1]          # E00001 (unscored only) is an all-zero row
    assert records.groups == records.ids and records.fs == 500.0 and records.leads == LEADS
    assert records.folds.tolist() == [1, 1, 6, 5, 2]     # CPSC, CPSC, Georgia, PTB-XL, CPSC-Extra
    info = adapter.header_info
    assert info.loc["A0001", "age"] == 74 and info.loc["A0001", "sex"] == "Male" and np.isnan(info.loc["HR00001", "age"])
    assert info.loc["Q0001", "source"] == "CPSC-Extra" and info.loc["Q0001", "dx"] == f"{SVPB},{IIAVB}"
    assert NOT_IN_TABLES in caplog.text                  # ignored, but said so

    dropped = CinC2020(str(small), keep_unscored=False).records()
    assert "E00001" not in dropped.ids and dropped.skipped["no scored diagnosis"] == ["E00001"]


def test_load_gives_millivolts_as_wfdb_reads_the_same_files(small):
    adapter = CinC2020(str(small))
    x = adapter.load(0)
    assert x.dtype == np.float32 and x.shape == (12, 2000)
    record = wfdb.rdrecord(str(small / "Training_WFDB" / "A0001"))    # format 16 at byte offset 24
    assert np.allclose(x, record.p_signal.T, atol=1e-6)


def test_mixed_rates_are_resampled_to_fs(tmp_path):
    root = tmp_path / "mixed"
    write_record(root / "Training_StPetersburg", "I0001", [AF], fs=257, seconds=6, wave_hz=3.0)
    write_record(root / "Training_PTB", "S0001", [NSR], fs=1000, seconds=6, wave_hz=3.0)
    write_record(root / "Training_WFDB", "A0001", [NSR], fs=500, seconds=6, wave_hz=3.0)
    adapter = CinC2020(str(root), fs=500)
    t = np.arange(3000) / 500
    expected = np.outer(np.linspace(0.5, 1.6, 12), np.sin(2 * np.pi * 3.0 * t))
    for i in range(3):
        x = adapter.load(i)
        assert x.shape == (12, 3000)
        assert np.abs(x - expected)[:, 250:-250].max() < 0.01   # away from the edges of the polyphase filter
    assert CinC2020(str(root), fs=100).load(0).shape == (12, 600)


def test_missing_or_empty_folder_names_the_setup_script(tmp_path):
    for root in (tmp_path / "absent", tmp_path):
        with pytest.raises(DataError, match="experiments/cinc2020/setup.sh") as err:
            CinC2020(str(root))
        assert "\n" not in str(err.value)


def test_incomplete_records_are_left_out_and_listed(small):
    (small / "Training_WFDB" / "A0002.mat").unlink()
    hea = small / "WFDB" / "HR00001.hea"
    hea.write_text("\n".join(line for line in hea.read_text().splitlines() if not line.startswith("#Dx")) + "\n")
    records = CinC2020(str(small)).records()
    assert records.ids == ["A0001", "E00001", "Q0001"]
    assert records.skipped == {".mat missing": ["A0002"], "no #Dx line": ["HR00001"]}


def test_a_record_in_two_folders_is_an_error(small):
    write_record(small / "copy", "A0001", [AF])
    with pytest.raises(DataError, match="A0001 is in"):
        CinC2020(str(small))


def preprocess_cfg(cache_dir, **kw):
    out = {f: getattr(PreprocessCfg(), f) for f in PreprocessCfg.__dataclass_fields__}
    return {**out, "cache_dir": None if cache_dir is None else str(cache_dir), **kw}


def counting(adapter):
    adapter.reads = 0
    load = adapter.load

    def counted(i):
        adapter.reads += 1
        return load(i)
    adapter.load = counted
    return adapter


def test_corrupt_mat_is_counted_and_skipped_unless_strict(small, caplog):
    (small / "Training_2" / "Q0001.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with caplog.at_level(logging.WARNING):
        records, signals = load_signals(CinC2020(str(small)), preprocess_cfg(None), "cinc2020")
    assert "Q0001" not in records.ids and records.skipped["unreadable"] == ["Q0001"]
    assert len(signals) == 4 and "Q0001.mat" in caplog.text
    with pytest.raises(DataError, match="Q0001.mat"):
        load_signals(CinC2020(str(small), strict=True), preprocess_cfg(None), "cinc2020")


def test_cache_hit_and_rebuild_on_changed_file_or_rate(small, tmp_path):
    cache = tmp_path / "cache"
    first = counting(CinC2020(str(small)))
    _, sig1 = load_signals(first, preprocess_cfg(cache), "cinc2020")
    again = counting(CinC2020(str(small)))
    _, sig2 = load_signals(again, preprocess_cfg(cache), "cinc2020")
    assert first.reads == 5 and again.reads == 0
    assert all(np.array_equal(a, b) for a, b in zip(sig1, sig2))
    write_record(small / "Training_WFDB", "A0002", [CRBBB, AF], seconds=5, seed=9)
    changed = counting(CinC2020(str(small)))
    _, sig3 = load_signals(changed, preprocess_cfg(cache), "cinc2020")
    assert changed.reads == 5 and sig3[1].shape == (12, 2500)
    slower = counting(CinC2020(str(small), fs=250))
    _, sig4 = load_signals(slower, preprocess_cfg(cache), "cinc2020")
    assert slower.reads == 5 and sig4[1].shape == (12, 1250)


# ---- end to end: the shipped config, shrunk, on 40 fixture records ----

DX_CHOICES = [[NSR], [AF], [IAVB], [RBBB], [CRBBB], [PAC], [AF, RBBB], [NSR, IAVB], [IIAVB], [SVPB]]
SOURCES = [("Training_WFDB", "A{:04d}", 500), ("Training_2", "Q{:04d}", 500), ("WFDB", "HR{:05d}", 500),
           ("Training_StPetersburg", "I{:04d}", 257), ("Training_PTB", "S{:04d}", 1000)]


def test_train_and_evaluate_report_the_challenge_score(tmp_path):
    root = tmp_path / "cinc2020"
    for i in range(40):
        folder, name, fs = SOURCES[i % 5]                            # 257, 500 and 1000 Hz records
        dx = DX_CHOICES[i % len(DX_CHOICES)]
        wave = 1.0 + 2 * (AF in dx) + (RBBB in dx or CRBBB in dx)     # something to learn
        write_record(root / folder, name.format(i + 1), dx, fs=fs, seconds=4, seed=i, wave_hz=wave)
    opts = [f"data.root={root}", "data.fs=100", "input.window_s=4", "input.eval_stride_s=2",
            f"preprocess.cache_dir={tmp_path / 'cache'}", "model.widths=[8, 8]", "model.hidden=8",
            "model.kernel_size=7", "sampler.max_copies=3", "kfold.folds=2", "train.epochs=2",
            "train.batch_size=16", "train.tensorboard=false", "train.early_stop_patience=null",
            "schedule.cooldown_epochs=1", "eval.plots=false"]
    cfg = load_config(REPO / "cfgs" / "cinc2020" / "se_resnet1d_seed000.yaml", opts)
    run = train(cfg, work_dir=str(tmp_path / "run"))
    history = (run / "fold0" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val/challenge_score" in history[0].split(",")
    splits = json.loads((run / "splits.json").read_text())
    for fold in splits["folds"]:   # records are the groups: no record on two sides
        assert not (set(fold["train"]) | set(fold["val"])) & set(splits["test"])
    results = evaluate(run, "test", tmp_path / "report")
    assert set(results) == {"fold0", "fold1", "ensemble_vote", "ensemble_mean"}
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for name, metrics in saved.items():
        assert isinstance(metrics["challenge_score"], float) and metrics["challenge_score"] <= 1.0, name
    assert "challenge_score" in (tmp_path / "report" / "summary.txt").read_text()


def test_predefined_split_by_source(small):
    records = CinC2020(str(small)).records()
    cfg = {"type": "predefined", "train_folds": [1, 2, 5], "val_folds": None, "test_folds": [6],
           "val_fraction": 0.3, "test_fraction": 0.2, "seed": 0}
    splits = make_splits(records, cfg)
    assert [records.ids[i] for i in splits["test"]] == ["E00001"]
    train_idx, val_idx = splits["folds"][0]
    assert_disjoint(records, {"train": train_idx, "val": val_idx, "test": splits["test"]})
