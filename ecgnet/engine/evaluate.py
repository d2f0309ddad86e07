"""Evaluate one checkpoint, or every fold of a k-fold run plus their ensembles, on the
test (or validation) split recorded in the checkpoints. Config, classes, thresholds and
normalisation all come from the checkpoints."""
from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from ..bootstrap import bootstrap_cis
from ..calibration import calibration_metrics
from ..build import build_model, resolve_config
from ..config import check_schema, config_diff, describe_changes, load_config
from ..data.base import RecordSet
from ..data.dataset import EvalWindows
from ..data.transforms import Normalizer
from ..ensemble import majority_vote, mean_probability
from ..html_report import write_html_report
from ..metrics import aami_table, classification_metrics, is_aami
from ..registry import ConfigError, DataError
from ..reports import MAX_PLOTTED_CLASSES, per_class_table, summary_table, write_json, write_model_report
from ..thresholds import decide
from .checkpoint import load_finished
from .distributed import resolve_num_workers
from .predict import amp_dtype, describe_amp, pool_rows, resolve_device, to_probabilities, to_units, window_logits
from .run import git_commit, model_dirs, prepare_data

log = logging.getLogger(__name__)


def find_checkpoints(path: str | Path, several: bool = False) -> tuple[Path, list[Path]]:
    """-> (run directory, model checkpoints). Accepts a .pt file, a run dir or a k-fold run dir whose
    folds are all trained. ``several``: the caller takes several --ckpt (said in the error's hint)."""
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
    planned = _planned_folds(path)
    untrained = []
    if planned > 1:     # model_dirs of a 0/1-fold config is the run itself, which has no best.pt here
        untrained = [k for k, d in enumerate(model_dirs(path, planned)) if not (d / "best.pt").is_file()]
    if untrained:
        # an ensemble of the trained folds alone would be scored (and the test split read) as if it were the run's
        which = (f"fold {untrained[0]} of its {planned} has" if len(untrained) == 1 else
                 f"folds {', '.join(map(str, untrained))} of its {planned} have")
        raise DataError(f"--ckpt {path}: {which} no best.pt yet; "
                        f"finish the run with tools/train.py --resume {path}, or " +
                        (f"name the folds to score (--ckpt {path}/fold0 {path}/fold1 ... --out DIR)" if several
                         else f"use one trained fold (--ckpt {path}/fold0)"))
    return path, folds


def _planned_folds(run_dir: Path) -> int:
    """How many models a k-fold run was started to train (its config.yaml, written before the first fold
    trains); 0 when it has none (a copied folder of fold checkpoints)."""
    if not (run_dir / "config.yaml").is_file():
        return 0
    try:
        return int(yaml.safe_load((run_dir / "config.yaml").read_text())["kfold"]["folds"])
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        raise DataError(f"--ckpt {run_dir}: cannot tell how many folds the run has from its config.yaml "
                        f"({type(err).__name__}: {err}); name the fold checkpoints to score instead") from None


def gather_models(ckpts: list[str | Path]) -> tuple[Path | None, list[Path], list[str]]:
    """Every model of one or more ``--ckpt`` entries -> (run directory or None when several runs are
    combined, checkpoints, a name per model: ``model``, ``fold<k>``, or the run's folder name)."""
    found = [find_checkpoints(c, several=True) for c in ckpts]
    if len(found) == 1:
        run_dir, paths = found[0]
        return run_dir, paths, [p.parent.name if len(paths) > 1 else "model" for p in paths]
    paths, names = [], []
    for run_dir, run_paths in found:
        for p in run_paths:
            name = run_dir.name if len(run_paths) == 1 else f"{run_dir.name}/{p.parent.name}"
            if name in names:
                raise ConfigError(f"--ckpt: {name} is given twice; an ensemble takes each model once")
            paths.append(p)
            names.append(name)
    return None, paths, names


