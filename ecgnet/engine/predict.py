"""Inference: sliding windows in, one probability vector per record out."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.utils.data

from ..data.base import RecordSet
from ..data.dataset import EvalWindows, pad_collate, unpack_batch
from ..registry import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: '{name}' but no CUDA device is visible; use auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: '{name}' is not a device; use auto, cpu or cuda[:N]") from None


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA (fp16 where bf16 is unsupported), full precision on CPU."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 or off on the CPU")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def forward(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Logits; ``lengths`` (real samples per row of a zero-padded batch) goes to the model only when
    some row is padded, so models without masking still serve fixed-length batches."""
    return model(x) if lengths is None else model(x, lengths.to(x.device, non_blocking=True))


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


@torch.no_grad()
def predict(model: torch.nn.Module, windows: EvalWindows, multilabel: bool, device: torch.device,
            dtype: torch.dtype | None, batch_size: int, loss_fn=None, targets: np.ndarray | None = None,
            num_workers: int = 0, aggregate: str = "mean") -> tuple[np.ndarray, float | None]:
    """Probabilities (records, C), each record's windows combined by ``aggregate`` (``mean``, or
    ``max`` as the PTB-XL benchmark does), and the mean window loss when ``loss_fn`` and
    per-record ``targets`` are given."""
    model.eval()
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=None if windows.pad else pad_collate)
    chunks, positions = [], []
    loss_sum, seen = 0.0, 0
    for batch in loader:
        x, pos, lengths = unpack_batch(batch)
        with autocast(device, dtype):
            logits = forward(model, x.to(device, non_blocking=True), lengths)
        logits = logits.float()
        if loss_fn is not None:
            y = torch.as_tensor(targets[pos.numpy()], device=device)
            loss_sum += loss_fn(logits, y).item() * len(pos)
            seen += len(pos)
        chunks.append((torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).cpu().numpy())
        positions.append(pos.numpy())
    probs = pool_rows(np.concatenate(chunks), np.concatenate(positions), len(windows.index), aggregate)
    return probs.astype(np.float32), (loss_sum / seen if seen else None)


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
