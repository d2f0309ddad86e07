"""A training run: resolve the config, load the data once, split, train one model or K fold
models, and leave everything in ``runs/<name>/``.

Layout: ``config.yaml`` (resolved), ``env.json``, ``splits.json``, ``train.log`` and, per model,
``best.pt last.pt history.csv tb/`` — directly in the run directory for one model,
in ``fold{k}/`` for k-fold.

Under torchrun (``torchrun --nproc_per_node N tools/train.py ...``) the N processes train each
model together with DDP (see ``trainer``), folds one after another. Rank 0 chooses the run
directory and hands it to the others, reads the data first (filling the cache the others then
read), and alone writes the files above; an error it meets before training is raised on every rank.
``resume`` works the same way under torchrun, with any number of processes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..build import build, resolve_config
from ..config import check_schema, config_diff, describe_changes, dump_config, load_yaml_tree
from ..data.dataset import load_signals, record_length
from ..data.splits import make_splits
from ..registry import ConfigError, DataError
from ..reports import write_json
from . import distributed
from .checkpoint import load_checkpoint, seed_everything
from .trainer import PreparedData, Trainer, check_monitor

log = logging.getLogger(__name__)


def prepare_data(cfg: dict, progress: bool = False, check_training: bool = False) -> PreparedData:
    """Build the adapter, read its record list and load (or memory-map) every record once.
    ``check_training``: refuse an unknown ``train.monitor`` before the signals are read."""
    adapter = build("data", cfg)
    records = adapter.records()
    if check_training:
        check_monitor(cfg["train"]["monitor"], records, adapter)
    fs = cfg["preprocess"]["fs"] or records.fs
    icfg = cfg["input"]
    if icfg["full_length"]:
        window = stride = None       # set from the records below
    else:
        window_s = icfg["window_s"] or adapter.record_length_s
        if window_s is None:
            raise ConfigError("input.window_s: required for a dataset whose records differ in length, "
                              "e.g. 10 (or set input.full_length: true)")
        window = int(round(window_s * fs))
        stride = int(round((icfg["eval_stride_s"] or window_s) * fs))
        if window < 8 or stride < 1:
            raise ConfigError(f"input: window of {window} samples / stride {stride} at {fs} Hz is too short")
    records, signals = load_signals(adapter, cfg["preprocess"], cfg["data"]["type"], progress)
    for reason, ids in records.skipped.items():
        log.warning("left out %d record(s) (%s): %s", len(ids), reason,
                    ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""))
    if icfg["full_length"]:
        longest = max(record_length(signals, i) for i in range(len(signals)))
        window = stride = min(longest, int(round(icfg["max_length_s"] * fs))) if icfg["max_length_s"] else longest
    return PreparedData(records, signals, fs, window, stride, adapter, icfg["full_length"])


def model_dirs(run_dir: Path, folds: int) -> list[Path]:
    return [run_dir / f"fold{k}" for k in range(folds)] if folds > 1 else [run_dir]


def _new_run_dir(cfg: dict, work_dir: str | None) -> Path:
    if work_dir is not None:
        run_dir = Path(work_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"--work-dir {run_dir}: is a file, not a directory; choose a directory")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"--work-dir {run_dir}: already holds a run; continue it with --resume {run_dir} "
                              "or choose another directory")
        return run_dir
    if Path(cfg["work_dir"]).exists() and not Path(cfg["work_dir"]).is_dir():
        raise ConfigError(f"work_dir: {cfg['work_dir']} is a file, not a directory; set work_dir or --work-dir")
    base = Path(cfg["work_dir"]) / cfg["name"]
    run_dir, n = base, 1
    while run_dir.exists():          # never overwrite an earlier run
        n += 1
        run_dir = base.with_name(f"{base.name}_{n}")
    return run_dir


def git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when code or configs differ from it (None outside git)."""
    where = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=where).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "*.py", "*.yaml"],
                               capture_output=True, text=True, timeout=5, cwd=where).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if commit and dirty else commit