def _split_index(ids_in_data: list[str], wanted: list[str], source: Path, split: str) -> np.ndarray:
    position = {rid: i for i, rid in enumerate(ids_in_data)}
    missing = [rid for rid in wanted if rid not in position]
    if missing:
        raise DataError(f"{source}: {len(missing)} record(s) of its {split} split are not in the dataset "
                        f"(e.g. {missing[0]}); point data settings at the data it was trained on")
    return np.array([position[rid] for rid in wanted], dtype=np.int64)


def score(y: np.ndarray, probs: np.ndarray, decisions: np.ndarray, groups: np.ndarray, records: RecordSet,
          adapter, resamples: int, seed: int) -> dict:
    """Point estimates (scikit-learn), the dataset's own scores and, with ``resamples`` > 0,
    percentile bootstrap 95 % CIs resampling patients (``groups``)."""
    metrics = classification_metrics(y, probs, decisions, records.class_names, records.multilabel)
    metrics.update(adapter.dataset_metrics(y, probs, decisions))
    ci = bootstrap_cis(y, probs, decisions, records.multilabel, groups=groups, resamples=resamples, seed=seed,
                       extra=adapter.dataset_metrics)
    if ci is not None:
        metrics["ci"] = ci.pop("ci")
        for key, intervals in ci.pop("per_class").items():
            for row, interval in zip(metrics["per_class"], intervals):
                row[f"{key}_ci"] = interval
        metrics["bootstrap"] = ci
    return metrics


# ``evaluate --config`` may move the data (that is what it is for); every other setting of these
# sections shapes the signals the model sees and must match its checkpoint
INPUT_SECTIONS = ("data", "preprocess", "input")
DATA_LOCATION = {"data.root", "data.qc_cache", "data.split_file", "data.strict", "preprocess.cache_dir"}


def _checked_config(cfg: dict, path: Path) -> dict:
    """A checkpoint's config, checked like a user's (it is read from a file) and with the defaults of
    settings added since it was written."""
    try:
        return resolve_config(cfg)
    except ConfigError as err:
        raise DataError(f"{path}: the config stored in this checkpoint is not valid ({err})") from None


def _check_same_input(cfg: dict, trained: dict, config: str | Path, ckpt: Path) -> None:
    changed = [key for key in config_diff(trained, cfg)
               if key.split(".")[0] in INPUT_SECTIONS and key not in DATA_LOCATION]
    if changed:
        raise ConfigError(f"--config {config}: changes the input the model saw in training "
                          f"({describe_changes(changed, trained, cfg)}); only where the data lives (data.root) "
                          f"may differ from the config in {ckpt}")


def _check_writable(out_dir: Path, flag: str) -> None:
    existing = out_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{flag}: cannot write the report to {out_dir}: {existing} is a file; choose another "
                        "--out directory")
    if not os.access(existing, os.W_OK):
        raise DataError(f"{flag}: cannot write the report to {out_dir}: {existing} is not writable; choose "
                        "another --out directory")


def _one_pass(states: list[dict], split: str) -> bool:
    """Whether every model can score the same windows in one pass (``window_logits``): the same records
    of ``split``, window, stride, input mode and normalisation mode. Per-lead statistics may differ
    (each fold fits its own; they are applied per model on the device); per-record and no
    normalisation are the same for every model."""
    if len(states) < 2:
        return False
    first = states[0]
    return all(s["split"][split] == first["split"][split] and s["window"] == first["window"]
               and s["stride"] == first["stride"] and bool(s.get("full_length")) == bool(first.get("full_length"))
               and s["normalizer"]["mode"] == first["normalizer"]["mode"] for s in states)


def _disjoint(indices: list[np.ndarray]) -> bool:
    """True when no record is in two of the index arrays."""
    joined = np.concatenate(indices)
    return len(np.unique(joined)) == len(joined)


