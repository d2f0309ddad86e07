"""Results tables from run directories: metrics with their 95 % CIs beside the config keys that differ.

    python tools/compare_runs.py runs/a runs/b [--metric test/macro_auroc ...] [--md RESULTS.md] [--runs-file FILE]
                                 [--targets experiments/targets.yaml]

Reads only what train.py and evaluate.py wrote (``config.yaml``, ``env.json``,
``eval/<split>/{metrics.json,eval_info.json}``), so a table can always be rebuilt from the runs.
``--records DIR`` keeps a copy of those files per run (a few hundred kB, no weights) for a results file that
must outlive the machine the runs were made on: a run directory that is here refreshes its copy, one that is
not is read from it.
Runs of different datasets (``data.type`` + ``data.task``) get a table each. ``--targets`` adds a
table of goals (a published reference and the number to reach), each read from one run's report
and marked met or not (see ``load_targets``).
"""
from __future__ import annotations

import difflib
import fnmatch
import json
import logging
import re
import shlex
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from .registry import ConfigError, DataError

log = logging.getLogger(__name__)

REFERENCES = Path(__file__).resolve().parents[1] / "experiments" / "references.yaml"
DEFAULT_METRICS = ["test/macro_auroc", "test/macro_f1"]
SPLITS = ("test", "val")
# Where files go and what is displayed: they differ between runs without changing what was trained.
NOISY_KEYS = {"name", "work_dir", "preprocess.cache_dir", "data.qc_cache", "train.progress", "train.tensorboard",
              "train.log_every_s", "train.num_workers", "train.compile", "eval.plots"}
# Numbers every classification report has; any other number in metrics.json is a dataset's own score.
STANDARD_KEYS = {"n", "macro_auroc", "macro_auprc", "macro_f1", "weighted_f1", "micro_f1", "accuracy",
                 "balanced_accuracy", "exact_match", "hamming_loss", "loss"}
FOLD = re.compile(r"fold\d+$")


@dataclass
class Run:
    path: Path
    config: dict            # resolved config, flattened to dotted keys
    env: dict
    metrics: dict           # split -> {model_name: metrics dict}
    info: dict              # split -> eval_info.json (may be empty)

    @property
    def group(self) -> str:
        task = self.config.get("data.task")
        return f"{self.config.get('data.type')}" + (f" / {task}" if task else "")


@dataclass
class Row:
    run: Run
    label: str              # 'ensemble_vote', 'model', 'fold mean (3)'
    cells: dict             # metric -> (value, (lo, hi) | None, sd | None)
    n: str
    bootstrap: dict | None


