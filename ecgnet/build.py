"""Resolve a config's component sections against the registries and build components.

``resolve_config`` runs before any data is read, so an unknown name, unknown key or
wrong type fails in a second; the resolved dict (every default filled in) is what a
run saves to ``config.yaml`` and into its checkpoints.
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch

from . import data, losses, models, optim  # noqa: F401  (registration)
from .config import check_schema
from .models.cosine import CosineClassifier
from .models.fusion import FeatureFusion
from .registry import (AUGMENTATIONS, DATASETS, LOSSES, MODELS, OPTIMIZERS, SAMPLERS, SCHEDULERS,
                       ConfigError, check_type)

# section -> (registry, arguments derived from the data or the trainer, default section)
COMPONENTS = {
    "data": (DATASETS, (), None),
    "model": (MODELS, ("in_leads", "num_classes"), None),
    "loss": (LOSSES, ("multilabel", "class_counts"), None),
    "optimizer": (OPTIMIZERS, ("params",), {"type": "radam"}),
    "schedule": (SCHEDULERS, ("optimizer", "steps_per_epoch", "epochs"), {"type": "warmup_cooldown"}),
    "sampler": (SAMPLERS, ("labels", "seed"), {"type": "random"}),
}


# settings of the ``model`` section that belong to the trainer, not to the model's constructor
MODEL_TRAINING_KEYS = {"init_from": Optional[str], "freeze": list[str]}


def resolve_config(cfg: dict) -> dict:
    cfg = check_schema(copy.deepcopy(cfg))
    model_extras = {}
    if isinstance(cfg.get("model"), dict):
        for key, annotation in MODEL_TRAINING_KEYS.items():
            model_extras[key] = check_type(cfg["model"].pop(key, None if key == "init_from" else []),
                                           annotation, f"model.{key}")
    for section, (registry, derived, default) in COMPONENTS.items():
        if section not in cfg:
            if default is None:
                raise ConfigError(f"{section}: missing section; name a {registry.kind} type "
                                  f"(one of: {', '.join(registry.names())})")
            cfg[section] = dict(default)
        elif default is not None and isinstance(cfg[section], dict) and "type" not in cfg[section]:
            cfg[section] = {**default, **cfg[section]}   # e.g. ``optimizer: {lr: 1e-4}`` keeps radam
        cfg[section] = registry.resolve(cfg[section], section, derived)
    cfg["model"].update(model_extras)
    cfg["augment"] = [AUGMENTATIONS.resolve(a, f"augment[{i}]", ("fs",)) for i, a in enumerate(cfg["augment"])]
    if cfg["split"]["type"] == "random" and cfg["split"]["val_fraction"] + cfg["split"]["test_fraction"] >= 1:
        raise ConfigError("split: val_fraction + test_fraction must be below 1")
    sched = cfg["schedule"]
    if sched["type"] == "warmup_cooldown" and sched["warmup_epochs"] + sched["cooldown_epochs"] > cfg["train"]["epochs"]:
        raise ConfigError(f"schedule: warmup_epochs + cooldown_epochs ({sched['warmup_epochs']} + "
                          f"{sched['cooldown_epochs']}) exceed train.epochs ({cfg['train']['epochs']}); "
                          "shorten them, e.g. --opts schedule.cooldown_epochs=1")
    if cfg["classifier"]["margin"] and cfg["classifier"]["type"] != "cosine":
        raise ConfigError(f"classifier.margin: {cfg['classifier']['margin']} is CosFace's margin on the cosine "
                          "classifier's scores; set classifier.type: cosine or the margin to 0")
    # the optimizer and schedule factories check their settings (lr > 0, ...): build them on a dummy
    # parameter now, so a bad value is named before any data is read
    probe = build("optimizer", cfg, params=[torch.nn.Parameter(torch.zeros(1))])
    build("schedule", cfg, optimizer=probe, steps_per_epoch=1000, epochs=cfg["train"]["epochs"])
    return cfg


def build(section: str, cfg: dict, **derived):
    registry = COMPONENTS[section][0]
    settings = cfg[section]
    if section == "model":
        settings = {k: v for k, v in settings.items() if k not in MODEL_TRAINING_KEYS}
    return registry.build(settings, section, **derived)


def build_model(cfg: dict, in_leads: int, num_classes: int, feature_names: Optional[Sequence[str]] = None):
    """The ``model`` section's network; with per-record features (``RecordSet.feature_names``) its
    output becomes a ``fusion.embed_dim`` embedding, joined with the features in ``FeatureFusion``;
    with ``classifier.type: cosine`` a ``classifier.embed_dim`` embedding under ``CosineClassifier``."""
    head = cfg.get("classifier") or {"type": "linear"}   # checkpoints from before the section default to it
    if head["type"] == "cosine" and feature_names:
        raise ConfigError("classifier.type: cosine does not take per-record features (the data gives "
                          f"{', '.join(feature_names)}); use the linear classifier or turn the features off")
    if head["type"] != "cosine" and not feature_names:
        return build("model", cfg, in_leads=in_leads, num_classes=num_classes)
    # under a head, the backbone's last layer gives an embedding instead of the classes
    embed_dim = head["embed_dim"] if head["type"] == "cosine" else cfg["fusion"]["embed_dim"]
    backbone = build("model", cfg, in_leads=in_leads, num_classes=embed_dim) if embed_dim else None
    if head["type"] == "cosine":
        return CosineClassifier(backbone, embed_dim, num_classes, head["scale"])
    fusion = cfg["fusion"]
    return FeatureFusion(backbone, len(feature_names), embed_dim, num_classes, fusion["hidden"], fusion["dropout"])


def build_loss(cfg: dict, multilabel: bool, class_counts: Sequence[int]):
    """The ``loss`` section's criterion; under a cosine classifier with ``classifier.margin`` it takes
    CosFace's margin (``losses.CosineMargin``)."""
    loss = build("loss", cfg, multilabel=multilabel, class_counts=class_counts)
    head = cfg.get("classifier") or {"type": "linear"}
    if head.get("margin"):
        if multilabel:
            raise ConfigError(f"classifier.margin: {head['margin']} needs a single-label task (the margin is taken "
                              "off the one true class's cosine); set it to 0")
        loss = losses.CosineMargin(loss, head["scale"], head["margin"])
    return loss


def build_augmentations(cfg: dict, fs: float) -> list:
    out = []
    for i, aug in enumerate(cfg["augment"]):
        takes_fs = "fs" in AUGMENTATIONS.settings(aug["type"])
        out.append(AUGMENTATIONS.build(aug, f"augment[{i}]", **({"fs": fs} if takes_fs else {})))
    return out
