"""Command-line entry points (tools/*.py and the ecgnet-* console scripts call these).

User mistakes (ConfigError, DataError) and what the machine refuses (OSError: a full disk, a
read-only folder) print one line and exit with code 2; Ctrl-C exits with 130 and says how to
continue; programming errors keep their traceback. Under torchrun rank 0 says these for all ranks:
the others exit with the same code, printing only errors of their own.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from .registry import ConfigError, DataError


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)


def _other_rank() -> bool:
    """A torchrun process other than rank 0 (set before the process group exists)."""
    return int(os.environ.get("RANK", "0")) != 0


def guarded(fn: Callable[[], None]) -> int:
    # every rank reads the same config, and rank 0's errors before training reach the others ``from_main``
    def said_by_rank_0(err):
        return _other_rank() and (isinstance(err, (ConfigError, KeyboardInterrupt)) or getattr(err, "from_main", False))

    try:
        fn()
    except (ConfigError, DataError) as err:
        if not said_by_rank_0(err):
            print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:       # one not caught where it happened (those name the fix)
        where = f"{err.filename}: " if err.filename else ""
        if not said_by_rank_0(err):
            print(f"error: {where}{err.strerror or err}; check the path, its permissions and the free disk space",
                  file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        what_now = getattr(err, "what_now", None)     # set by training: how to continue
        if not said_by_rank_0(err):
            print(f"interrupted; {what_now}" if what_now else "interrupted", file=sys.stderr)
        return 130
    return 0


def train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train one model, or K fold models, from a YAML config; "
                                                 "with several processes: torchrun --nproc_per_node N tools/train.py")
    parser.add_argument("--config", help="YAML config (with _base_ inheritance)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides such as train.epochs=5 model.dropout=0.3 (values parsed as YAML)")
    parser.add_argument("--folds", type=int, help="k-fold cross-validation with K models")
    parser.add_argument("--work-dir", help="run directory (default runs/<name>, never overwritten)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run with its saved config")
    parser.add_argument("--only-folds", type=int, nargs="+", metavar="K",
                        help="train only these folds (0-based) of a k-fold run, e.g. one process or machine each: "
                             "the first with --config ... --folds 5 --work-dir RUN --only-folds 0 1 2, the others "
                             "with --resume RUN --only-folds 3 4 once RUN/splits.json exists")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)

    def run():
        from .config import load_config
        if args.resume:
            if args.config or args.opts or args.folds or args.work_dir:
                raise ConfigError("--resume: uses the run's saved config; drop --config/--opts/--folds/--work-dir")
            from .engine.run import resume
            run_dir = resume(args.resume, only_folds=args.only_folds)
        else:
            if not args.config:
                raise ConfigError("--config: required (or --resume RUN_DIR)")
            if args.folds is not None and args.folds < 0:
                raise ConfigError("--folds: must be >= 0")
            cfg = load_config(args.config, args.opts)   # before torch is imported: a typo is reported at once
            from .engine.run import train
            run_dir = train(cfg, work_dir=args.work_dir, folds=args.folds, only_folds=args.only_folds)
        if not _other_rank():
            print(f"run directory: {run_dir}")
    return guarded(run)


def evaluate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint, a run, or all folds of a k-fold run "
                                                 "and their ensembles.")
    parser.add_argument("--ckpt", required=True, nargs="+",
                        help="a .pt file, a run directory or a k-fold run directory; several: their models are "
                             "scored as one ensemble (needs --out)")
    parser.add_argument("--config", help="read the data with this config instead of the checkpoint's; another "
                                         "dataset's config scores the model on it (external evaluation; class "
                                         "names matched or mapped by its eval.class_map)")
    parser.add_argument("--split", choices=["test", "val", "all"],
                        help="default: the config's eval.split (test); with --config naming another dataset (an "
                             "external evaluation): all (default) or test")
    parser.add_argument("--out", help="report directory (default RUN_DIR/eval/SPLIT)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="eval.KEY=VALUE",
                        help="evaluation settings only, e.g. eval.aggregate=max eval.bootstrap=0")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)

    def run():
        from .config import parse_opts
        from .engine.evaluate import evaluate
        overrides = parse_opts(args.opts)
        if set(overrides) - {"eval"}:
            raise ConfigError(f"--opts: evaluate takes eval.* settings only (what the model saw is fixed by its "
                              f"checkpoint), got {', '.join(sorted(set(overrides) - {'eval'}))}")
        evaluate(args.ckpt if len(args.ckpt) > 1 else args.ckpt[0], args.split, args.out, args.config, overrides.get("eval"))
    return guarded(run)


def predict_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply a trained model (a checkpoint, a run, or a k-fold run as "
                                                 "an ensemble) to recordings: WFDB .hea/.dat, CinC .mat/.hea, "
                                                 "ecgnet HDF5, CSV or NumPy; a file or a folder of them.")
    parser.add_argument("--ckpt", required=True, help="a .pt file, a run directory or a k-fold run directory")
    parser.add_argument("--input", required=True, help="a recording or a folder (searched recursively)")
    parser.add_argument("--out", help="write every record to FILE.json or FILE.csv (default: a table on stdout)")
    parser.add_argument("--fs", type=float, help="sampling rate (Hz) of CSV and NumPy inputs, which carry none")
    parser.add_argument("--leads", help="comma-separated lead names of NumPy inputs (default: the model's, in order)")
    parser.add_argument("--per-window", action="store_true", help="also each window's probabilities (JSON output)")
    parser.add_argument("--device", default="auto", help="auto (the checkpoint's train.device), cpu or cuda[:N]")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                        help="autocast (default: the checkpoint's train.amp); off: full fp32 precision")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)

    def run():
        from .engine.predictor import format_table, predict_files
        if args.out and not args.out.lower().endswith((".json", ".csv")):
            raise ConfigError(f"--out {args.out}: name a .json or .csv file")
        if args.per_window and args.out and args.out.lower().endswith(".csv"):
            raise ConfigError("--per-window: per-window probabilities go to a .json --out, not a table")
        leads = [n.strip() for n in args.leads.split(",")] if args.leads else None
        results, _ = predict_files(args.ckpt, args.input, args.out, args.fs, leads, args.per_window, args.device,
                                   amp=args.amp)
        if not args.out:
            print(format_table(results, list(results[0]["probabilities"])))
    return guarded(run)


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a trained model (a k-fold run: one graph averaging its "
                                                 "folds) to ONNX or TorchScript, windows in mV -> calibrated "
                                                 "probabilities, with class names, rate, leads, window and "
                                                 "thresholds embedded as metadata.")
    parser.add_argument("--ckpt", required=True, help="a .pt file, a run directory or a k-fold run directory")
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    parser.add_argument("--out", help="output file (default: model.onnx / model.torchscript.pt in the run directory)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)

    def run():
        from .export import export
        path, meta = export(args.ckpt, args.format, args.out)
        length = "any length" if meta["dynamic_length"] else f"windows of exactly {meta['window_samples']} samples"
        print(f"{path}: {args.format}, signal (batch, {len(meta['leads'])} leads, {length}) at {meta['fs']:g} Hz "
              f"-> probabilities of {len(meta['classes'])} classes ({', '.join(meta['classes'][:8])}"
              f"{', ...' if len(meta['classes']) > 8 else ''}); metadata key 'ecgnet'")
    return guarded(run)


def explain_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Attribute a class's probability over each lead and time of a "
                                                 "recording (Captum): a PNG over the ECG and the arrays (.npz).")
    parser.add_argument("--ckpt", required=True, help="a .pt file, a run directory or a k-fold run directory")
    parser.add_argument("--input", required=True, help="a recording (any format predict reads) or a folder")
    parser.add_argument("--class", dest="class_name", help="the class to explain (default: the most probable)")
    parser.add_argument("--method", default="integrated_gradients",
                        choices=["integrated_gradients", "gradcam", "attention"])
    parser.add_argument("--steps", type=int, default=32, help="integrated gradients: steps from the baseline")
    parser.add_argument("--fs", type=float, help="sampling rate of CSV and NumPy inputs")
    parser.add_argument("--out", help="folder for the PNGs and arrays (default: RUN/explain)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)

    def run():
        from .explain import explain_file
        if args.steps < 2:
            raise ConfigError(f"--steps {args.steps}: give at least 2")
        for e, png, npz in explain_file(args.ckpt, args.input, args.class_name, args.method, args.out, args.fs,
                                        args.steps):
            print(f"{e.record}: p({e.class_name}) = {e.probability:.3f}, {e.method} -> {png} (+ {npz.name})")
    return guarded(run)


def compare_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare evaluated runs: one table per dataset with the chosen "
                                                 "metrics, their 95 % CIs and the config keys that differ.")
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run directories written by tools/train.py")
    parser.add_argument("--runs-file", metavar="FILE", help="more run directories, one a line ('#' comments)")
    parser.add_argument("--metric", nargs="+", action="extend", metavar="SPLIT/KEY",
                        help="e.g. test/accuracy val/macro_f1 (default: test/macro_auroc test/macro_f1 and the "
                             "dataset's own scores); rows are sorted by the first")
    parser.add_argument("--md", metavar="OUT.md", help="also write the tables, references and commands as Markdown")
    parser.add_argument("--references", metavar="FILE",
                        help="published numbers to show beside the runs (default experiments/references.yaml)")
    parser.add_argument("--targets", metavar="FILE",
                        help="goals to mark met or not, each read from one run's report "
                             "(e.g. experiments/targets.yaml)")
    parser.add_argument("--records", metavar="DIR",
                        help="keep a copy of the files each row is read from (config.yaml, env.json, "
                             "eval/*/metrics.json, eval/*/eval_info.json) under DIR/RUN_PATH, and read a run whose "
                             "directory is not on this machine from there (e.g. experiments/records)")
    args = parser.parse_args(argv)
    _setup_logging(False)

    def run():
        from .compare import REFERENCES, compare, fmt_command
        command = fmt_command(sys.argv if argv is None else ["tools/compare_runs.py", *argv])
        compare(args.runs, args.metric, args.md, args.runs_file, args.references or REFERENCES, command, args.targets,
                args.records)
    return guarded(run)
