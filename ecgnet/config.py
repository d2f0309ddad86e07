"""YAML configs: ``_base_`` inheritance, ``--opts`` overrides, schema checks, defaults, dump.

One config is one plain dict. Component sections (``data``, ``model``, ``loss``,
``optimizer``, ``schedule``, ``sampler``, ``augment``) name a registered type and
are checked against that component's signature by ``ecgnet.build.resolve_config``;
the plain sections below are checked here against dataclass schemas.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .registry import ConfigError, check_type, hint

COMPONENT_SECTIONS = ("data", "model", "loss", "optimizer", "schedule", "sampler")


@dataclass
class SplitCfg:
    """How records are divided. ``random``: stratified, patient-grouped fractions of all
    records; ``predefined``: the dataset's own folds (e.g. PTB-XL strat_fold) mapped to
    splits; without ``val_folds``, val_fraction of the train folds is held out for validation."""
    type: Literal["random", "predefined"] = "random"
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    train_folds: Optional[list] = None
    val_folds: Optional[list] = None
    test_folds: Optional[list] = None
    seed: int = 0


@dataclass
class PreprocessCfg:
    """Deterministic steps applied once per record when it is loaded."""
    fs: Optional[float] = None                 # resample to this rate (Hz); null keeps the source rate
    bandpass_hz: Optional[list] = None         # [low, high] zero-phase Butterworth; null = off
    filter_order: int = 3
    normalize: Literal["per_lead", "per_record", "none"] = "per_lead"   # per_lead: mean/std fitted on train
    cache_dir: Optional[str] = "~/.cache/ecgnet"   # decoded + preprocessed records; null = no cache


@dataclass
class InputCfg:
    """What the network sees. Fixed windows: training takes a random crop (zero-padded when
    the record is shorter); evaluation slides windows over the whole record and averages.
    Full length: whole records (cropped to ``max_length_s``), batched by similar length and
    zero-padded to the longest in the batch."""
    window_s: Optional[float] = None           # null = the dataset's record length
    eval_stride_s: Optional[float] = None      # null = window_s (non-overlapping)
    full_length: bool = False
    max_length_s: Optional[float] = None       # full_length: longer records are cropped (eval: windows)


@dataclass
class TrainCfg:
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    device: str = "auto"                       # auto = cuda when present, else cpu
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"   # auto = bf16 on CUDA, off on CPU
    clip_grad_norm: Optional[float] = 1.0
    monitor: str = "val/macro_auroc"           # metric that picks best.pt and drives early stopping
    monitor_mode: Literal["auto", "max", "min"] = "auto"   # auto: min for losses, max otherwise
    early_stop_patience: Optional[int] = 10
    tensorboard: bool = True
    progress: Literal["auto", "on", "off"] = "auto"        # auto = tqdm only on a terminal
    deterministic: bool = False               # torch deterministic kernels (slower on CUDA)


@dataclass
class ThresholdsCfg:
    """Multi-label decision thresholds, tuned on the validation split after training."""
    tune: bool = True                          # false: every class uses ``default``
    default: float = 0.5
    single_label: Literal["argmax", "tuned"] = "argmax"


@dataclass
class KFoldCfg:
    folds: int = 0                             # 0 or 1: one model with the split's val set
    ensemble: Literal["vote", "mean"] = "vote"


@dataclass
class EvalCfg:
    split: Literal["test", "val"] = "test"
    plots: bool = True
    # how a record's windows (and an evaluation unit's records) become one prediction, in validation
    # and evaluation alike; the PTB-XL benchmark takes the max
    aggregate: Literal["mean", "max"] = "mean"
    bootstrap: int = 1000                      # resamples for the 95 % CIs in evaluate; 0 turns them off


PLAIN_SECTIONS: dict[str, type] = {
    "split": SplitCfg, "preprocess": PreprocessCfg, "input": InputCfg, "train": TrainCfg,
    "thresholds": ThresholdsCfg, "kfold": KFoldCfg, "eval": EvalCfg,
}
TOP_LEVEL: dict[str, Any] = {"name": Optional[str], "seed": int, "work_dir": str, "augment": list}
TOP_DEFAULTS: dict[str, Any] = {"name": None, "seed": 0, "work_dir": "runs", "augment": []}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; check the path")
    try:
        with path.open() as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")
    return data


def merge(base: dict, child: dict) -> dict:
    """Dicts merge recursively, scalars and lists replace; ``_delete_: true`` replaces a dict."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and value.get("_delete_"):
            out[key] = {k: v for k, v in value.items() if k != "_delete_"}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            # a component section that switches type drops the old type's settings
            if "type" in value and value["type"] != out[key].get("type"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml_tree(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML file and everything its ``_base_`` names (paths relative to the file)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: _base_ includes itself in a cycle")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        merged = merge(merged, load_yaml_tree(path.parent / base, _seen + (path,)))
    return merge(merged, data)


def parse_opts(opts: list[str]) -> dict:
    """``["train.epochs=5", "model.widths=[32,64]"]`` -> nested dict, values parsed as YAML."""
    out: dict = {}
    for item in opts:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--opts {item!r}: expected key.sub=value, e.g. train.epochs=5")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--opts {item!r}: the value is not valid YAML; quote it") from None
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--opts {item!r}: {part} is set twice, as a value and as a section")
        node[leaf] = value
    return out


def _check_plain_section(name: str, schema: type, value: Any) -> dict:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    out = {}
    for key, v in value.items():
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown setting{hint(key, fields)}")
        out[key] = check_type(v, hints[key], f"{name}.{key}")
    for key, f in fields.items():
        if key not in out:
            out[key] = copy.deepcopy(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    return out


def check_schema(cfg: dict) -> dict:
    """Validate top-level keys and plain sections, filling in defaults. Component sections
    are only checked for shape here; their settings are checked by ``resolve_config``."""
    known = set(PLAIN_SECTIONS) | set(TOP_LEVEL) | set(COMPONENT_SECTIONS)
    for key in cfg:
        if key not in known:
            raise ConfigError(f"{key}: unknown config section{hint(key, known)}")
    out: dict = {}
    for key, annotation in TOP_LEVEL.items():
        out[key] = check_type(cfg.get(key, TOP_DEFAULTS[key]), annotation, key)
    for key, schema in PLAIN_SECTIONS.items():
        out[key] = _check_plain_section(key, schema, cfg.get(key))
    for key in COMPONENT_SECTIONS:
        if key in cfg:
            out[key] = cfg[key]
    for key in ("data", "model"):
        if key not in out:
            raise ConfigError(f"{key}: missing section; every config names a {key} type")
    return out


def load_config(path: str | Path, opts: list[str] | None = None, name: str | None = None) -> dict:
    """Read a config with its bases, apply ``--opts`` and check the schema.

    The run name defaults to the config file's stem.
    """
    cfg = merge(load_yaml_tree(path), parse_opts(opts or []))
    cfg = check_schema(cfg)
    if cfg["name"] is None:
        cfg["name"] = name or Path(path).stem
    return cfg


def dump_config(cfg: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)
