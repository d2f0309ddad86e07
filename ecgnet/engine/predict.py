"""Inference: sliding windows in, one probability vector per record out."""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.utils.data

from ..data.base import RecordSet
from ..data.dataset import EvalWindows, collate, record_length
from ..data.transforms import Normalizer
from ..registry import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: '{name}' but no CUDA device is visible; use auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: '{name}' is not a device; use auto, cpu or cuda[:N]") from None


# CPU features with native bf16 matrix arithmetic (oneDNN uses them for bf16 convolutions and matmuls)
_BF16_FEATURES = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"))
_CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=None)
def cpu_bf16_feature() -> str | None:
    """The CPU feature that makes bf16 fast here ("AMX-BF16" or "AVX512-BF16"), or None.

    Asks torch (``torch.cpu.get_capabilities()``, public in torch 2.13; builds without it: the private
    ``torch.cpu._is_amx_tile_supported`` / ``_is_avx512_bf16_supported``), then ``/proc/cpuinfo``."""
    try:
        caps = dict(torch.cpu.get_capabilities())
    except Exception:        # absent (older torch) or failing: fall back
        caps = {}
    if not caps:
        for key, probe in (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
            try:
                caps[key] = bool(getattr(torch.cpu, probe)())
            except Exception:
                pass
    if not any(caps.get(key) for key, _ in _BF16_FEATURES):
        try:
            flags = set()
            for line in _CPUINFO.read_text().splitlines():
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
            caps.update({key: True for key, _ in _BF16_FEATURES if key in flags})
        except OSError:      # not Linux
            pass
    return next((name for key, name in _BF16_FEATURES if caps.get(key)), None)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA (fp16 where bf16 is unsupported); on a CPU, bf16 where it has native bf16
    arithmetic (AMX or AVX512-BF16, see ``cpu_bf16_feature``), full precision elsewhere."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_bf16_feature():
            return torch.bfloat16
        return None
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 or off on the CPU")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def describe_amp(mode: str, device: torch.device, dtype: torch.dtype | None) -> str:
    """One log line saying what ``train.amp`` resolved to, and why."""
    if dtype is None:
        if mode == "off":
            return "amp: off (fp32): train.amp is off"
        if device.type == "cpu":
            return "amp: off (fp32): this CPU has no native bf16 (AMX-BF16 or AVX512-BF16)"
        return f"amp: off (fp32): no autocast on {device.type}"
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    if mode != "auto":
        slow = "; this CPU has no native bf16, so it may be slower than fp32" \
            if device.type == "cpu" and not cpu_bf16_feature() else ""
        return f"amp: {name} autocast (train.amp: {mode}{slow})"
    if device.type == "cpu":
        return f"amp: {name} autocast (CPU has {cpu_bf16_feature()})"
    return f"amp: {name} autocast ({device.type}{' without bf16' if dtype == torch.float16 else ''})"


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def forward(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor | None,
            features: torch.Tensor | None = None) -> torch.Tensor:
    """Logits; ``lengths`` (real samples per row of a zero-padded batch) goes to the model only when
    some row is padded, so models without masking still serve fixed-length batches; ``features``
    (per-record numbers beside the signal) only when the data has them (``models.FeatureFusion``)."""
    extra = {}
    if lengths is not None:
        extra["lengths"] = lengths.to(x.device, non_blocking=True)
    if features is not None:
        extra["features"] = features.to(x.device, non_blocking=True)
    return model(x, **extra)


def format_eta(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    seconds = int(round(max(seconds, 0.0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLog:
    """A log line at most every ``every_s`` seconds of wall time: ``<what>: step i/n, X samples/s,
    ETA m:ss``, for runs without a terminal (tqdm off). Rates come from counts and the clock, never
    from a tensor, so watching adds no host-device sync; ``every_s`` None: silent."""

    def __init__(self, what: str, total: int, every_s: float | None, unit: str = "samples", step: str = "step"):
        self.what, self.total, self.every_s, self.unit, self.step_word = what, total, every_s, unit, step
        self.start = self.last = time.monotonic()
        self.seen = 0

    def step(self, i: int, samples: int) -> None:
        """After step ``i`` (1-based) of ``total``, which brought ``samples`` more samples."""
        self.seen += samples
        if self.every_s is None:
            return
        now = time.monotonic()
        if now - self.last < self.every_s or i >= self.total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        log.info("%s: %s %d/%d, %.1f %s/s, ETA %s", self.what, self.step_word, i, self.total,
                 self.seen / elapsed, self.unit, format_eta(elapsed / i * (self.total - i)))


AGGREGATES = ("mean", "max")


def pool_rows(values: np.ndarray, rows_of: np.ndarray, n: int, how: str) -> np.ndarray:
    """(rows, C) -> (n, C): the rows that ``rows_of`` sends to the same output row, averaged or maxed."""
    if how == "mean":
        out = np.zeros((n, values.shape[1]))
        np.add.at(out, rows_of, values)
        return out / np.bincount(rows_of, minlength=n)[:, None]
    if how == "max":
        out = np.full((n, values.shape[1]), -np.inf)
        np.maximum.at(out, rows_of, values)
        return out
    raise ConfigError(f"eval.aggregate: '{how}' is not one of {', '.join(AGGREGATES)}")


class DeviceNormalizer:
    """A per-lead ``Normalizer`` applied to a zero-padded batch on the device: (x - mean) / std on
    the real samples of each row, the padding left at zero, exactly as ``EvalWindows`` normalises
    a window before padding it (the same float32 operations, so the same values)."""

    def __init__(self, normalizer: Normalizer, device: torch.device):
        if normalizer.mode != "per_lead":
            raise ValueError(f"only per-lead normalisation depends on the model, not '{normalizer.mode}'")
        self.mean = torch.as_tensor(normalizer.mean, dtype=torch.float32, device=device)   # (leads, 1)
        self.std = torch.as_tensor(normalizer.std, dtype=torch.float32, device=device)

    def __call__(self, x: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        """``real``: (batch,) real samples per row, or None when no row is padded."""
        out = (x - self.mean) / self.std
        if real is not None:
            mask = torch.arange(x.shape[-1], device=x.device) < real[:, None]
            out = torch.where(mask[:, None, :], out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out


def _item_lengths(windows: EvalWindows) -> np.ndarray:
    """Real (unpadded) samples of every item of ``windows``, in item order."""
    records = {pos: record_length(windows.signals, windows.index[pos]) for pos in {pos for pos, _ in windows.items}}
    return np.array([min(windows.window, records[pos] - start) for pos, start in windows.items], dtype=np.int64)


@torch.no_grad()
def window_logits(models: Sequence[torch.nn.Module], windows: EvalWindows, device: torch.device,
                  dtype: torch.dtype | None, batch_size: int, normalizers: Sequence[Normalizer] | None = None,
                  loss_fn=None, targets: np.ndarray | None = None, num_workers: int = 0, pin_memory: bool = False,
                  log_every_s: float | None = None, what: str = "inference"
                  ) -> tuple[list[np.ndarray], np.ndarray, list[float | None]]:
    """Every window of ``windows`` through every model, each batch read (and copied to the device)
    once. -> (float32 logits (windows, C) per model, the record position of each window (windows,),
    mean window loss per model where ``loss_fn`` and per-record ``targets`` are given).

    ``normalizers``: None when ``windows`` already normalises (one model, or a fold-independent
    per-record/none normalisation); otherwise one per model, ``windows`` built with
    ``Normalizer("none")``, and each model's per-lead statistics applied on the device to the real
    samples only (the padding stays zero) — the same inputs as K separate passes.

    Logits and losses stay on the device until the end (no host sync per batch)."""
    if normalizers is not None:
        if len(normalizers) != len(models):
            raise ValueError("window_logits: one normaliser per model")
        if windows.normalizer.mode != "none":
            raise ValueError("window_logits: per-model normalisers need windows built with Normalizer('none')")
        if any(n.mode not in ("per_lead", "none") for n in normalizers):
            raise ValueError("window_logits: per-record normalisation is the same for every model; "
                             "let the windows apply it")
    for model in models:
        model.eval()
    on_device = [None if n is None or n.mode == "none" else DeviceNormalizer(n, device)
                 for n in (normalizers or [None] * len(models))]
    real = torch.from_numpy(_item_lengths(windows)) if any(on_device) else None
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=pin_memory, collate_fn=collate)
    chunks: list[list[torch.Tensor]] = [[] for _ in models]
    positions = []
    wide = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
    loss_sums = [torch.zeros((), dtype=wide, device=device) for _ in models]
    y_all = None if loss_fn is None else torch.as_tensor(targets, device=device)
    progress = ProgressLog(what, len(loader), log_every_s, unit="windows", step="batch")
    done = 0
    for i, batch in enumerate(loader, 1):
        x, pos, lengths, features = batch
        x = x.to(device, non_blocking=True)
        rows_real = None
        if real is not None:
            rows_real = real[done:done + len(pos)]
            rows_real = rows_real.to(device, non_blocking=True) if bool((rows_real < x.shape[-1]).any()) else None
        done += len(pos)
        for k, model in enumerate(models):
            xk = x if on_device[k] is None else on_device[k](x, rows_real)
            with autocast(device, dtype):
                logits = forward(model, xk, lengths, features)
            logits = logits.float()
            if loss_fn is not None:
                y = y_all[pos.to(device, non_blocking=True)]
                loss_sums[k] += loss_fn(logits, y).to(wide) * len(pos)
            chunks[k].append(logits)
        positions.append(pos.numpy())
        progress.step(i, len(pos))
    rows = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    logits = [torch.cat(c).cpu().numpy() if c else np.zeros((0, 0), np.float32) for c in chunks]  # one copy each
    losses = [loss_sums[k].item() / done if loss_fn is not None and done else None for k in range(len(models))]
    return logits, rows, losses


def to_probabilities(logits: np.ndarray, multilabel: bool, temperature: Sequence[float] | None = None) -> np.ndarray:
    """Window logits -> probabilities: sigmoid per class (multi-label) or softmax, after dividing by the
    calibration ``temperature`` (one per class, or one; None: uncalibrated)."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if temperature is not None:
        z = z / torch.as_tensor(temperature, dtype=torch.float32)
    return (torch.sigmoid(z) if multilabel else torch.softmax(z, 1)).numpy()


def predict_many(models: Sequence[torch.nn.Module], windows: EvalWindows, multilabel: bool, device: torch.device,
                 dtype: torch.dtype | None, batch_size: int, normalizers: Sequence[Normalizer] | None = None,
                 loss_fn=None, targets: np.ndarray | None = None, num_workers: int = 0, pin_memory: bool = False,
                 aggregate: str = "mean", log_every_s: float | None = None, what: str = "inference",
                 temperatures: Sequence[Sequence[float] | None] | None = None
                 ) -> list[tuple[np.ndarray, float | None]]:
    """``predict`` for several models in one pass (see ``window_logits``), each with its own calibration
    temperature (``temperatures``: one entry per model, None = uncalibrated). -> one (probabilities,
    mean loss) per model."""
    logits, rows, losses = window_logits(models, windows, device, dtype, batch_size, normalizers, loss_fn, targets,
                                         num_workers, pin_memory, log_every_s, what)
    temperatures = temperatures or [None] * len(models)
    return [(pool_rows(to_probabilities(z, multilabel, t), rows, len(windows.index), aggregate).astype(np.float32),
             loss) for z, t, loss in zip(logits, temperatures, losses)]


def predict(model: torch.nn.Module, windows: EvalWindows, multilabel: bool, device: torch.device,
            dtype: torch.dtype | None, batch_size: int, loss_fn=None, targets: np.ndarray | None = None,
            num_workers: int = 0, aggregate: str = "mean", pin_memory: bool = False,
            log_every_s: float | None = None, what: str = "inference",
            temperature: Sequence[float] | None = None) -> tuple[np.ndarray, float | None]:
    """Probabilities (records, C), each record's windows combined by ``aggregate`` (``mean``, or
    ``max`` as the PTB-XL benchmark does), and the mean window loss when ``loss_fn`` and
    per-record ``targets`` are given. ``num_workers``/``pin_memory``: the DataLoader's, as in
    training; ``log_every_s``: a progress line at most this often (see ``ProgressLog``);
    ``temperature``: the calibration (``ecgnet.calibration``), None for raw probabilities."""
    return predict_many([model], windows, multilabel, device, dtype, batch_size, loss_fn=loss_fn, targets=targets,
                        num_workers=num_workers, pin_memory=pin_memory, aggregate=aggregate,
                        log_every_s=log_every_s, what=what, temperatures=[temperature])[0]


def to_units(records: RecordSet, index: np.ndarray, probs: np.ndarray, aggregate: str = "mean"):
    """Per-record predictions of ``records`` at ``index`` -> one prediction per evaluation unit
    (``RecordSet.units``: e.g. the recording, or patient, that HDF5 windows were cut from).

    -> (unit ids, labels (U, C) 0/1 — the union of the members' labels, probs (U, C), patient group per unit).
    Without units each record is its own unit and everything passes through unchanged.
    """
    y = records.multi_hot(index)
    groups = np.asarray(records.groups, dtype=object)[index]
    if records.units is None:
        return [records.ids[i] for i in index], y, probs, groups
    unit_ids, unit_of = np.unique(np.asarray(records.units, dtype=object)[index], return_inverse=True)
    n = len(unit_ids)
    first = np.full(n, len(index))
    np.minimum.at(first, unit_of, np.arange(len(index)))
    order = np.argsort(first, kind="stable")          # units in the order they first appear
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    unit_of = rank[unit_of]
    y_units = pool_rows(y, unit_of, n, "max").astype(np.float32)
    probs_units = pool_rows(probs, unit_of, n, aggregate).astype(np.float32)
    return unit_ids[order].tolist(), y_units, probs_units, groups[first[order]]