def _env(cfg: dict) -> dict:
    return {"command": sys.argv, "ecgnet": __version__, "git_commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform(),
            "device": str(distributed.process_device(cfg["train"]["device"])), "seed": cfg["seed"],
            "processes": distributed.world_size(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _log_to_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("ecgnet").addHandler(handler)
    return handler


def train(cfg: dict, work_dir: str | None = None, folds: int | None = None,
          only_folds: list[int] | None = None) -> Path:
    """Train from a loaded config (see ``config.load_config``); returns the run directory.
    ``only_folds``: train just these folds of a k-fold run (see ``_check_only_folds``)."""
    if folds is not None:
        cfg = {**cfg, "kfold": {**cfg.get("kfold", {}), "folds": folds}}
    cfg = resolve_config(cfg)
    _check_only_folds(only_folds, cfg["kfold"]["folds"])
    with distributed.session(cfg["train"]["device"]):
        run_dir, created = distributed.on_main(lambda: _start_run_dir(cfg, work_dir))
        try:
            return _run(cfg, run_dir, only_folds)
        except BaseException as err:       # also Ctrl-C
            saved = any(run_dir.rglob("*.pt"))
            if not saved and distributed.is_main():   # nothing trained yet: leave nothing that blocks --work-dir
                _discard(run_dir, created)
            if isinstance(err, KeyboardInterrupt):    # the CLI prints what to do next
                err.what_now = f"continue with --resume {run_dir}" if saved else "nothing was saved; start again"
            raise


def _start_run_dir(cfg: dict, work_dir: str | None) -> tuple[Path, bool]:
    """Choose the run directory and write config.yaml and env.json -> (directory, created by us)."""
    run_dir = _new_run_dir(cfg, work_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
        write_json(_env(cfg), run_dir / "env.json")
    except BaseException as err:       # also Ctrl-C
        _discard(run_dir, created)
        if isinstance(err, KeyboardInterrupt):
            err.what_now = "nothing was saved; start again"
        if isinstance(err, OSError):
            where = f"--work-dir {work_dir}" if work_dir is not None else f"work_dir {cfg['work_dir']}"
            raise DataError(f"{where}: cannot write the run directory {run_dir} ({err.strerror or err}); "
                            "choose a writable directory") from None
        raise
    return run_dir, created


def _discard(run_dir: Path, created: bool) -> None:
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for path in run_dir.iterdir():     # an empty directory the user made: keep it, empty again
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _check_only_folds(only_folds: list[int] | None, folds: int) -> None:
    """Folds of one k-fold run may be trained by several processes or machines at once, each taking
    its own folds (``--only-folds``) in the same run directory; every fold's seed depends on its
    number alone, so the models are those one process would train one after another."""
    if only_folds is None:
        return
    if folds < 2:
        raise ConfigError("--only-folds: the run trains one model, not k folds; add --folds K (K >= 2) "
                          "or drop --only-folds")
    bad = [k for k in only_folds if not 0 <= k < folds]
    if bad or not only_folds:
        raise ConfigError(f"--only-folds: {' '.join(map(str, bad)) or 'nothing given'}: "
                          f"choose fold numbers 0-{folds - 1}")


def resume(run_dir: str | Path, only_folds: list[int] | None = None) -> Path:
    """Continue an interrupted run from its own config.yaml and last.pt files, refusing a config.yaml
    edited since the checkpoints were written. ``only_folds``: continue just these folds."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there; pass the directory a run was started in")
    try:
        cfg = resolve_config(check_schema(load_yaml_tree(path)))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    _check_only_folds(only_folds, cfg["kfold"]["folds"])
    for last in sorted(run_dir.glob("last.pt")) + sorted(run_dir.glob("fold*/last.pt")):
        _check_unchanged(cfg, load_checkpoint(last)["config"], path, last)
    with distributed.session(cfg["train"]["device"]):
        try:
            return _run(cfg, run_dir, only_folds)
        except KeyboardInterrupt as err:
            err.what_now = f"continue with --resume {run_dir}"
            raise


def _check_unchanged(cfg: dict, trained: dict, path: Path, ckpt: Path) -> None:
    """A resumed run must go on with the settings it started with: an edited config.yaml would mix
    settings silently (the new dropout with the restored lr) and be recorded as if used throughout."""
    try:
        trained = resolve_config(trained)      # resolved: settings added to ecgnet since then get defaults
    except ConfigError as err:
        raise ConfigError(f"{ckpt}: its config does not fit this version of ecgnet ({err})") from None
    changed = config_diff(trained, cfg)
    if changed:
        raise ConfigError(f"{path}: differs from the config {ckpt} was trained with: "
                          f"{describe_changes(changed, trained, cfg)}; undo the edit to resume, or start a new "
                          f"run from these weights with --config {path} --opts model.init_from={ckpt.parent}")


def _finished(model_dir: Path) -> bool:
    last = model_dir / "last.pt"
    return last.is_file() and bool(load_checkpoint(last).get("finished"))


class _WallClock:
    """Adds this process's training time to env.json's train_wall_s after every epoch and at the end:
    a resumed run adds up its sessions, processes training folds of one run in parallel add up theirs
    (so it is the compute time, not the span), and a process killed outright (a session's end) loses
    only the epoch it was in, not all its time so far."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.since = run_dir, time.time()

    def record(self, finished: bool = False) -> None:
        now = time.time()
        path = self.run_dir / "env.json"
        with _locked(self.run_dir / ".env.lock"):     # two processes writing at once would lose one's time
            env = json.loads(path.read_text()) if path.is_file() else {}
            env["train_wall_s"] = round(env.get("train_wall_s", 0.0) + now - self.since, 1)
            if finished:
                env["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            write_json(env, path)
        self.since = now


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` between processes (POSIX; elsewhere none: a race there costs a
    wall-time sum, nothing else)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _save_splits(splits: dict, path: Path) -> None:
    """Write splits.json once; a resumed run must recompute exactly the same split (the same data,
    config and code), or its models would be trained and ensembled on different partitions."""
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            raise DataError(f"{path}: not valid JSON; restore it from a backup (it records the run's split)") from None
        if saved != splits:
            raise DataError(f"{path}: the split recomputed from the data differs from the one this run was "
                            "trained on (the data or the code changed); resume with the data it started "
                            "with, or start a new run")
        return
    write_json(splits, path)


def _run(cfg: dict, run_dir: Path, only_folds: list[int] | None = None) -> Path:
    main = distributed.is_main()
    handler = _log_to_file(run_dir) if main else None
    clock = _WallClock(run_dir) if main else None
    try:
        distributed.local_batch_size(cfg["train"]["batch_size"])    # an uneven split is refused before the data is read
        seed_everything(cfg["seed"])
        progress = main and (cfg["train"]["progress"] == "on" or sys.stderr.isatty())
        data = distributed.main_first(lambda: prepare_data(cfg, progress=progress, check_training=True))
        folds = cfg["kfold"]["folds"]
        splits = make_splits(data.records, cfg["split"], folds)
        ids = np.asarray(data.records.ids)
        distributed.on_main(lambda: _save_splits(
            {"skipped": data.records.skipped, "test": ids[splits["test"]].tolist(),
             "folds": [{"train": ids[t].tolist(), "val": ids[v].tolist()} for t, v in splits["folds"]]},
            run_dir / "splits.json"))
        log.info("%d records (%s), %d classes, %d test; %d model(s)", len(ids),
                 "multi-label" if data.records.multilabel else "single-label", data.records.num_classes,
                 len(splits["test"]), len(splits["folds"]))
        for k, (out_dir, (train_idx, val_idx)) in enumerate(zip(model_dirs(run_dir, folds), splits["folds"])):
            if _finished(out_dir):
                if only_folds is None or k in only_folds:
                    log.info("fold %d already finished; skipping", k)
                continue
            if only_folds is not None and k not in only_folds:
                continue                # another process's, or left for a later call
            log.info("fold %d: %d train / %d val records", k, len(train_idx), len(val_idx))
            Trainer(cfg, data, {"train": train_idx, "val": val_idx, "test": splits["test"]}, out_dir, k,
                    on_epoch_end=clock.record if clock else None).fit()
        # read at the end: folds that other processes finished meanwhile count too
        dirs = model_dirs(run_dir, folds)
        finished = [_finished(d) for d in dirs]     # each last.pt loaded once
        left = [k for k, done in enumerate(finished) if not done]
        if left:
            log.info("fold(s) %s not finished yet (not in --only-folds); evaluate once they are: "
                     "--resume %s [--only-folds ...]", " ".join(map(str, left)), run_dir)
        if main:
            summary = {d.name: load_checkpoint(d / "best.pt")["val_metrics"]
                       for d, done in zip(dirs, finished) if done}
            write_json(summary, run_dir / "val_summary.json")
            clock.record(finished=True)
    finally:
        if handler:
            logging.getLogger("ecgnet").removeHandler(handler)
            handler.close()
    return run_dir