def flatten(cfg: dict, prefix: str = "") -> dict:
    """{'loss': {'type': 'ce'}} -> {'loss.type': 'ce'}; lists stay values, so they compare whole."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); "
                        "re-run the step that wrote it") from None


def load_run(path: Path, splits: set[str]) -> Run:
    if not (path / "config.yaml").is_file():
        raise DataError(f"{path}: not a run directory (no config.yaml); pass directories written by tools/train.py")
    try:
        cfg = yaml.safe_load((path / "config.yaml").read_text())
    except yaml.YAMLError as err:
        raise DataError(f"{path / 'config.yaml'}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{path / 'config.yaml'}: expected a mapping of config sections")
    metrics = {s: _read_json(path / "eval" / s / "metrics.json") for s in splits}
    info = {s: _read_json(path / "eval" / s / "eval_info.json") for s in splits}
    return Run(path, flatten(cfg), _read_json(path / "env.json"), metrics, info)


RECORD_FILES = ("config.yaml", "env.json", "eval/*/metrics.json", "eval/*/eval_info.json")


def record_dir(run: Path, records: Path) -> Path:
    """Where a run's record lives: the run's path as given (relative to the working directory) under ``records``."""
    return records / Path(*[p for p in run.parts if p not in (run.anchor, "..", ".")])


def use_record(run: Path, records: Path | None) -> Path:
    """The directory to read a run from: the run itself, its record copy refreshed first (the files compare
    reads, nothing else), or its record when the run directory is not on this machine."""
    if records is None:
        return run
    record = record_dir(run, records)
    if run.is_dir():
        files = [f for pattern in RECORD_FILES for f in sorted(run.glob(pattern))]
        if files:
            shutil.rmtree(record, ignore_errors=True)     # a report deleted from the run leaves the record too
            for f in files:
                (record / f.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, record / f.relative_to(run))
        return run
    return record if record.is_dir() else run


def read_run_list(run_dirs: list[str], runs_file: str | None) -> list[Path]:
    """Positional run directories, then those of --runs-file (one a line, '#' comments), duplicates dropped."""
    paths = list(run_dirs)
    if runs_file:
        if not Path(runs_file).is_file():
            raise ConfigError(f"--runs-file {runs_file}: no such file")
        for line in Path(runs_file).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                paths.append(line)   # relative to the working directory, like positional arguments
    if not paths:
        raise ConfigError("no runs given; pass run directories or --runs-file FILE")
    seen, out = set(), []
    for p in map(Path, paths):
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def _number(metrics: dict, key: str):
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _main_model(run: Run, split: str) -> str | None:
    """The model the evaluation report leads with (the configured ensemble for k-fold runs)."""
    models = run.metrics[split]
    main = run.info[split].get("main")
    if not main:
        ensemble = f"ensemble_{run.config.get('kfold.ensemble')}"
        main = ensemble if ensemble in models else "model"
    return main if main in models else None


def run_rows(run: Run, metric_names: list[str]) -> list[Row]:
    """The lead model's row with bootstrap CIs and, for k-fold runs, the fold mean with its sd across folds."""
    lead_split = metric_names[0].split("/")[0]
    rows = []
    main = _main_model(run, lead_split)
    if main:
        cells = {}
        for name in metric_names:
            split, key = name.split("/", 1)
            m = run.metrics[split].get(_main_model(run, split), {})
            ci = (m.get("ci") or {}).get(key)
            ci = tuple(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci else None
            cells[name] = (_number(m, key), ci, None)
        m = run.metrics[lead_split][main]
        rows.append(Row(run, main, cells, _fmt_n([m.get("n")]), m.get("bootstrap")))
    folds = {s: [m for name, m in run.metrics[s].items() if FOLD.match(name)] for s in run.metrics}
    if len(folds[lead_split]) >= 2:
        cells = {}
        for name in metric_names:
            split, key = name.split("/", 1)
            values = [v for v in (_number(m, key) for m in folds[split]) if v is not None]
            cells[name] = ((statistics.mean(values), None, statistics.stdev(values) if len(values) > 1 else 0.0)
                           if values else (None, None, None))
        rows.append(Row(run, f"fold mean ({len(folds[lead_split])})", cells,
                        _fmt_n([m.get("n") for m in folds[lead_split]]), None))
    if not rows:
        log.warning("skipped %s: its %s metrics.json names no model to report (%s)", run.path, lead_split,
                    ", ".join(run.metrics[lead_split]))
    return rows


def _fmt_n(ns: list) -> str:
    ns = sorted({int(n) for n in ns if isinstance(n, (int, float))})
    return "-" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value is not the same in every run (absent counts as a value), in config order."""
    absent = object()
    keys = dict.fromkeys(k for r in runs for k in r.config if k not in NOISY_KEYS)
    return [k for k in keys if any(r.config.get(k, absent) != runs[0].config.get(k, absent) for r in runs)]


# ---------------------------------------------------------------- references

def load_references(path: Path | None) -> list[dict]:
    if path is None or not Path(path).is_file():
        return []
    try:
        refs = yaml.safe_load(Path(path).read_text()) or []
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({getattr(err, 'problem', err)})") from None
    for i, ref in enumerate(refs if isinstance(refs, list) else [None]):
        if not isinstance(ref, dict) or not {"dataset", "metric", "value", "source"} <= ref.keys():
            raise ConfigError(f"{path}: entry {i} needs dataset, metric, value and source "
                              "(optional task and match: {dotted.key: value})")
    return refs


def find_reference(refs: list[dict], config: dict, metric: str) -> dict | None:
    """First entry for this dataset (and task) whose match keys all hold; string patterns may use * wildcards."""
    def holds(key, want):
        have = config.get(key)
        return fnmatch.fnmatchcase(str(have), want) if isinstance(want, str) and have is not None else have == want
    for ref in refs:
        if (ref["metric"] == metric and ref["dataset"] == config.get("data.type")
                and ("task" not in ref or ref["task"] == config.get("data.task"))
                and all(holds(k, v) for k, v in (ref.get("match") or {}).items())):
            return ref
    return None


def _row_reference(refs: list[dict], row: Row, metric_names: list[str]) -> tuple[str, dict | None]:
    """The first metric's reference; failing that, the first shown metric that has one, named."""
    for i, name in enumerate(metric_names):
        ref = find_reference(refs, row.run.config, name)
        if ref:
            return (_fmt(ref["value"]) if i == 0 else f"{name.split('/', 1)[1]} {_fmt(ref['value'])}"), ref
    return "-", None


# ---------------------------------------------------------------- targets

TARGET_KEYS = {"target", "metric", "reference", "goal", "run", "report", "model", "note", "lower_is_better"}


@dataclass
class TargetRow:
    entry: dict
    model: str | None
    value: float | None
    ci: tuple | None
    status: str
    carried: tuple | None = None    # (run, measured, status) cells of the previous Markdown


def load_targets(path: str | Path | None) -> list[dict]:
    """Goals as a YAML list. Each entry: ``target`` (what it is, in words), ``metric`` (SPLIT/KEY of
    metrics.json), ``reference`` (the published number, or null), ``goal`` (a number to reach;
    ``within_ci``: the reference lies inside the run's 95 % CI; or null: reported only, e.g. an
    ablation), ``run`` (run directory, relative to the working directory; null: not run yet) and
    optionally ``report`` (the folder under eval/, e.g. ``test_thresholds-fixed``; default the
    metric's split), ``model`` (default the report's lead model), ``lower_is_better`` and ``note``
    (why a goal is not met, or how the number was made)."""
    if path is None:
        return []
    if not Path(path).is_file():
        raise ConfigError(f"--targets {path}: no such file")
    try:
        entries = yaml.safe_load(Path(path).read_text()) or []
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({getattr(err, 'problem', err)})") from None
    for i, entry in enumerate(entries if isinstance(entries, list) else [None]):
        if not isinstance(entry, dict) or not {"target", "metric", "reference", "goal", "run"} <= entry.keys():
            raise ConfigError(f"{path}: entry {i} needs target, metric, reference, goal and run")
        unknown = set(entry) - TARGET_KEYS
        if unknown:
            raise ConfigError(f"{path}: entry {i} ({entry['target']}): unknown key(s) {', '.join(sorted(unknown))}")
        goal = entry["goal"]
        if not (goal is None or goal == "within_ci" or isinstance(goal, (int, float))):
            raise ConfigError(f"{path}: entry {i} ({entry['target']}): goal must be a number, within_ci or null, "
                              f"got {goal!r}")
        if goal == "within_ci" and not isinstance(entry["reference"], (int, float)):
            raise ConfigError(f"{path}: entry {i} ({entry['target']}): goal within_ci needs a numeric reference")
        _check_metric_names([entry["metric"]])
    return entries


def score_target(entry: dict, records: Path | None = None, previous: Previous | None = None) -> TargetRow:
    """One goal against its run's report: met, not met, not run or not evaluated; a run that is neither
    here nor recorded keeps its row of the previous Markdown, if that has one (``previous``)."""
    if not entry["run"]:
        return TargetRow(entry, None, None, None, "not run")
    run = use_record(Path(entry["run"]), records)
    if previous and not run.exists() and entry["target"] in previous.targets:
        return TargetRow(entry, None, None, None, previous.targets[entry["target"]][2],
                         carried=previous.targets[entry["target"]])
    split, key = entry["metric"].split("/", 1)
    report = run / "eval" / (entry.get("report") or split)
    # a run directory, or an ensemble's report folder (evaluate --ckpt RUN_A RUN_B --out DIR/eval/test)
    if not (run / "config.yaml").is_file() and not (report / "metrics.json").is_file():
        return TargetRow(entry, None, None, None, "not run")
    metrics, info = _read_json(report / "metrics.json"), _read_json(report / "eval_info.json")
    model = entry.get("model") or info.get("main") or ("model" if "model" in metrics else None)
    m = metrics.get(model) or {}
    value = _number(m, key)
    if value is None:
        return TargetRow(entry, model, None, None, "not evaluated")
    ci = (m.get("ci") or {}).get(key)
    ci = tuple(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci else None
    goal = entry["goal"]
    if goal is None:
        return TargetRow(entry, model, value, ci, "reported")
    if goal == "within_ci":
        met = ci is not None and ci[0] <= entry["reference"] <= ci[1]
    else:
        met = value <= goal if entry.get("lower_is_better") else value >= goal
    return TargetRow(entry, model, value, ci, "met" if met else "not met")


def format_targets(rows: list[TargetRow], markdown: bool) -> list[str]:
    header = ["target", "run", "measured", "reference", "goal", "status"]
    lines, notes = [], []
    for row in rows:
        e = row.entry
        goal = ("-" if e["goal"] is None else "reference inside the 95 % CI" if e["goal"] == "within_ci"
                else f"{'<=' if e.get('lower_is_better') else '>='} {_fmt(e['goal'])}")
        run = "-" if not e["run"] else Path(e["run"]).name + (f" ({row.model})" if row.model not in (None, "model")
                                                              else "")
        if e.get("report"):
            run += f", eval/{e['report']}"
        measured = fmt_cell(row.value, row.ci, None, digits_against(row.value, e["goal"]))
        if row.carried:
            run, measured = row.carried[0] + " " + CARRIED, row.carried[1]
        status = row.status
        if e.get("note"):
            notes.append(e["note"].strip())
            status += f" [{len(notes)}]"
        lines.append([e["target"], run, measured, _fmt(e["reference"]), goal, status])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines]
        out += ["", "measured: value [95 % bootstrap CI] from the run's report; -: no run yet"
                + (f"; {CARRIED}: {CARRIED_WHY}" if any(r.carried for r in rows) else "") + ".", ""]
        if notes:
            out += ["Notes:", ""] + [f"{i}. {note}" for i, note in enumerate(notes, 1)] + [""]
        return out
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *lines]]
    return out + [f"  [{i}] {note}" for i, note in enumerate(notes, 1)] + [""]


