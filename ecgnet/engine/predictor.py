"""Apply a trained model (one checkpoint, a run, or every fold of a k-fold run as an ensemble) to
recordings that are not part of any dataset: ``tools/predict.py``.

Each recording goes through exactly what the model saw in training, all of it from the checkpoint:
its leads picked by name and put in the model's order, resampled to the model's rate (polyphase),
the ``preprocess`` band-pass, the checkpoint's normaliser, the model's windows (``input.window_s``
every ``input.eval_stride_s``, or whole records for full-length models) combined by
``eval.aggregate``, the calibration temperature, and the thresholds tuned on validation.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..build import build_model, resolve_config
from ..data.dataset import EvalWindows
from ..data.recordings import BadFile, Recording, find_inputs, read_inputs, select_leads
from ..data.transforms import Normalizer, preprocess
from ..ensemble import majority_vote, mean_probability
from ..registry import DataError
from ..reports import write_atomic
from ..thresholds import decide
from .checkpoint import load_finished
from .predict import amp_dtype, pool_rows, resolve_device, to_probabilities, window_logits

log = logging.getLogger(__name__)

#: adapters whose items are single beats cut around annotated R peaks: a whole recording is not
#: what such a model takes; it takes beat windows (a NumPy array of them)
BEAT_DATASETS = {"mitdb", "kaggle_csv", "ptbdb_csv"}
#: recordings preprocessed and scored together (memory: their signals and windows)
CHUNK_RECORDS = 64


class Predictor:
    """The models of ``ckpt`` and everything needed to feed them a new recording."""

    def __init__(self, ckpt: str | Path, device: str = "auto", batch_size: Optional[int] = None,
                 amp: Optional[str] = None):
        from .evaluate import find_checkpoints     # evaluate imports this module's neighbours
        self.run_dir, paths = find_checkpoints(ckpt)
        self.states = load_finished(paths)
        first = self.states[0]
        self.cfg = resolve_config(first["config"])
        self.paths = paths
        if first.get("feature_names"):
            raise DataError(f"{paths[0]}: this model also takes per-record features "
                            f"({', '.join(first['feature_names'])}), computed from a dataset's annotations; "
                            "score it with tools/evaluate.py --config on a dataset that has them")
        self.data_type = self.cfg["data"]["type"]
        self.class_names, self.multilabel = list(first["class_names"]), bool(first["multilabel"])
        self.leads, self.fs = list(first["leads"]), float(first["fs"])
        self.window, self.stride = int(first["window"]), int(first["stride"])
        self.full_length = bool(first.get("full_length"))
        self.aggregate = self.cfg["eval"]["aggregate"]
        self.ensemble = self.cfg["kfold"]["ensemble"] if len(self.states) > 1 else None
        self.device = resolve_device(self.cfg["train"]["device"] if device == "auto" else device)
        self.dtype = amp_dtype(amp or self.cfg["train"]["amp"], self.device)   # default: as in training
        self.batch_size = batch_size or self.cfg["train"]["eval_batch_size"]
        self.models = []
        for s in self.states:
            model = build_model(s["config"], len(s["leads"]), len(s["class_names"]), None)
            model.load_state_dict(s["model"])
            self.models.append(model.to(self.device).eval())
        self.normalizers = [Normalizer.from_state(s["normalizer"]) for s in self.states]
        self.temperatures = [s.get("temperature") for s in self.states]
        self.thresholds = [s["thresholds"] for s in self.states]

    # ---- what the output says about the model ----
    def describe(self) -> dict:
        mean_t = None if any(t is None for t in self.thresholds) else np.mean(self.thresholds, 0).tolist()
        return {"run": str(self.run_dir), "checkpoints": [str(p) for p in self.paths],
                "model": self.cfg["model"]["type"], "name": self.cfg.get("name"),
                "classes": self.class_names, "multilabel": self.multilabel, "fs": self.fs, "leads": self.leads,
                "window_s": None if self.full_length else self.window / self.fs,
                "stride_s": None if self.full_length else self.stride / self.fs,
                "aggregate": self.aggregate, "ensemble": self.ensemble,
                "calibrated": all(t is not None for t in self.temperatures),
                "thresholds": mean_t, "decision": "thresholds tuned on validation" if mean_t else "argmax"}

    # ---- one recording to model input ----
    def prepare(self, rec: Recording) -> np.ndarray:
        """The recording as the model saw its training records: (leads, samples) float32 at ``fs``."""
        if rec.signal.shape[-1] == 0:
            raise DataError(f"{rec.source}: record {rec.id} is empty")
        x = select_leads(rec, self.leads)
        return preprocess(x, rec.fs, {**self.cfg["preprocess"], "fs": self.fs})

    def score_signals(self, signals: Sequence[np.ndarray]):
        """Preprocessed signals (leads, samples) at ``fs`` -> (probabilities (N, C), decisions (N, C) 0/1,
        windows as (record position, start sample), each window's probabilities (models averaged))."""
        index = np.arange(len(signals))
        probs, window_probs, items = [], [], []
        for model, normalizer, temperature in zip(self.models, self.normalizers, self.temperatures):
            windows = EvalWindows(signals, index, self.window, self.stride, normalizer, pad=not self.full_length)
            logits, rows, _ = window_logits([model], windows, self.device, self.dtype, self.batch_size)
            p = to_probabilities(logits[0], self.multilabel, temperature)
            probs.append(pool_rows(p, rows, len(signals), self.aggregate).astype(np.float32))
            window_probs.append(p)
            items = windows.items
        if len(self.models) == 1:
            final, decisions = probs[0], decide(probs[0], self.thresholds[0], self.multilabel)
        else:
            final, decisions = mean_probability(probs, self.thresholds, self.multilabel)
            if self.ensemble == "vote":
                decisions = majority_vote([decide(p, t, self.multilabel) for p, t in zip(probs, self.thresholds)],
                                          probs, self.multilabel, self.thresholds)
        return final, decisions, items, np.mean(window_probs, 0)

    def predict_signals(self, signals: Sequence[np.ndarray], per_window: bool = False) -> list[dict]:
        """``score_signals`` as one dict per record: probabilities and labels by class name, window
        count (and each window's start and probabilities with ``per_window``)."""
        final, decisions, items, window_probs = self.score_signals(signals)
        counts = np.bincount([pos for pos, _ in items], minlength=len(signals))
        out = [{"probabilities": dict(zip(self.class_names, map(float, final[i]))),
                "labels": [c for c, d in zip(self.class_names, decisions[i]) if d],
                "windows": int(counts[i])} for i in range(len(signals))]
        if per_window:
            for (pos, start), p in zip(items, window_probs):
                out[pos].setdefault("per_window", []).append(
                    {"start_s": start / self.fs, "probabilities": dict(zip(self.class_names, map(float, p)))})
            for row in out:
                row["per_window"].sort(key=lambda w: w["start_s"])
        return out

    def probability_model(self):
        """The models as one differentiable function, windows in mV -> calibrated probabilities (mean over
        k folds), normalisation inside: what ``export`` writes and ``explain`` attributes."""
        from ..export import ProbabilityModel
        return ProbabilityModel(self.models, [n.state_dict() for n in self.normalizers], self.temperatures,
                                self.multilabel).eval()

    def check_input(self, rec: Recording) -> None:
        if self.cfg["data"].get("segment") == "qrs":
            raise DataError(f"{rec.source}: this model takes QRS-centred segments cut by its dataset adapter "
                            "(data.segment: qrs); score it with tools/evaluate.py --config")
        if self.data_type in BEAT_DATASETS and not rec.source.endswith((".npy", ".npz")):
            raise DataError(f"{rec.source}: this model classifies single beats ({self.data_type}); give it beat "
                            f"windows of {self.window} samples at {self.fs:g} Hz as a NumPy array "
                            "(beats, leads, samples)")

    def run(self, items: Iterable, per_window: bool = False) -> Iterator[dict | BadFile]:
        """Recordings (or BadFiles) in -> results (or BadFiles) out, ``CHUNK_RECORDS`` at a time."""
        chunk: list[tuple[Recording, np.ndarray]] = []

        def flush():
            results = self.predict_signals([x for _, x in chunk], per_window)
            for (rec, x), result in zip(chunk, results):
                yield {"record": rec.id, "source": rec.source, "fs_in": rec.fs, "duration_s": x.shape[-1] / self.fs,
                       **result}
            chunk.clear()

        for item in items:
            if isinstance(item, BadFile):
                yield item
                continue
            try:
                self.check_input(item)
                chunk.append((item, self.prepare(item)))
            except DataError as err:
                yield BadFile(item.source, str(err))
                continue
            if len(chunk) >= CHUNK_RECORDS:
                yield from flush()
        if chunk:
            yield from flush()


def write_predictions(path: Path, model: dict, results: list[dict], errors: list[BadFile]) -> None:
    """JSON (the model, every record, the files that could not be read) or CSV (a row per record:
    probabilities, labels, the thresholds; unreadable files as rows with an error)."""
    text = io.StringIO(newline="")
    if path.suffix.lower() == ".csv":
        classes = model["classes"]
        thresholds = model["thresholds"] or [None] * len(classes)
        w = csv.writer(text)
        w.writerow(["record", "source", "windows", *[f"p_{c}" for c in classes], "labels",
                    *[f"threshold_{c}" for c in classes], "run", "error"])
        for r in results:
            w.writerow([r["record"], r["source"], r["windows"], *[f"{r['probabilities'][c]:.6f}" for c in classes],
                        ";".join(r["labels"]), *["" if t is None else f"{t:.6f}" for t in thresholds],
                        model["run"], ""])
        for e in errors:
            w.writerow(["", e.source, "", *[""] * len(classes), "", *[""] * len(classes), model["run"], e.reason])
    else:
        json.dump({"model": model, "records": [{**r, "thresholds": model["thresholds"]} for r in results],
                   "errors": [{"source": e.source, "reason": e.reason} for e in errors]}, text, indent=1)
        text.write("\n")
    write_atomic(path, text.getvalue())


def predict_files(ckpt: str | Path, inputs: str | Path, out: Optional[str | Path] = None,
                  fs: Optional[float] = None, leads: Optional[Sequence[str]] = None, per_window: bool = False,
                  device: str = "auto", progress: Optional[bool] = None, amp: Optional[str] = None
                  ) -> tuple[list[dict], list[BadFile]]:
    """``tools/predict.py``: every recording of ``inputs`` (a file or a folder) through the model(s)
    of ``ckpt``; writes ``out`` (.json or .csv; default: a table on stdout). A file that cannot be
    read or lacks a lead is reported and skipped; if nothing could be scored, a DataError says why."""
    started = time.time()
    predictor = Predictor(ckpt, device, amp=amp)
    paths = find_inputs(inputs)
    show = sys.stderr.isatty() if progress is None else progress
    results, errors = [], []
    bar = tqdm(total=len(paths), unit="file", disable=not show, desc="predict")
    done_sources = set()
    for item in predictor.run(read_inputs(paths, fs, leads), per_window):
        if isinstance(item, BadFile):
            errors.append(item)
            log.warning("skipped %s", item.reason if item.reason.startswith(item.source) else
                        f"{item.source}: {item.reason}")
            source = item.source
        else:
            results.append(item)
            source = item["source"]
        if source not in done_sources:
            done_sources.add(source)
            bar.update(1)
    bar.close()
    if not results:
        raise DataError(errors[0].reason if len(errors) == 1 else
                        f"--input {inputs}: none of {len(paths)} file(s) could be scored (first: {errors[0].reason})")
    model = predictor.describe()
    if out:
        write_predictions(Path(out), model, results, errors)
    log.info("%d record(s) from %d file(s) scored in %.1f s%s%s", len(results), len({r["source"] for r in results}),
             time.time() - started, f"; {len(errors)} skipped" if errors else "", f"; written to {out}" if out else "")
    return results, errors


def format_table(results: list[dict], class_names: Sequence[str], limit: int = 50) -> str:
    """The first ``limit`` records as a text table: probabilities per class and the labels."""
    width = max(8, *(len(c) + 1 for c in class_names))
    head = "record".ljust(24) + "windows".rjust(8) + "".join(c.rjust(width) for c in class_names) + "  labels"
    lines = [head]
    for r in results[:limit]:
        lines.append(r["record"][:23].ljust(24) + str(r["windows"]).rjust(8)
                     + "".join(f"{r['probabilities'][c]:.3f}".rjust(width) for c in class_names)
                     + "  " + (", ".join(r["labels"]) or "-"))
    if len(results) > limit:
        lines.append(f"... {len(results) - limit} more (write them all with --out FILE.json or .csv)")
    return "\n".join(lines)