def _check_same_data(states: list[dict], paths: list[Path]) -> None:
    """Models of different runs are scored on one reading of the data: the same classes, leads, rate,
    features, and data/preprocess settings (their windows, normalisation and thresholds may differ)."""
    first = states[0]
    for path, state in zip(paths[1:], states[1:]):
        for key in ("class_names", "leads", "fs", "feature_names"):
            if state.get(key) != first.get(key):
                raise ConfigError(f"--ckpt {path}: trained with {key} {state.get(key)}, but {paths[0]} with "
                                  f"{first.get(key)}; an ensemble combines models of one task and input")
        changed = [k for k in config_diff(first["config"], state["config"])
                   if k.split(".")[0] in ("data", "preprocess") and k not in DATA_LOCATION]
        if changed:
            raise ConfigError(f"--ckpt {path}: reads the data differently from {paths[0]} "
                              f"({describe_changes(changed, first['config'], state['config'])}); an ensemble "
                              "combines models trained on the same data settings")


def evaluate(ckpt: str | Path | list, split: str | None = None, out: str | Path | None = None,
             config: str | Path | None = None, eval_overrides: dict | None = None) -> dict:
    """``ckpt``: one checkpoint / run / k-fold run, or a list of them to score as one ensemble (then
    ``out`` is required). ``split`` defaults to the config's ``eval.split`` (test). Writes ``<out>/metrics.json`` (all
    models side by side), ``eval_info.json`` (command, wall time, settings), ``summary.txt``, and a
    sub-folder per model with metrics.json, per_class.csv, roc.png, confusion.png; prints the tables.

    Windows are combined per record, and records per evaluation unit (``RecordSet.units``), by
    ``eval.aggregate``; CIs come from ``eval.bootstrap`` resamples of patients, the same resamples
    for every model so their intervals are comparable. Returns the metrics."""
    started = time.time()
    ckpts = list(ckpt) if isinstance(ckpt, (list, tuple)) else [ckpt]
    run_dir, paths, names = gather_models(ckpts)
    if run_dir is None and not out:
        raise ConfigError("--out: required when --ckpt names several runs (the report belongs to none of them)")
    states = load_finished(paths)
    if run_dir is None:
        _check_same_data(states, paths)
    trained = _checked_config(states[0]["config"], paths[0])
    cfg = trained
    if config and run_dir is not None:
        from .external import evaluate_external, is_external
        if is_external(trained, config):
            return evaluate_external(ckpts[0], config, split or "all", out, eval_overrides)
    if split == "all":
        raise ConfigError("--split all: scores every record of a dataset the model was not trained on; give that "
                          "dataset's config with --config (the model's own data has its training records)")
    if config:
        cfg = resolve_config(load_config(config))
        _check_same_input(cfg, trained, config, paths[0])
    if eval_overrides:       # checked like any config: known keys, types, ranges
        cfg = check_schema({**cfg, "eval": {**cfg["eval"], **eval_overrides}})
    split = split or cfg["eval"]["split"]
    aggregate = cfg["eval"]["aggregate"]
    resamples = cfg["eval"]["bootstrap"]
    # reports go under the run directory or --out, never where a checkpoint's config points: the
    # folder name is built from checked settings only (split: test|val, eval.* overrides); an override
    # gets its own folder, so it never replaces the run's own report (eval/<split>)
    suffix = "".join(f"_{k}-{v}" for k, v in sorted((eval_overrides or {}).items()))
    out_dir = Path(out) if out else run_dir / "eval" / f"{split}{suffix}"
    run_name = run_dir.name if run_dir else " + ".join(names)
    _check_writable(out_dir, "--out" if out else "--ckpt")   # before minutes of inference
    data = prepare_data(cfg)
    records = data.records
    if list(records.class_names) != states[0]["class_names"]:
        raise DataError(f"{paths[0]}: trained on classes {states[0]['class_names']}, but the data has "
                        f"{list(records.class_names)}")
    if list(records.leads) != states[0]["leads"] or data.fs != states[0]["fs"]:
        raise DataError(f"{paths[0]}: trained on leads {states[0]['leads']} at {states[0]['fs']} Hz, but the data "
                        f"gives {list(records.leads)} at {data.fs} Hz; use the data settings it was trained with")
    if records.feature_names != states[0].get("feature_names"):
        raise DataError(f"{paths[0]}: trained with per-record features {states[0].get('feature_names')}, but the "
                        f"data gives {records.feature_names}; use the data settings it was trained with "
                        "(e.g. data.rr_features)")
    device = resolve_device(cfg["train"]["device"])
    dtype = amp_dtype(cfg["train"]["amp"], device)
    log.info("%s", describe_amp(cfg["train"]["amp"], device, dtype))
    tcfg = cfg["train"]
    loader_args = {"num_workers": resolve_num_workers(tcfg["num_workers"], device), "pin_memory": device.type == "cuda",
                   "log_every_s": tcfg["log_every_s"]}
    curves, results, probs_all, decisions_all, raw = {}, {}, [], [], {}

    decided = {}

    def add(name, y, probs, decisions, groups):
        decided[name] = decisions
        results[name] = score(y, probs, decisions, groups, records, data.adapter, resamples, cfg["seed"])
        curves[name] = (y, probs)

    def load_model(state):
        model = build_model(state["config"], len(state["leads"]), len(state["class_names"]), state.get("feature_names"))
        model.load_state_dict(state["model"])
        return model.to(device)

    def windows_for(state, index, normalizer):
        return EvalWindows(data.signals, index, state["window"], state["stride"], normalizer,
                           pad=not state.get("full_length", False), features=records.features)

    indices = [_split_index(records.ids, state["split"][split], path, split) for path, state in zip(paths, states)]
    batch_size = tcfg["eval_batch_size"]
    if _one_pass(states, split):
        # k folds on one split: every batch is read once and each fold's model applied to it, with its
        # own per-lead normalisation applied on the device (per-record normalisation is fold-independent)
        normalizers = [Normalizer.from_state(s["normalizer"]) for s in states]
        shared = normalizers[0] if normalizers[0].mode == "per_record" else Normalizer("none")
        per_model = None if normalizers[0].mode == "per_record" else normalizers
        windows = windows_for(states[0], indices[0], shared)
        logits, rows, _ = window_logits([load_model(s) for s in states], windows, device, dtype, batch_size,
                                        normalizers=per_model, what=f"{split} split, {len(states)} models",
                                        **loader_args)
        outputs = iter([(z, rows, len(windows.index)) for z in logits])
    else:
        def one(name, state, index):
            windows = windows_for(state, index, Normalizer.from_state(state["normalizer"]))
            logits, rows, _ = window_logits([load_model(state)], windows, device, dtype, batch_size,
                                            what=f"{split} split, {name}", **loader_args)
            return logits[0], rows, len(windows.index)
        outputs = (one(name, state, index) for name, state, index in zip(names, states, indices))

    def thresholds_of(state):
        if cfg["eval"]["thresholds"] == "tuned":
            return state["thresholds"]
        return [cfg["thresholds"]["default"]] * len(records.class_names) if records.multilabel else None

    def record_probs(z, rows, n, temperature):
        return pool_rows(to_probabilities(z, records.multilabel, temperature), rows, n, aggregate)

    scored = []                # (unit ids, labels, groups) per model, beside probs_all / decisions_all
    for name, state, index, (z, rows, n) in zip(names, states, indices, outputs):
        temperature = state.get("temperature") if cfg["eval"]["calibration"] == "auto" else None
        unit_ids, y, probs, groups = to_units(records, index, record_probs(z, rows, n, temperature), aggregate)
        decisions = decide(probs, thresholds_of(state), records.multilabel)
        add(name, y, probs, decisions, groups)
        scored.append((unit_ids, y, groups))
        calibration = {"temperature": temperature, **calibration_metrics(y, probs, records.multilabel)}
        if temperature is not None:
            raw[name] = to_units(records, index, record_probs(z, rows, n, None), aggregate)[2]
            calibration["uncalibrated"] = calibration_metrics(y, raw[name], records.multilabel)
        results[name]["calibration"] = calibration
        probs_all.append(probs)
        decisions_all.append(decisions)
    shared_split = len({tuple(s["split"][split]) for s in states}) == 1
    if len(paths) > 1 and shared_split:
        thresholds = [thresholds_of(s) for s in states]
        vote = majority_vote(decisions_all, probs_all, records.multilabel, thresholds)
        mean_p, mean_d = mean_probability(probs_all, thresholds, records.multilabel)
        add("ensemble_vote", y, np.mean(probs_all, 0), vote, groups)
        add("ensemble_mean", y, mean_p, mean_d, groups)
        for name in ("ensemble_vote", "ensemble_mean"):
            results[name]["calibration"] = calibration_metrics(y, mean_p, records.multilabel)
    elif len(paths) > 1 and _disjoint(indices):
        # k-fold validation parts cover the pool once: each record scored by the one model that did not
        # train on it gives a cross-validated estimate over every train+val record (model selection on
        # small datasets such as MIT-BIH DS1, where one validation part holds a handful of patients).
        # Ranking metrics pool scores of differently calibrated models, so they can sit below every fold's.
        unit_ids, y, groups = (np.concatenate(parts) for parts in zip(*scored))
        probs, decisions = np.concatenate(probs_all), np.concatenate(decisions_all)
        add("out_of_fold", y, probs, decisions, groups)
        results["out_of_fold"]["calibration"] = calibration_metrics(y, probs, records.multilabel)
        log.info("the %s split differs per fold: its parts are disjoint, so they are also scored pooled "
                 "(out_of_fold, %d units)", split, len(unit_ids))
    elif len(paths) > 1:
        log.info("the %s split differs per fold and its parts overlap, so no ensemble is scored on it", split)
    models = cfg["model"]["type"] if run_dir else ", ".join(dict.fromkeys(s["config"]["model"]["type"] for s in states))
    title = f"{run_name} ({models}, {split} split)"
    for name, metrics in results.items():
        target = out_dir if len(results) == 1 else out_dir / name
        write_model_report(target, f"{title}: {name}", metrics, *curves[name], records.class_names,
                           records.multilabel, cfg["eval"]["plots"], raw_probs=raw.get(name))
    write_json(results, out_dir / "metrics.json")
    main = ("ensemble_" + cfg["kfold"]["ensemble"] if f"ensemble_{cfg['kfold']['ensemble']}" in results
            else "out_of_fold" if "out_of_fold" in results else names[0])
    unit = "records" if records.units is None else "units (records regrouped from their windows)"
    ci_note = "no CIs (eval.bootstrap: 0)"
    if resamples:
        boot = results[main]["bootstrap"]
        drawn = "patients" if boot["unit"] == "patient" else "scored units" if records.units else "records"
        ci_note = (f"95 % CIs: percentile bootstrap, {resamples} resamples of {drawn}"
                   + (", each keeping every class present in the split" if boot["class_preserving"] else
                      "; classes too rare for resamples that keep each of them, so class-averaged metrics "
                      "(macro, weighted) have no CI"))
    if cfg["eval"]["thresholds"] == "fixed":
        decision = f"fixed threshold {cfg['thresholds']['default']:g}" if records.multilabel else "argmax (untuned)"
    else:
        decision = "argmax" if all(s["thresholds"] is None for s in states) else "thresholds tuned on validation"
    temperatures = [s.get("temperature") for s in states] if cfg["eval"]["calibration"] == "auto" else []
    calibrated = ("temperature-scaled on validation" if all(t is not None for t in temperatures) and temperatures
                  else "partly temperature-scaled" if any(t is not None for t in temperatures) else "uncalibrated")
    cal = results[main]["calibration"]
    cal_note = f"probabilities {calibrated}: ECE {cal['ece']:.4f}, Brier {cal['brier']:.4f}"
    if "uncalibrated" in cal:
        cal_note += f" (uncalibrated: ECE {cal['uncalibrated']['ece']:.4f}, Brier {cal['uncalibrated']['brier']:.4f})"
    opening = (f"{split} split, {results[main]['n']} {unit}, windows combined by {aggregate}, {decision}: "
               f"{run_dir or ', '.join(str(c) for c in ckpts)}\n"
               f"{ci_note}\n{cal_note}\n{summary_table(results)}\n\nper class ({main}):\n")
    aami = (f"\nAAMI beat classes ({main}):\n{aami_table(results[main])}\n"
            if is_aami(records.class_names, records.multilabel) else "")
    text = f"{opening}{per_class_table(results[main])}\n{aami}"
    (out_dir / "summary.txt").write_text(text)
    info = {"command": sys.argv, "split": split, "main": main, "models": list(results),
            "aggregate": aggregate, "thresholds": cfg["eval"]["thresholds"], "bootstrap": resamples,
            "calibration": calibrated,
            "eval_overrides": eval_overrides or {}, "checkpoints": [str(p) for p in paths],
            "device": str(device), "git_commit": git_commit(),
            "units": len(unit_ids), "wall_s": round(time.time() - started, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(info, out_dir / "eval_info.json")
    if cfg["eval"]["report"]:
        examples = []
        # out_of_fold: the run's ensemble would explain records some of its folds trained on
        if (cfg["eval"]["explain_examples"] and run_dir is not None and records.units is None and cfg["eval"]["plots"]
                and main != "out_of_fold"):
            y_main, probs_main = curves[main]
            examples = explain_examples(ckpts[0], data.signals, indices[0], records, y_main, probs_main,
                                        decided[main], cfg["eval"]["explain_examples"], out_dir / "examples")
        head = text.split("\n")[:3]
        write_html_report(out_dir, title, head, results, main, out_dir if len(results) == 1 else out_dir / main, cfg,
                          info, examples, extra_text=aami.lstrip("\n") or None)
    # summary.txt has every class; the terminal the first MAX_PLOTTED_CLASSES (identification: thousands)
    print(f"{opening}{per_class_table(results[main], MAX_PLOTTED_CLASSES)}\n{aami}\nreports: {out_dir}")
    return results


#: attribution examples are drawn for at most this many classes (those with the most positives)
MAX_EXAMPLE_CLASSES = 6


def explain_examples(ckpt, signals, index: np.ndarray, records: RecordSet, y: np.ndarray, probs: np.ndarray,
                     decisions: np.ndarray, per_kind: int, out_dir: Path) -> list[dict]:
    """The ``per_kind`` most confident true positives and false positives of each class (up to
    ``MAX_EXAMPLE_CLASSES`` classes), explained by integrated gradients; PNGs under ``out_dir``."""
    from ..explain import explain_signal, save_explanation
    from .predictor import Predictor
    if records.features is not None:          # models with per-record features are not explained (yet)
        return []
    predictor = Predictor(ckpt, device="cpu", amp="off")
    classes = np.argsort(-y.sum(0), kind="stable")[:MAX_EXAMPLE_CLASSES]
    out = []
    for c in classes:
        for kind, mask in (("true positive", (y[:, c] > 0) & (decisions[:, c] > 0)),
                           ("false positive", (y[:, c] == 0) & (decisions[:, c] > 0))):
            for i in np.flatnonzero(mask)[np.argsort(-probs[mask, c], kind="stable")][:per_kind]:
                rid = records.ids[index[i]]
                e = explain_signal(predictor, np.asarray(signals[index[i]]), rid, records.class_names[c])
                png, _ = save_explanation(e, out_dir)
                out.append({"class": records.class_names[c], "kind": kind, "record": rid,
                            "probability": float(probs[i, c]), "method": e.method, "png": str(png)})
    return out