# ---------------------------------------------------------------- rows carried over

CARRIED = "†"
CARRIED_WHY = ("carried over from the previous version of this file: the run directory and its record are not "
               "on the machine that wrote it")


@dataclass
class Previous:
    """What a Markdown file written by ``format_markdown`` says, for runs that can no longer be read."""
    targets: dict       # target -> (run, measured, status) cells, the run's mark and the status's note number removed
    sections: dict      # title -> {"tables": [{"header": [2 lines], "rows": {run: [lines]}, "legend": line}],
                        #           "references": {line: None}, "commands": {run: line}}


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def read_previous(path: Path) -> Previous:
    """The targets table, and each dataset section's tables (rows by run name, with their header and legend)
    and commands, of a Markdown file this module wrote."""
    targets, sections = {}, {}
    title, table, last = None, None, None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            title, table, last = line[3:], None, None
            if title != "Targets":
                sections.setdefault(title, {"tables": [], "references": {}, "commands": {}})
        elif title is None:
            continue
        elif line.startswith("|"):
            cells = _cells(line)
            if title == "Targets":
                if cells[0] != "target" and not line.startswith("|---"):
                    targets[cells[0]] = (cells[1].removesuffix(" " + CARRIED), cells[2],
                                         re.sub(r" \[\d+\]$", "", cells[5]))
            elif table is None:
                table = {"header": [line], "rows": {}, "legend": ""}
                sections[title]["tables"].append(table)
            elif len(table["header"]) < 2:
                table["header"].append(line)
            else:
                table["rows"].setdefault(cells[0], []).append(line)
        else:
            last, table = table or last, None
            if title != "Targets" and last and not last["legend"] and line.startswith(("value [", "fold mean", "wall:")):
                last["legend"] = line
            elif title != "Targets" and line.startswith("- `") and "`" in line[3:]:
                sections[title]["commands"][line[3:line.index("`", 3)]] = line
            elif title != "Targets" and line.startswith("- "):       # a published number the rows refer to
                sections[title]["references"][line] = None
    return Previous(targets, sections)


