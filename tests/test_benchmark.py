"""tools/benchmark.py: every row of the table is measured (tiny sizes), ratios are positive numbers,
the JSON holds the same rows, a missing torch_ecg is reported as not installed, bad input is one line."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ecgnet import benchmark
from ecgnet.benchmark import BACKBONES, BENCH_EXTRA, Settings, parse_rows, run_benchmark
from ecgnet.config import load_config, load_yaml_tree
from ecgnet.registry import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "cfgs" / "ptbxl" / "resnet1d_wang_superdiagnostic.yaml"
TINY = Settings(batch_size=8, warmup=1, steps=2, blocks=2, items=200, decode_items=20, fixture_records=30,
                hdf5_mb=0.5, eval_records=8, compile=False, compile_skip="skipped (test)")


def backbones() -> dict:
    return {name: load_yaml_tree(REPO / "cfgs" / "_base_" / "models" / f"{name}.yaml")["model"] for name in BACKBONES}


def run(rows, tmp_path, **kw):
    lines = []
    report = run_benchmark(load_config(CONFIG), backbones(), rows, TINY, devices=["cpu"],
                           json_path=str(tmp_path / "bench.json"), out=lines.append, **kw)
    return "\n".join(lines), report


def ratio_of(row: dict) -> float:
    return float(re.match(r"[+-]?[\d.]+", row["ratio"]).group())


def test_every_row_is_measured_and_torch_ecg_missing_is_reported(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_ecg", None)        # import torch_ecg -> ModuleNotFoundError
    text, report = run(list(benchmark.ROWS), tmp_path)
    first, second = text.splitlines()[:2]
    assert first.startswith("train.amp auto on cpu: amp: ")
    assert second.startswith("machine: ") and " cores" in second and "torch " in second and "GPU: " in second
    assert "PTB-XL fixture: 30 simulated records" in text
    labels = [r["row"] for r in report["rows"]]
    assert labels == ["1 data path (items/s, warm)", "2 loader overhead/step [cpu]",
                      *[f"3 train samples/s {name} [cpu]" for name in BACKBONES],
                      "4 ecgnet vs torch_ecg samples/s [cpu]", "5 lazy HDF5 peak RSS", "6 k-fold evaluation [cpu]"]
    for label in labels:
        assert label in text
    rows = {r["row"][:1]: r for r in report["rows"] if not r["row"].startswith("3")}
    assert ratio_of(rows["1"]) > 0 and rows["1"]["values"]["wfdb_items_s"] > 0
    assert rows["2"]["values"]["loader_step_s"] > 0 and rows["2"]["values"]["prebuilt_step_s"] > 0
    assert rows["5"]["values"]["S"]["peak_kb"] > 0 and ratio_of(rows["5"]) > 0
    assert ratio_of(rows["6"]) > 0 and rows["6"]["values"]["max_abs_diff"] < 1e-2
    for row in report["rows"]:
        if row["row"].startswith("3"):
            fp32, bf16 = float(row["cases"][0][1].replace(",", "")), float(row["cases"][1][1].replace(",", ""))
            assert fp32 > 0 and bf16 > 0 and ratio_of(row) > 0
            assert row["cases"][2][1] == "skipped (test)"
        assert row["verdict"] in ("met", "NOT MET", "-")
    assert [list(c) for c in rows["4"]["cases"]] == [["torch_ecg", BENCH_EXTRA]] and rows["4"]["verdict"] == "-"
    assert BENCH_EXTRA in text
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert [r["row"] for r in saved["rows"]] == labels and saved["machine"]["torch"]


def test_torch_ecg_that_fails_to_import_names_the_reason(tmp_path, monkeypatch):
    def broken():
        raise ModuleNotFoundError("No module named 'biosppy'", name="biosppy")
    monkeypatch.setattr(benchmark, "_import_torch_ecg", broken)
    text, report = run(["torch_ecg"], tmp_path)
    (row,) = report["rows"]
    assert BENCH_EXTRA in row["cases"][0][1] and "biosppy" in row["cases"][0][1] and row["met"] is None


@pytest.mark.skipif(importlib.util.find_spec("torch_ecg") is None,
                    reason="the bench extra (pip install -e .[bench]) is not installed")
def test_torch_ecg_row_compares_both_data_paths(tmp_path):
    text, report = run(["torch_ecg"], tmp_path)
    (row,) = report["rows"]
    values = row["values"]
    assert values["ecgnet"] > 0 and values["torch_ecg"] > 0 and ratio_of(row) > 0
    assert values["params"]["ecgnet"] == 473_349 and values["params"]["torch_ecg"] > 0
    assert "torch_ecg 0.0.33" in text and "MMAC/sample" in text


def test_bad_input_is_one_clear_line(tmp_path):
    assert parse_rows("1,hdf5") == ["data", "hdf5"]
    with pytest.raises(ConfigError, match="--only: unknown row 'nope'"):
        parse_rows("data,nope")
    with pytest.raises(DataError, match="--ptbxl-root .*no ptbxl_database.csv"):
        run(["data"], tmp_path, ptbxl_root=str(tmp_path / "missing"))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "--only", "7"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --only: unknown row '7'; choose from {', '.join(benchmark.ROWS)} (or 1-6)"]
