"""Inference: sliding windows in, one probability vector per record out."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.utils.data

from ..data.dataset import EvalWindows, pad_collate
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


@torch.no_grad()
def predict(model: torch.nn.Module, windows: EvalWindows, multilabel: bool, device: torch.device,
            dtype: torch.dtype | None, batch_size: int, loss_fn=None, targets: np.ndarray | None = None,
            num_workers: int = 0) -> tuple[np.ndarray, float | None]:
    """Probabilities (records, C), averaged over each record's windows, and the mean
    window loss when ``loss_fn`` and per-record ``targets`` are given."""
    model.eval()
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=None if windows.pad else pad_collate)
    n_records = len(windows.index)
    prob_sum, counts = None, np.zeros(n_records)
    loss_sum, seen = 0.0, 0
    for x, pos in loader:
        with autocast(device, dtype):
            logits = model(x.to(device, non_blocking=True))
        logits = logits.float()
        if loss_fn is not None:
            y = torch.as_tensor(targets[pos.numpy()], device=device)
            loss_sum += loss_fn(logits, y).item() * len(pos)
            seen += len(pos)
        probs = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).cpu().numpy()
        if prob_sum is None:
            prob_sum = np.zeros((n_records, probs.shape[1]))
        np.add.at(prob_sum, pos.numpy(), probs)
        np.add.at(counts, pos.numpy(), 1)
    return (prob_sum / counts[:, None]).astype(np.float32), (loss_sum / seen if seen else None)