def carried_runs(names: list[str], previous: Previous | None, md: str | None) -> dict[str, list[str]]:
    """Section title -> the runs whose rows come from the previous Markdown. A run without a row there
    (one the previous file skipped, e.g. evaluated on val only) is skipped with a warning, as then."""
    out = {}
    for name in names:
        title = next((t for t, sec in (previous.sections.items() if previous else ())
                      if any(name in table["rows"] for table in sec["tables"])), None)
        if title is None:
            log.warning("skipped %s: no run directory here, no record of it, no row of it in %s", name, md)
            continue
        out.setdefault(title, []).append(name)
    return out


def _carried_block(section: dict, names: list[str]) -> list[str]:
    """The carried runs of one section: their old rows under the header of the table they were in."""
    lines = [f"{CARRIED} Carried over from the previous version of this file (the run directories and their records "
             "are not on the machine that wrote it):", ""]
    for table in section["tables"]:      # in the previous file's order (sorted by its first metric)
        rows = [row for name, lines_ in table["rows"].items() if name in names for row in lines_]
        if rows:
            lines += [*table["header"], *rows, ""] + ([table["legend"], ""] if table["legend"] else [])
    if section["references"]:
        lines += ["References:", "", *section["references"], ""]
    commands = [line for name, line in section["commands"].items() if name in names]
    return lines + ["Commands:", "", *commands] + [f"- `{name}`: command not recorded" for name in names
                                                   if name not in section["commands"]] + [""]


