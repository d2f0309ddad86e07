"""Evaluate one checkpoint, or every fold of a k-fold run plus their ensembles, on the
test (or validation) split recorded in the checkpoints. Config, classes, thresholds and
normalisation all come from the checkpoints."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ..build import build, resolve_config
from ..config import load_config
from ..data.dataset import EvalWindows
from ..data.transforms import Normalizer
from ..ensemble import majority_vote, mean_probability
from ..metrics import classification_metrics
from ..registry import DataError
from ..reports import per_class_table, summary_table, write_json, write_model_report
from ..thresholds import decide
from .checkpoint import load_checkpoint
from .predict import amp_dtype, predict, resolve_device
from .run import prepare_data

log = logging.getLogger(__name__)


def find_checkpoints(path: str | Path) -> tuple[Path, list[Path]]:
    """-> (run directory, model checkpoints). Accepts a .pt file, a run dir or a k-fold run dir."""
    path = Path(path)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise DataError(f"--ckpt {path}: no such file or directory")
    if (path / "best.pt").is_file():
        return path, [path / "best.pt"]
    folds = sorted(path.glob("fold*/best.pt"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    if not folds:
        raise DataError(f"--ckpt {path}: no best.pt or fold*/best.pt inside; point it at a run directory or a .pt file")
    return path, folds


def _split_index(ids_in_data: list[str], wanted: list[str], source: Path, split: str) -> np.ndarray:
    position = {rid: i for i, rid in enumerate(ids_in_data)}
    missing = [rid for rid in wanted if rid not in position]
    if missing:
        raise DataError(f"{source}: {len(missing)} record(s) of its {split} split are not in the dataset "
                        f"(e.g. {missing[0]}); point data settings at the data it was trained on")
    return np.array([position[rid] for rid in wanted], dtype=np.int64)


def evaluate(ckpt: str | Path, split: str | None = None, out: str | Path | None = None,
             config: str | Path | None = None) -> dict:
    """``split`` defaults to the config's ``eval.split`` (test). Writes ``<out>/metrics.json`` (all models side by side), a sub-folder per model with
    metrics.json, per_class.csv, roc.png, confusion.png, and prints the tables. Returns the metrics."""
    run_dir, paths = find_checkpoints(ckpt)
    states = [load_checkpoint(p) for p in paths]
    for p, s in zip(paths, states):
        if not s.get("finished"):
            raise DataError(f"{p}: training did not finish (no tuned thresholds); "
                            f"finish it with tools/train.py --resume {run_dir}")
    cfg = resolve_config(load_config(config)) if config else states[0]["config"]
    split = split or cfg["eval"]["split"]
    data = prepare_data(cfg)
    records = data.records
    if list(records.class_names) != states[0]["class_names"]:
        raise DataError(f"{paths[0]}: trained on classes {states[0]['class_names']}, but the data has "
                        f"{list(records.class_names)}")
    device = resolve_device(cfg["train"]["device"])
    dtype = amp_dtype(cfg["train"]["amp"], device)
    out_dir = Path(out) if out else run_dir / "eval" / split
    names = [p.parent.name if len(paths) > 1 else "model" for p in paths]
    y_by_model, results, probs_all, decisions_all = {}, {}, [], []
    for name, path, state in zip(names, paths, states):
        index = _split_index(records.ids, state["split"][split], path, split)
        model = build("model", state["config"], in_leads=len(state["leads"]), num_classes=len(state["class_names"]))
        model.load_state_dict(state["model"])
        model.to(device)
        windows = EvalWindows(data.signals, index, state["window"], state["stride"],
                              Normalizer.from_state(state["normalizer"]), pad=not state.get("full_length", False))
        probs, _ = predict(model, windows, records.multilabel, device, dtype, cfg["train"]["eval_batch_size"])
        decisions = decide(probs, state["thresholds"], records.multilabel)
        y = records.multi_hot(index)
        results[name] = classification_metrics(y, probs, decisions, records.class_names, records.multilabel)
        results[name].update(data.adapter.dataset_metrics(y, probs, decisions))
        y_by_model[name] = (y, probs)
        probs_all.append(probs)
        decisions_all.append(decisions)
    shared_split = len({tuple(s["split"][split]) for s in states}) == 1
    if len(paths) > 1 and shared_split:
        y = y_by_model[names[0]][0]
        vote = majority_vote(decisions_all, probs_all, records.multilabel)
        mean_p, mean_d = mean_probability(probs_all, [s["thresholds"] for s in states], records.multilabel)
        for name, p, d in (("ensemble_vote", np.mean(probs_all, 0), vote), ("ensemble_mean", mean_p, mean_d)):
            results[name] = classification_metrics(y, p, d, records.class_names, records.multilabel)
            results[name].update(data.adapter.dataset_metrics(y, p, d))
            y_by_model[name] = (y, p)
    elif len(paths) > 1:
        log.info("the %s split differs per fold, so no ensemble is scored on it", split)
    plots = cfg["eval"]["plots"]
    for name, metrics in results.items():
        target = out_dir if len(results) == 1 else out_dir / name
        write_model_report(target, name, metrics, *y_by_model[name], records.class_names, records.multilabel, plots)
    write_json(results, out_dir / "metrics.json")
    main = "ensemble_" + cfg["kfold"]["ensemble"] if f"ensemble_{cfg['kfold']['ensemble']}" in results else names[0]
    text = (f"{split} split, {results[main]['n']} records: {run_dir}\n{summary_table(results)}\n\n"
            f"per class ({main}):\n{per_class_table(results[main])}\n")
    (out_dir / "summary.txt").write_text(text)
    print(text + f"\nreports: {out_dir}")
    return results
