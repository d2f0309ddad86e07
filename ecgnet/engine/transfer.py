"""Transfer learning: ``model.init_from`` (weights of matching layers from a checkpoint) and
``model.freeze`` (parameter-name patterns that stay fixed)."""
from __future__ import annotations

import logging
from fnmatch import fnmatch
from pathlib import Path
from typing import Sequence

import torch.nn as nn

from ..registry import ConfigError
from .checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def _checkpoint_path(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "best.pt", p / "fold0" / "best.pt"):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"model.init_from: {p} holds no best.pt (or fold0/best.pt); point it at a checkpoint")
    if not p.is_file():
        raise ConfigError(f"model.init_from: {p} not found; point it at a checkpoint or run directory")
    return p


def init_from_checkpoint(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Copy every tensor whose name and shape match; the rest (e.g. a head for another
    number of classes, a stem for other leads) keeps its fresh initialisation."""
    source = _checkpoint_path(path)
    weights = load_checkpoint(source)["model"]
    own = model.state_dict()
    loaded = [k for k, v in weights.items() if k in own and own[k].shape == v.shape]
    kept = [k for k in own if k not in loaded]
    if not loaded:
        raise ConfigError(f"model.init_from: no layer of {source} matches this model; is it the same model type?")
    own.update({k: weights[k] for k in loaded})
    model.load_state_dict(own)
    log.info("initialised %d tensors from %s; %d keep their fresh initialisation%s", len(loaded), source,
             len(kept), f" ({', '.join(kept[:6])}{' ...' if len(kept) > 6 else ''})" if kept else "")
    return {"loaded": loaded, "kept": kept}


def freeze(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Stop gradients for parameters whose names match any glob pattern (e.g. ``stem.*``)."""
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch(n, pattern) for n in names):
            raise ConfigError(f"model.freeze: '{pattern}' matches no parameter; names look like "
                              f"{', '.join(names[:3])} ... {names[-1]}")
    frozen = []
    for name, param in model.named_parameters():
        if any(fnmatch(name, p) for p in patterns):
            param.requires_grad_(False)
            frozen.append(name)
    log.info("froze %d of %d parameter tensors", len(frozen), len(names))
    return frozen


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Batch-norm layers whose parameters are all frozen also keep their running statistics,
    so a frozen feature extractor really stays fixed (call after ``model.train()``)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