# ---------------------------------------------------------------- formatting

def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if round(value, 3) == value else f"{value:g}"   # 0.93 -> 0.930, 0.8599 as given
    return str(value)


def fmt_cell(value, ci, sd, digits: int = 3) -> str:
    if value is None:
        return "-"
    v = f"{value:.{digits}f}"
    if ci:
        return f"{v} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{v} ±{sd:.3f}" if sd is not None else v


def digits_against(value: float | None, goal) -> int:
    """3 decimals, or as many more (up to 6) as tell a value apart from the goal it rounds onto: 0.9598 against
    0.96 reads 0.9598 (not met), not 0.960."""
    digits = 3
    if value is not None and isinstance(goal, (int, float)) and not isinstance(goal, bool) and value != goal:
        while digits < 6 and round(value, digits) == round(goal, digits):
            digits += 1
    return digits


def fmt_duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _config_value(config: dict, key: str) -> str:
    if key not in config:
        return "-"
    value = config[key]
    return value if isinstance(value, str) else json.dumps(value, default=str)


def fmt_command(argv) -> str:
    """env.json's sys.argv as a command to paste: 'python tools/train.py ...' or 'ecgnet-train ...'.

    A tools/ script started by its absolute path (a wrapper such as experiments/ptbxl/fivefold.sh does that)
    is shown as run from the repository root, like the other commands, not with this machine's checkout path;
    so are the arguments inside that checkout (``--config /checkout/cfgs/x.yaml`` -> ``cfgs/x.yaml``).
    """
    if not argv:
        return "-"
    script, args = Path(str(argv[0])), [str(a) for a in argv[1:]]
    if script.suffix == ".py" and script.is_absolute() and script.parent.name == "tools":
        head, checkout = f"python tools/{script.name}", f"{script.parent.parent}/"
        args = [a.removeprefix(checkout) for a in args]
    else:
        head = f"python {argv[0]}" if script.suffix == ".py" else script.name
    return " ".join([head, *map(shlex.quote, args)])


