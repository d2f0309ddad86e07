"""External evaluation: a trained model scored on another dataset (``tools/evaluate.py --ckpt RUN
--config OTHER.yaml --split all|test``).

The other dataset is read by its own adapter (its ``data`` section; ``split`` for ``--split test``),
then given exactly the model's input: its leads picked by name in the model's order, resampled to the
model's rate and band-passed as the model's ``preprocess`` says, the model's windows, normaliser,
calibration and thresholds (``Predictor``). Classes are matched by ``eval.class_map`` in the other
config: ``{model class: other dataset class or [classes]}``; without it, classes of the same name.
A model class that nothing maps to is left out of the scores (and listed); a single-label record
whose class maps to no model class is left out (counted). Every report says it is external.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..build import resolve_config
from ..config import check_schema, load_yaml_tree
from ..data.base import ECGAdapter, RecordSet
from ..data.recordings import lead_indices
from ..data.splits import make_splits
from ..html_report import write_html_report
from ..metrics import aami_table, is_aami
from ..registry import ConfigError, DataError
from ..reports import per_class_table, summary_table, write_json, write_model_report
from .evaluate import DATA_LOCATION, score
from .predictor import CHUNK_RECORDS, Predictor
from .run import git_commit, prepare_data

log = logging.getLogger(__name__)


def external_config(trained: dict, other: dict, eval_overrides: Optional[dict]) -> dict:
    """The model's config with the other dataset's ``data`` (and ``split``) and the model's
    ``preprocess`` at its own rate, so the other records reach the model as its training records did.
    For the model's own adapter, ``data`` only overrides what it names (e.g. ``record_names``, ``fs``)."""
    data = other["data"]
    if data.get("type", trained["data"]["type"]) == trained["data"]["type"]:
        data = {**trained["data"], **data}     # the same adapter: the other config changes what it names
    cfg = {**trained, "data": data, "split": other.get("split", {}),
           "eval": {**trained["eval"], **other.get("eval", {}), **(eval_overrides or {})},
           "preprocess": {**trained["preprocess"], "fs": None,
                          "cache_dir": other.get("preprocess", {}).get("cache_dir")}}
    return resolve_config(check_schema(cfg))


def is_external(trained: dict, config_path: str | Path) -> bool:
    """Whether ``--config`` names another dataset (its data settings differ beyond where the files
    live) or maps classes (``eval.class_map``)."""
    other = load_yaml_tree(config_path)
    if (other.get("eval") or {}).get("class_map"):
        return True
    data = other.get("data") or {}
    mine = trained["data"]
    return any(value != mine.get(k) for k, value in data.items() if f"data.{k}" not in DATA_LOCATION)


def class_mapping(model_classes: list[str], data_classes: list[str], class_map: Optional[dict],
                  config: str | Path) -> dict[str, list[int]]:
    """model class -> the other dataset's class positions; only model classes with a match."""
    if class_map is None:
        shared = [c for c in model_classes if c in data_classes]
        if not shared:
            raise ConfigError(f"{config}: the model's classes ({', '.join(model_classes[:10])}) and the data's "
                              f"({', '.join(data_classes[:10])}) share no name; give eval.class_map: "
                              "{model class: data class or [data classes]}")
        return {c: [data_classes.index(c)] for c in shared}
    out = {}
    for model_class, targets in class_map.items():
        if model_class not in model_classes:
            raise ConfigError(f"{config}: eval.class_map names '{model_class}', which is not a class of the model "
                              f"({', '.join(model_classes[:20])})")
        targets = [targets] if isinstance(targets, str) else list(targets)
        unknown = [t for t in targets if t not in data_classes]
        if unknown:
            raise ConfigError(f"{config}: eval.class_map: {model_class} -> {', '.join(map(str, unknown))}: not a "
                              f"class of the data ({', '.join(data_classes[:20])})")
        out[model_class] = [data_classes.index(t) for t in targets]
    return out


