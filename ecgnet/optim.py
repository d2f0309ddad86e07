"""Optimizers (``optimizer.type``) and per-iteration learning-rate schedules (``schedule.type``)."""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch

from .registry import OPTIMIZERS, SCHEDULERS, ConfigError


def _check(lr: float, weight_decay: float, betas: Sequence[float] = (0.9, 0.999), momentum: float = 0.0) -> tuple:
    """One-line errors for values torch would reject with a traceback (or train with silently)."""
    if not lr > 0:
        raise ConfigError(f"optimizer.lr: must be > 0, got {lr}")
    if weight_decay < 0:
        raise ConfigError(f"optimizer.weight_decay: must be >= 0, got {weight_decay}")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"optimizer.betas: expected two numbers in [0, 1), e.g. [0.9, 0.999], got {list(betas)}")
    if momentum < 0:
        raise ConfigError(f"optimizer.momentum: must be >= 0, got {momentum}")
    return tuple(betas)


@OPTIMIZERS.register("radam")
def radam(params, lr: float = 1e-3, weight_decay: float = 0.0, betas: Sequence[float] = (0.9, 0.999)):
    return torch.optim.RAdam(params, lr=lr, weight_decay=weight_decay, betas=_check(lr, weight_decay, betas))


@OPTIMIZERS.register("adam")
def adam(params, lr: float = 1e-3, weight_decay: float = 0.0, betas: Sequence[float] = (0.9, 0.999)):
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=_check(lr, weight_decay, betas))


@OPTIMIZERS.register("adamw")
def adamw(params, lr: float = 1e-3, weight_decay: float = 0.01, betas: Sequence[float] = (0.9, 0.999)):
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=_check(lr, weight_decay, betas))


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = True):
    _check(lr, weight_decay, momentum=momentum)
    if nesterov and momentum == 0:
        raise ConfigError("optimizer.nesterov: needs momentum > 0; set optimizer.nesterov=false or a momentum")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def warmup_hold_cooldown_factor(step: int, total: int, warmup: int, cooldown: int, shape: str,
                                final_ratio: float, step_gamma: float, step_every: int) -> float:
    """LR multiplier at iteration ``step`` of ``total``: linear 0 -> 1 over ``warmup`` steps,
    1 until the last ``cooldown`` steps, then down to ``final_ratio`` (cosine) or by
    ``step_gamma`` every ``step_every`` steps (step)."""
    if step < warmup:
        return (step + 1) / warmup
    start = total - cooldown
    if cooldown <= 0 or step < start:
        return 1.0
    done = min(step - start, cooldown)
    if shape == "cosine":
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * done / cooldown))
    return max(step_gamma ** (done // step_every + 1), final_ratio)


@SCHEDULERS.register("warmup_cooldown")
def warmup_cooldown(optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0,
                    cooldown_epochs: float = 5.0, cooldown: Literal["cosine", "step"] = "cosine",
                    final_lr_ratio: float = 0.01, step_gamma: float = 0.1, step_every_epochs: float = 2.0):
    """Linear warmup -> hold -> cooldown, stepped every iteration. Epoch counts may be
    fractional; the cooldown occupies the last ``cooldown_epochs`` of ``train.epochs``."""
    for key, value in (("warmup_epochs", warmup_epochs), ("cooldown_epochs", cooldown_epochs)):
        if value < 0:
            raise ConfigError(f"schedule.{key}: must be >= 0, got {value}")
    if not 0 <= final_lr_ratio <= 1:
        raise ConfigError(f"schedule.final_lr_ratio: must be between 0 and 1, got {final_lr_ratio}")
    if not 0 < step_gamma <= 1:
        raise ConfigError(f"schedule.step_gamma: must be in (0, 1], got {step_gamma}")
    if not step_every_epochs > 0:
        raise ConfigError(f"schedule.step_every_epochs: must be > 0, got {step_every_epochs}")
    total = steps_per_epoch * epochs
    warmup = round(warmup_epochs * steps_per_epoch)
    cool = round(cooldown_epochs * steps_per_epoch)
    if warmup + cool > total:
        raise ConfigError(f"schedule: warmup_epochs + cooldown_epochs ({warmup_epochs} + {cooldown_epochs}) "
                          f"exceed train.epochs ({epochs})")
    every = max(1, round(step_every_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_hold_cooldown_factor(
        s, total, warmup, cool, cooldown, final_lr_ratio, step_gamma, every))


@SCHEDULERS.register("constant")
def constant(optimizer, steps_per_epoch: int, epochs: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