@dataclass
class Table:
    title: str
    metrics: list[str]
    keys: list[str]
    rows: list[Row]
    refs: list[dict]

    def header(self) -> list[str]:
        return ["run", "model", *self.metrics, "reference", *self.keys, "n", "wall", "device"]

    def cells(self, row: Row, run_label: str) -> list[str]:
        run, split = row.run, self.metrics[0].split("/")[0]
        wall = fmt_duration(run.env.get("train_wall_s")) + " + " + fmt_duration(run.info[split].get("wall_s"))
        devices = dict.fromkeys(d for d in (run.env.get("device"), run.info[split].get("device")) if d)
        return [run_label, row.label, *(fmt_cell(*row.cells[m]) for m in self.metrics),
                _row_reference(self.refs, row, self.metrics)[0], *(_config_value(run.config, k) for k in self.keys),
                row.n, wall, " + ".join(devices) or "-"]

    def legend(self) -> str:
        """Says which rows carry a bootstrap CI and which the spread across folds."""
        parts = []
        if any(c[1] for r in self.rows for c in r.cells.values()):
            boots = {(r.bootstrap.get("resamples"), r.bootstrap.get("unit")) for r in self.rows if r.bootstrap}
            resamples, unit = boots.pop() if len(boots) == 1 else (None, None)   # one setting for all, or say none
            how = f" ({resamples} resamples by {unit})" if resamples and unit else ""
            parts.append(f"value [lo, hi]: 95 % bootstrap CI{how}")
        if any(r.label.startswith("fold mean") for r in self.rows):
            parts.append("fold mean ±sd: mean and sd of the fold models' values (their spread, not a CI)")
        return "; ".join(parts + ["wall: train + evaluate", "-: not recorded"])


def _run_labels(runs: list[Run]) -> dict[Path, str]:
    """Directory names, or the path as given where two runs share a name."""
    names = [r.path.name for r in runs]
    return {r.path: r.path.name if names.count(r.path.name) == 1 else str(r.path) for r in runs}


def _sort_key(metric: str):
    sign = 1 if metric.endswith("loss") else -1   # losses: lower is better
    def key(row: Row):
        value = row.cells[metric][0]
        return (value is None, sign * (value or 0), str(row.run.path), row.label.startswith("fold"))
    return key


def build_tables(runs: list[Run], metric_names: list[str] | None, refs: list[dict]) -> list[Table]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    tables = []
    for title, group in sorted(groups.items()):
        names = metric_names or DEFAULT_METRICS + _dataset_scores(group)
        rows = sorted((row for run in group for row in run_rows(run, names)), key=_sort_key(names[0]))
        tables.append(Table(title, names, differing_keys(group), rows, refs))
    return tables


def _dataset_scores(runs: list[Run]) -> list[str]:
    keys = {}
    for run in runs:
        for m in run.metrics["test"].values():
            keys.update(dict.fromkeys(k for k in m if k not in STANDARD_KEYS and _number(m, k) is not None))
    return [f"test/{k}" for k in keys]


def format_text(tables: list[Table]) -> str:
    out = []
    for table in tables:
        labels = _run_labels(list({r.run.path: r.run for r in table.rows}.values()))
        lines = [table.header()] + [table.cells(r, labels[r.run.path]) for r in table.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        out.append(f"== {table.title} ({len(labels)} run{'s' * (len(labels) != 1)}) ==\n" + "\n".join(text)
                   + f"\n{table.legend()}\n")
    return "\n".join(out)


def format_markdown(tables: list[Table], command: str | None = None, targets: list[TargetRow] | None = None,
                    carried: dict[str, list[str]] | None = None, previous: Previous | None = None) -> str:
    """``carried``: section title -> runs whose rows, as ``previous`` has them, follow the section's table."""
    carried = carried or {}
    out = ["# Results", ""]
    if command:
        source = "the run directories and their records" if "--records" in command else "the run directories alone"
        out += [f"Generated by `{command}` from {source}; regenerate rather than edit.", ""]
    if targets:
        out += ["## Targets", ""] + format_targets(targets, markdown=True)
    live = {table.title: table for table in tables}
    for title in sorted(set(live) | set(carried)):
        if title not in live:
            out += [f"## {title}", ""] + _carried_block(previous.sections[title], carried[title])
            continue
        table = live[title]
        runs = list({r.run.path: r.run for r in table.rows}.values())
        labels = _run_labels(runs)
        out += [f"## {table.title}", "", "| " + " | ".join(table.header()) + " |",
                "|" + "---|" * len(table.header())]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in table.cells(r, labels[r.run.path])) + " |"
                for r in table.rows]
        out += ["", table.legend() + ".", ""]
        sources = {}
        for row in table.rows:
            ref = _row_reference(table.refs, row, table.metrics)[1]
            if ref:
                sources[id(ref)] = f"- {ref['metric']} {_fmt(ref['value'])}: {ref['source']}"
        if sources:
            out += ["References:", "", *sources.values(), ""]
        split = table.metrics[0].split("/")[0]
        out += ["Commands:", ""]
        out += [f"- `{labels[r.path]}`: `{fmt_command(r.env.get('command'))}`, then "
                + (f"`{fmt_command(r.info[split]['command'])}`" if r.info[split].get("command")
                   else "evaluate command not recorded (no eval_info.json)") for r in runs]
        out.append("")
        if title in carried:
            out += _carried_block(previous.sections[title], carried[title])
    return "\n".join(out)