def evaluate_external(ckpt: str | Path, config: str | Path, split: str = "all", out: Optional[str | Path] = None,
                      eval_overrides: Optional[dict] = None) -> dict:
    """Score ``ckpt`` (a checkpoint, run or k-fold run: its ensemble) on the dataset of ``config``."""
    started = time.time()
    if split not in ("all", "test"):
        raise ConfigError(f"--split {split}: an external evaluation scores 'all' of the other dataset or its 'test' "
                          "split")
    predictor = Predictor(ckpt)
    trained = predictor.cfg
    other = load_yaml_tree(config)
    if "data" not in other:
        raise ConfigError(f"--config {config}: no data section; name the dataset to score the model on")
    cfg = external_config(trained, other, eval_overrides)
    cfg["preprocess"]["fs"] = predictor.fs          # after the check: resample every record to the model's rate
    class_map = cfg["eval"].get("class_map")
    data = prepare_data(cfg)
    records = data.records
    mapping = class_mapping(predictor.class_names, list(records.class_names), class_map, config)
    leads = lead_indices(list(records.leads), predictor.leads, f"{config}: the data")
    if split == "all":
        index = np.arange(len(records.ids))
    else:
        index = make_splits(records, cfg["split"])["test"]
    y_data = records.multi_hot(index)
    scored = [predictor.class_names.index(c) for c in mapping]
    y = np.stack([y_data[:, cols].max(1) for cols in mapping.values()], 1).astype(np.float32)
    keep = np.ones(len(index), bool)
    if not records.multilabel:          # a record of a class no model class maps to cannot be scored
        keep = y.sum(1) > 0
        if predictor.multilabel:
            log.warning("a single-label dataset scored by a multi-label model: each record's one class as its "
                        "positive label")
    if not keep.any():
        raise DataError(f"{config}: no record of the {split} split has a class that eval.class_map maps to the model")
    left_out = int((~keep).sum())
    index, y = index[keep], y[keep]
    probs, decisions = [], []
    for first in range(0, len(index), CHUNK_RECORDS):
        chunk = [np.ascontiguousarray(data.signals[i][leads]) for i in index[first:first + CHUNK_RECORDS]]
        p, d, _, _ = predictor.score_signals(chunk)
        probs.append(p)
        decisions.append(d)
    probs, decisions = np.concatenate(probs)[:, scored], np.concatenate(decisions)[:, scored]
    single = not (records.multilabel or predictor.multilabel)
    if single:      # renormalise over the scored classes: a decision among them
        probs = probs / np.maximum(probs.sum(1, keepdims=True), 1e-12)
        decisions = np.eye(len(scored), dtype=np.int64)[probs.argmax(1)]
    view = RecordSet(ids=[records.ids[i] for i in index], groups=[records.groups[i] for i in index],
                     labels=y if not single else y.argmax(1), class_names=list(mapping), fs=predictor.fs,
                     leads=predictor.leads)
    groups = np.asarray(view.groups, dtype=object)
    metrics = score(y, probs, decisions, groups, view, ECGAdapter(), cfg["eval"]["bootstrap"], cfg["seed"])
    unmapped = [c for c in predictor.class_names if c not in mapping]
    metrics["external"] = {"dataset": cfg["data"]["type"], "config": str(config), "split": split,
                           "class_map": {c: [records.class_names[k] for k in cols] for c, cols in mapping.items()},
                           "model_classes_not_scored": unmapped, "records_left_out": left_out}
    name = "ensemble" if len(predictor.models) > 1 else "model"
    out_dir = Path(out) if out else predictor.run_dir / "eval" / f"external_{cfg['data']['type']}_{split}"
    title = f"{predictor.run_dir.name} ({predictor.cfg['model']['type']}) on {cfg['data']['type']}, {split} (external)"
    write_model_report(out_dir, title, metrics, y, probs, list(mapping), view.multilabel, cfg["eval"]["plots"])
    results = {name: metrics}
    write_json(results, out_dir / "metrics.json")
    mapped = "; ".join(f"{c} <- {', '.join(v)}" for c, v in metrics["external"]["class_map"].items())
    text = (f"EXTERNAL evaluation: {predictor.run_dir} (trained on {trained['data']['type']}) scored on "
            f"{cfg['data']['type']} ({config}), {split}: {len(index)} records"
            + (f", {left_out} left out (class not mapped)" if left_out else "") + "\n"
            f"input: leads {', '.join(predictor.leads)} resampled to {predictor.fs:g} Hz; classes: {mapped}\n"
            + (f"model classes not scored (nothing maps to them): {', '.join(unmapped)}\n" if unmapped else "")
            + f"{summary_table(results)}\n\nper class:\n{per_class_table(metrics)}\n")
    if is_aami(list(mapping), view.multilabel):
        text += f"\nAAMI beat classes:\n{aami_table(metrics)}\n"
    (out_dir / "summary.txt").write_text(text)
    info = {"command": sys.argv, "split": split, "main": name, "models": [name], "external": metrics["external"],
            "aggregate": cfg["eval"]["aggregate"], "bootstrap": cfg["eval"]["bootstrap"],
            "git_commit": git_commit(), "units": len(index), "wall_s": round(time.time() - started, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(info, out_dir / "eval_info.json")
    if cfg["eval"]["report"]:
        write_html_report(out_dir, title, text.split("\n")[:3], results, name, out_dir, cfg, info)
    print(text + f"\nreports: {out_dir}")
    return results
