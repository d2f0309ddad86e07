"""YAML configs: ``_base_`` inheritance, ``--opts`` overrides, schema checks, defaults, dump.

One config is one plain dict. Component sections (``data``, ``model``, ``loss``,
``optimizer``, ``schedule``, ``sampler``, ``augment``) name a registered type and
are checked against that component's signature by ``ecgnet.build.resolve_config``;
the plain sections below are checked here against dataclass schemas.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

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
    # signal QC of each record as it is read (ecgnet/data/qc.py): {} = defaults, {enabled: false} = off
    qc: dict = dataclasses.field(default_factory=dict)


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
    # the global batch: under torchrun each of N processes takes batch_size / N (a multiple of N), so
    # one config is one recipe (the same batches, steps per epoch and schedule) for any N
    batch_size: int = 64
    eval_batch_size: int = 256                 # per process; changes speed and memory, not results
    # DataLoader workers per process; auto = min(8, cores per process - 1) on CUDA, 0 on the CPU (there
    # the batches are in-memory slices and workers would take the cores the model trains on)
    num_workers: Union[int, Literal["auto"]] = "auto"
    device: str = "auto"                       # auto = cuda when present (under torchrun cuda:LOCAL_RANK), else cpu
    # auto = bf16 on CUDA (fp16 where it lacks bf16); on a CPU bf16 where it has native bf16 (AMX-BF16 or
    # AVX512-BF16), else off (fp32); fp16 needs CUDA
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    clip_grad_norm: Optional[float] = 1.0
    monitor: str = "val/macro_auroc"           # metric that picks best.pt and drives early stopping
    monitor_mode: Literal["auto", "max", "min"] = "auto"   # auto: min for losses, max otherwise
    early_stop_patience: Optional[int] = 10
    tensorboard: bool = True
    progress: Literal["auto", "on", "off"] = "auto"        # auto = tqdm only on a terminal
    # without tqdm (no terminal): a log line at most this often with step, samples/s and ETA; null: none
    log_every_s: Optional[float] = 60.0
    deterministic: bool = False               # torch deterministic kernels (slower on CUDA)
    compile: bool = False                     # torch.compile the training model (validation runs it uncompiled)
    # torchrun on CUDA, fixed windows: BatchNorm statistics over the global batch (SyncBatchNorm);
    # false: each process normalises with its own batch_size / N rows (the only choice on CPU)
    sync_bn: bool = False


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
    # tuned: the per-class thresholds tuned on validation (stored in the checkpoint); fixed: the
    # untuned decision (multi-label p >= thresholds.default, single-label argmax), for the ablation
    thresholds: Literal["tuned", "fixed"] = "tuned"
    # auto: the temperature fitted on validation where the checkpoint has one (``calibration``);
    # none: the network's raw probabilities, for the ablation
    calibration: Literal["auto", "none"] = "auto"
    # external evaluation (evaluate --config OTHER.yaml): {model class: other dataset's class or [classes]};
    # null: classes of the same name
    class_map: Optional[dict] = None
    report: bool = True                        # report.html beside the other files
    # attribution examples in report.html: the N most confident true and N false positives per class
    # (integrated gradients; 0: none)
    explain_examples: int = 1


@dataclass
class FusionCfg:
    """How a model joins per-record features beside the signal (``RecordSet.features``, e.g. the
    RR intervals of ``data.rr_features``); unused when the data gives none. The backbone's output
    becomes an ``embed_dim`` embedding; it and the standardised features feed an MLP head.
    ``embed_dim: 0``: no backbone, the head sees the features alone (what the signal adds)."""
    embed_dim: int = 32
    hidden: int = 32
    dropout: float = 0.1


@dataclass
class ClassifierCfg:
    """The layer that turns the backbone's output into class scores. ``linear``: the backbone's own
    last layer. ``cosine``: the backbone gives an ``embed_dim`` embedding and the logits are ``scale``
    times its cosine with a learned vector per class (``models.cosine``; many classes, few records each).
    ``margin`` (cosine only, single-label): CosFace's additive margin, subtracted from the true class's
    cosine inside the loss (training and validation loss; predictions never see it); 0: NormFace."""
    type: Literal["linear", "cosine"] = "linear"
    embed_dim: int = 128
    scale: float = 30.0
    margin: float = 0.0


PLAIN_SECTIONS: dict[str, type] = {
    "split": SplitCfg, "preprocess": PreprocessCfg, "input": InputCfg, "train": TrainCfg,
    "thresholds": ThresholdsCfg, "kfold": KFoldCfg, "eval": EvalCfg, "fusion": FusionCfg,
    "classifier": ClassifierCfg,
}
# calibration: temperature scaling fitted on validation (``ecgnet.calibration``), or none
TOP_LEVEL: dict[str, Any] = {"name": Optional[str], "seed": int, "work_dir": str, "augment": list,
                             "calibration": Literal["temperature", "none"]}
TOP_DEFAULTS: dict[str, Any] = {"name": None, "seed": 0, "work_dir": "runs", "augment": [],
                                "calibration": "temperature"}


def _at_least(low):
    return (lambda v: v >= low), f">= {low}"


def _above(low):
    return (lambda v: v > low), f"> {low}"


def _between(low, high):
    return (lambda v: low < v < high), f"between {low} and {high} (exclusive)"


# Limits of numeric settings, checked when a config is read, so a bad value is named here instead of
# failing deep inside torch or numpy; an optional setting may also be null.
LIMITS: dict[str, tuple] = {
    "seed": _at_least(0),
    "split.val_fraction": _between(0, 1),
    "split.test_fraction": _between(0, 1),
    "preprocess.fs": _above(0),
    "preprocess.filter_order": _at_least(1),
    "input.window_s": _above(0),
    "input.eval_stride_s": _above(0),
    "input.max_length_s": _above(0),
    "train.epochs": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.eval_batch_size": _at_least(1),
    "train.num_workers": ((lambda v: v == "auto" or v >= 0), ">= 0"),   # or auto
    "train.clip_grad_norm": _above(0),           # null: no clipping
    "train.early_stop_patience": _at_least(1),   # null: no early stopping
    "train.log_every_s": _at_least(0),           # 0: every step; null: no progress lines
    "thresholds.default": _between(0, 1),
    "kfold.folds": _at_least(0),
    "eval.bootstrap": _at_least(0),
    "eval.explain_examples": _at_least(0),
    "fusion.embed_dim": _at_least(0),          # 0: the features alone, no signal
    "classifier.embed_dim": _at_least(1),
    "classifier.scale": _above(0),
    "classifier.margin": ((lambda v: 0 <= v < 1), ">= 0 and < 1"),
    "fusion.hidden": _at_least(1),
    "fusion.dropout": ((lambda v: 0 <= v < 1), ">= 0 and < 1"),
}

# Settings that name a file or folder. ``load_config`` makes relative ones absolute against the
# directory the command runs in (as a shell would), so the config.yaml and checkpoints a run stores
# work from any directory later; ``~/...`` stays as written.
PATH_SETTINGS = ("work_dir", "data.root", "data.split_file", "data.qc_cache", "preprocess.cache_dir",
                 "model.init_from")


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
        if not (path.parent / base).is_file():   # name the file that asks for it
            raise ConfigError(f"{path}: _base_ {base!r} not found (paths are relative to this file: "
                              f"{path.parent / base}); fix the path")
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


def _or_null(section: str, leaf: str) -> str:
    annotation = typing.get_type_hints(PLAIN_SECTIONS[section])[leaf] if section else TOP_LEVEL[leaf]
    return " or null" if type(None) in typing.get_args(annotation) else ""


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
    name = out["name"]
    if name is not None and (name in ("", ".", "..") or "/" in name or "\\" in name):
        raise ConfigError(f"name: {name!r} must be a plain folder name (no '/' or '..'); the run goes to "
                          "work_dir/<name>, choose the folder with work_dir or --work-dir")
    for key, schema in PLAIN_SECTIONS.items():
        out[key] = _check_plain_section(key, schema, cfg.get(key))
    for key, (ok, text) in LIMITS.items():
        section, _, leaf = key.rpartition(".")
        value = (out[section] if section else out)[leaf]
        if value is not None and not ok(value):
            raise ConfigError(f"{key}: must be {text}{_or_null(section, leaf)}, got {value!r}")
    bandpass = out["preprocess"]["bandpass_hz"]
    if bandpass is not None and not (len(bandpass) == 2 and all(isinstance(f, (int, float)) for f in bandpass)
                                     and 0 < bandpass[0] < bandpass[1]):
        raise ConfigError(f"preprocess.bandpass_hz: expected [low, high] with 0 < low < high (Hz), "
                          f"or null for no filter, got {bandpass!r}")
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
    cfg = absolute_paths(check_schema(cfg))
    if cfg["name"] is None:
        cfg["name"] = name or Path(path).stem
    return cfg


def absolute_paths(cfg: dict) -> dict:
    """Make the relative paths of ``PATH_SETTINGS`` absolute against the current directory (in place)."""
    for key in PATH_SETTINGS:
        section, _, leaf = key.rpartition(".")
        node = lookup(cfg, section) if section else cfg
        value = node.get(leaf) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not value.startswith("~"):
            node[leaf] = os.path.abspath(value)
    return cfg


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (a key missing on one side differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in dict.fromkeys([*a, *b]):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                out.append(where)
            else:
                out += config_diff(a[key], b[key], where)
        return out
    return [] if a == b else [prefix]


def describe_changes(keys: list[str], old: dict, new: dict, limit: int = 6) -> str:
    """``"model.dropout (0.2 -> 0.5), optimizer.lr (0.001 -> 0.01)"`` for a one-line message."""
    def short(value):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    shown = [f"{key} ({short(lookup(old, key))} -> {short(lookup(new, key))})" for key in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def lookup(cfg: dict, key: str, default: Any = None) -> Any:
    """``lookup(cfg, "model.dropout")``; ``default`` where a level is missing."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def dump_config(cfg: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)