# ---------------------------------------------------------------- entry point

def _check_metric_names(names: list[str]) -> None:
    for name in names:
        split = name.split("/", 1)[0] if "/" in name else None
        if split not in SPLITS or not name.split("/", 1)[1]:
            raise ConfigError(f"--metric {name}: expected SPLIT/KEY with SPLIT test or val, e.g. test/macro_auroc "
                              "(put run directories before --metric)")


def _evaluated(runs: list[Run], splits: set[str]) -> list[Run]:
    """Runs with metrics for every split asked for; the others are named with the command that makes them."""
    def fix(run, split):
        return f"python tools/evaluate.py --ckpt {run.path}" + (" --split val" if split == "val" else "")
    done, todo = [], []
    for run in runs:
        missing = [s for s in sorted(splits) if not run.metrics[s]]
        (todo if missing else done).append((run, missing))
    for run, missing in todo:
        message = f"{run.path}: not evaluated on the {missing[0]} split (no eval/{missing[0]}/metrics.json); " \
                  f"run {fix(run, missing[0])}"
        if not done:
            raise DataError(message)
        log.warning("skipped %s", message)
    return [run for run, _ in done]


def compare(run_dirs: list[str], metrics: list[str] | None = None, md: str | None = None,
            runs_file: str | None = None, references: str | Path | None = REFERENCES,
            command: str | None = None, targets: str | Path | None = None,
            records: str | Path | None = None) -> list[Table]:
    """Print one table per dataset (and the targets), optionally write them as Markdown; returns the tables.
    ``records``: keep and read run records there (see ``use_record``)."""
    if metrics:
        _check_metric_names(metrics)
    records = Path(records) if records is not None else None
    # with records, a run that is neither here nor recorded keeps its rows of the file being rewritten
    previous = read_previous(Path(md)) if records is not None and md and Path(md).is_file() else None
    target_rows = [score_target(entry, records, previous) for entry in load_targets(targets)]
    splits = {m.split("/", 1)[0] for m in metrics or DEFAULT_METRICS}
    located = [use_record(p, records) for p in read_run_list(run_dirs, runs_file)]
    gone = [p for p in located if previous and not p.exists()]
    carried = carried_runs([p.name for p in gone], previous, md)
    if gone:
        log.warning("%d run(s) neither here nor under %s: their rows are carried over from %s (marked %s): %s",
                    len(gone), records, md, CARRIED, " ".join(p.name for p in gone))
    runs = _evaluated([load_run(p, splits) for p in located if p not in gone], splits)
    if metrics:
        available = {f"{s}/{k}" for r in runs for s in splits for m in r.metrics[s].values() for k in m
                     if _number(m, k) is not None and k != "n"}
        for name in metrics:
            if name not in available:
                close = difflib.get_close_matches(name, available, n=1)
                raise ConfigError(f"--metric {name}: in no run's metrics"
                                  + (f" (did you mean {close[0]}?)" if close else "")
                                  + f"; available: {', '.join(sorted(available))}")
    tables = build_tables(runs, metrics, load_references(references))
    if target_rows:
        print("\n".join(["targets", *format_targets(target_rows, markdown=False)]))
    print(format_text(tables), end="")
    if md:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(format_markdown(tables, command, target_rows, carried, previous))
        print(f"\nwrote {md}")
    return tables
