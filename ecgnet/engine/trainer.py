"""One model's training: the epoch loop, validation, early stopping, checkpoints,
and the per-class thresholds tuned on validation at the end.

Under torchrun (``engine.distributed``) every rank runs this Trainer on its share of the data:
``train.batch_size`` is the global batch (batch_size / N per rank, the same steps per epoch and
schedule as one process), the model is wrapped in DistributedDataParallel, and BatchNorm keeps
per-rank batch statistics (``train.sync_bn``: synchronised on CUDA). Validation is split over the
ranks by record and gathered, so every rank scores the same predictions and takes rank 0's metrics:
early stopping and the best epoch agree everywhere. Rank 0 alone writes checkpoints, history.csv
and TensorBoard; checkpoints hold the plain model's state dict (no ``module.`` prefix), whether
trained with DDP, ``train.compile`` or neither.

``train.compile`` compiles the training step's model; validation runs the plain model, whose
variable-length batches would otherwise be recompiled shape after shape.
"""
from __future__ import annotations

import csv
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.utils.data
from tqdm import tqdm

from ..build import build, build_augmentations, build_loss, build_model
from ..calibration import fit_temperature
from ..data.base import ECGAdapter, RecordSet
from ..data.dataset import BucketBatchSampler, EvalWindows, TrainWindows, collate, record_length
from ..data.samplers import ShardedSampler
from ..data.transforms import Normalizer
from ..metrics import classification_metrics, summary
from ..models import accepts_lengths
from ..registry import ConfigError, hint
from ..thresholds import decide, tune_thresholds
from . import distributed
from .checkpoint import FORMAT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .predict import ProgressLog, amp_dtype, autocast, describe_amp, forward, predict, to_units, window_logits
from .transfer import freeze, init_from_checkpoint, keep_frozen_norms_in_eval

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Everything loaded once per run and shared by its folds."""
    records: RecordSet
    signals: list            # preprocessed float32 (leads, samples) per record
    fs: float                # rate after preprocessing
    window: int              # samples the network sees
    stride: int              # evaluation window stride
    adapter: ECGAdapter      # for dataset-specific metrics
    full_length: bool = False  # whole records in length-bucketed, padded batches
    # lines already logged in this run (e.g. what train.amp resolved to), so each folds' Trainer says them once
    announced: set = field(default_factory=set, repr=False, compare=False)

    @property
    def targets(self) -> np.ndarray:
        """Loss targets: (N, C) float multi-hot, or (N,) int64 class index."""
        return self.records.labels


# Enough rows for every class of the single-label datasets' own metrics (CinC 2017's 4, AAMI's 5),
# few enough for the 18,869 patients of PTB-XL identification with background patients.
MONITOR_CHECK_CLASSES = 256


def monitor_mode(cfg_train: dict) -> str:
    if cfg_train["monitor_mode"] != "auto":
        return cfg_train["monitor_mode"]
    return "min" if cfg_train["monitor"].endswith("loss") else "max"


def check_monitor(monitor: str, records: RecordSet, adapter: ECGAdapter) -> None:
    """Refuse a ``train.monitor`` that validation never reports, before any training: the names are
    found by scoring a made-up prediction in which every class occurs (single-label: the first
    ``MONITOR_CHECK_CLASSES``; the names do not depend on how many), with the dataset's own metrics."""
    c = records.num_classes
    y = np.eye(c if records.multilabel else min(c, MONITOR_CHECK_CLASSES), c, dtype=np.float32)
    if records.multilabel:
        y = np.vstack([y, np.zeros((1, c), np.float32)])      # every class also has a negative
    metrics = classification_metrics(y, y, y, records.class_names, records.multilabel, confusion=False)
    metrics.update(adapter.dataset_metrics(y, y, y))
    names = ["val/loss", *(f"val/{k}" for k in summary(metrics))]
    if monitor not in names:
        raise ConfigError(f"train.monitor: '{monitor}' is not a validation metric of this task"
                          f"{hint(monitor, names)}")


def _epoch_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class Trainer:
    def __init__(self, cfg: dict, data: PreparedData, split: dict[str, np.ndarray], out_dir: Path, fold: int = 0,
                 on_epoch_end: Callable[[], None] | None = None):
        self.cfg, self.data, self.split, self.out_dir, self.fold = cfg, data, split, out_dir, fold
        self.on_epoch_end = on_epoch_end      # called on rank 0 once an epoch's checkpoint is written
        out_dir.mkdir(parents=True, exist_ok=True)
        tcfg = cfg["train"]
        self.seed = cfg["seed"] + fold
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        local_batch = distributed.local_batch_size(tcfg["batch_size"])
        self.device = distributed.process_device(tcfg["device"])
        self.dtype = amp_dtype(tcfg["amp"], self.device)
        self._announce(describe_amp(tcfg["amp"], self.device, self.dtype))
        # deterministic kernels cost speed on CUDA; on CPU the default kernels are already repeatable
        if tcfg["deterministic"] and self.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # cuBLAS's repeatable mode (read at its init)
        torch.use_deterministic_algorithms(tcfg["deterministic"], warn_only=True)
        # the autotuner runs once per input shape: worth it for fixed windows, not for a new length every batch
        torch.backends.cudnn.benchmark = (self.device.type == "cuda" and not tcfg["deterministic"]
                                          and not data.full_length)
        records = data.records
        train_idx = split["train"]
        if len(split["val"]) < self.world_size:
            raise ConfigError(f"split.val_fraction: fold {fold} has {len(split['val'])} validation record(s) for "
                              f"{self.world_size} processes, which validate a share each; raise it or use fewer "
                              "processes")

        self.normalizer = Normalizer(cfg["preprocess"]["normalize"]).fit(data.signals[i] for i in train_idx)
        torch.manual_seed(self.seed)   # model initialisation depends on the seed only
        self.model = build_model(cfg, len(records.leads), records.num_classes, records.feature_names)
        if data.full_length and not accepts_lengths(self.model):
            raise ConfigError(f"input.full_length: model '{cfg['model']['type']}' has no forward(x, lengths) to "
                              "pool over real samples only, so padding would change its output; give it one "
                              "(see ecgnet/models/layers.py) or use input.window_s")
        resuming = (out_dir / "last.pt").is_file()
        if cfg["model"]["init_from"] and not resuming:
            init_from_checkpoint(self.model, cfg["model"]["init_from"])
        if cfg["model"]["freeze"]:
            freeze(self.model, cfg["model"]["freeze"])
        self.model.to(self.device)
        if tcfg["sync_bn"] and self.world_size > 1:
            self.model = self._sync_batchnorm(self.model)
        self.loss_fn = build_loss(cfg, records.multilabel, records.class_counts(train_idx)).to(self.device)
        self.sampler = build("sampler", cfg, labels=records.multi_hot(train_idx), seed=self.seed)
        self.train_set = TrainWindows(data.signals, data.targets, train_idx, data.window, self.normalizer,
                                      build_augmentations(cfg, data.fs),
                                      getattr(self.sampler, "noise_std", 0.0), self.seed, pad=not data.full_length,
                                      features=records.features)
        workers = distributed.resolve_num_workers(tcfg["num_workers"], self.device)
        self.loader_args = {"num_workers": workers, "pin_memory": self.device.type == "cuda"}   # validation's too
        loader_args = {**self.loader_args, "persistent_workers": workers > 0}
        # every rank draws the same epoch from (seed, epoch) and takes its share of it
        if data.full_length:
            lengths = np.array([record_length(data.signals, i) for i in train_idx])
            batches = BucketBatchSampler(self.sampler, lengths, tcfg["batch_size"], rank=self.rank,
                                         world_size=self.world_size)
            self.train_loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=batches,
                                                            collate_fn=collate, **loader_args)
        else:
            shard = ShardedSampler(self.sampler, self.rank, self.world_size)
            # a last batch of one sample cannot train BatchNorm ("Expected more than 1 value per channel"):
            # drop it, and only it, so every other training set keeps its batches
            self.train_loader = torch.utils.data.DataLoader(self.train_set, batch_size=local_batch, sampler=shard,
                                                            drop_last=len(shard) % local_batch == 1,
                                                            collate_fn=collate, **loader_args)
        # each rank validates every world_size-th record; the predictions are gathered (see validate)
        self.val_share = np.arange(self.rank, len(split["val"]), self.world_size)
        self.val_windows = EvalWindows(data.signals, split["val"][self.val_share], data.window, data.stride,
                                       self.normalizer, pad=not data.full_length, features=records.features)
        steps = len(self.train_loader)
        self.optimizer = build("optimizer", cfg, params=[p for p in self.model.parameters() if p.requires_grad])
        self.scheduler = build("schedule", cfg, optimizer=self.optimizer, steps_per_epoch=steps, epochs=tcfg["epochs"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.mode = monitor_mode(tcfg)
        self.epoch, self.step, self.bad_epochs, self.stopped = 0, 0, 0, False
        self.best = {"value": None, "epoch": None}
        self.history: list[dict] = []
        self.thresholds = None
        self.temperature = None            # fitted on validation at the end (``calibration``)
        if resuming:
            self._restore(load_checkpoint(out_dir / "last.pt"))
        # what the training step runs: the model, in DDP under torchrun, compiled with train.compile;
        # self.model stays the plain module (checkpoints, validation)
        self.train_model = self.model
        if self.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if tcfg["compile"]:
            # dynamic shapes from the start: one compile also serves the epoch's short last batch (static
            # shapes compile a second time for it, for the same step time)
            self.train_model = torch.compile(self.train_model, dynamic=True)
            if data.full_length:
                self._announce("train.compile with input.full_length: the masked layers recompile for new batch "
                               "lengths until torch's recompile limit, then run uncompiled; expect little speed-up",
                               logging.WARNING)

    # ---- the loop ----
    def train_one_epoch(self) -> float:
        self.train_model.train()
        keep_frozen_norms_in_eval(self.model)
        self.sampler.set_epoch(self.epoch)
        self.train_set.set_epoch(self.epoch)
        # dropout draws do not depend on history; under DDP they differ between ranks, as between rows
        torch.manual_seed(_epoch_seed(self.seed, self.epoch, *([self.rank] if self.world_size > 1 else [])))
        loss_sum, seen = torch.zeros((), device=self.device), 0
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.cfg['train']['epochs']}",
                   leave=False, disable=not self._progress())
        # without a terminal (no tqdm): a line every train.log_every_s with step, samples/s and ETA
        watch = ProgressLog(f"fold {self.fold} epoch {self.epoch + 1}", len(self.train_loader), self._log_every_s())
        for i, batch in enumerate(bar, 1):
            x, y, lengths, features = batch
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast(self.device, self.dtype):
                loss = self.loss_fn(forward(self.train_model, x, lengths, features), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg["train"]["clip_grad_norm"]:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["train"]["clip_grad_norm"])
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()                     # per iteration: warmup -> hold -> cooldown
            self.step += 1
            loss_sum += loss.detach() * len(y)        # no .item() per step: it would sync a GPU
            seen += len(y)
            watch.step(i, len(y))                     # counts and the clock only: no sync
        # every rank's mean of its local batch losses weighs its rows alike: the sums give the global mean
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), device=self.device)]))
        return (totals[0] / totals[1].clamp(min=1)).item()

    def validate(self, thresholds=None) -> tuple[dict, np.ndarray, np.ndarray]:
        """-> (val/... metrics, probabilities (units, C), labels (units, C)); under DDP the same on every
        rank: each predicts its share of the records, and all of them score the gathered predictions."""
        records = self.data.records
        distributed.broadcast_buffers(self.model)          # evaluate the model rank 0 saves
        probs, loss = predict(self.model, self.val_windows, records.multilabel, self.device, self.dtype,
                              self.cfg["train"]["eval_batch_size"], self.loss_fn,
                              self.data.targets[self.split["val"][self.val_share]],
                              aggregate=self.cfg["eval"]["aggregate"], **self.loader_args,
                              log_every_s=self._log_every_s(), what=f"fold {self.fold} validation",
                              temperature=self.temperature)
        if self.world_size > 1:
            probs, loss = self._gather(probs, loss)
        # scored per evaluation unit, as evaluate does, so thresholds and model selection see the same thing
        _, y, probs, _ = to_units(records, self.split["val"], probs, self.cfg["eval"]["aggregate"])
        return self._score(y, probs, loss, thresholds), probs, y

    def _score(self, y: np.ndarray, probs: np.ndarray, loss: float | None, thresholds=None) -> dict:
        """val/... metrics of validation predictions (per unit) under ``thresholds`` (None: 0.5 / argmax)."""
        records = self.data.records
        decisions = decide(probs, thresholds, records.multilabel)
        metrics = classification_metrics(y, probs, decisions, records.class_names, records.multilabel,
                                         confusion=False)    # not logged; evaluate writes it
        metrics.update(self.data.adapter.dataset_metrics(y, probs, decisions))
        val = {"val/loss": loss, **{f"val/{k}": v for k, v in summary(metrics).items()}}
        # rank 0's numbers everywhere: equal inputs give equal metrics already, but a last-bit difference
        # (another CPU's numpy) must not split early stopping or the best epoch, or the ranks would hang
        return distributed.broadcast_object(val)

    def _gather(self, probs: np.ndarray, loss: float | None) -> tuple[np.ndarray, float | None]:
        """Every rank's share of the validation predictions -> all of them, in record order, and the
        mean window loss over all windows."""
        shares = distributed.all_gather_object((self.val_share, probs, loss, len(self.val_windows)))
        out = np.zeros((len(self.split["val"]), probs.shape[1]), np.float32)
        for share, part, _, _ in shares:
            out[share] = part
        windows = sum(n for _, _, _, n in shares)
        total = sum(part_loss * n for _, _, part_loss, n in shares if part_loss is not None)
        return out, (total / windows if loss is not None and windows else None)

    def fit(self) -> dict:
        tcfg = self.cfg["train"]
        writer = self._writer()
        monitor = tcfg["monitor"]
        while self.epoch < tcfg["epochs"] and not self.stopped:
            start = time.time()
            train_loss = self.train_one_epoch()
            val, _, _ = self.validate()
            row = {"epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                   "train/loss": train_loss, **val, "time_s": round(time.time() - start, 2)}
            self.history.append(row)
            improved = self._improved(val.get(monitor))     # absent: undefined in this epoch's validation
            if improved:
                self.best = {"value": val.get(monitor), "epoch": self.epoch + 1}
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
            patience = tcfg["early_stop_patience"]
            self.stopped = patience is not None and self.bad_epochs >= patience
            self.epoch += 1
            if self.rank == 0:
                if improved:
                    save_checkpoint(self.state_dict(), self.out_dir / "best.pt")
                save_checkpoint(self.state_dict(), self.out_dir / "last.pt")
                self._log_epoch(row, writer, improved)
                if self.on_epoch_end:
                    self.on_epoch_end()
        if writer:
            writer.close()
        # a collective: the other ranks also wait here until rank 0 has written best.pt for finalize
        distributed.check_replicas(self.model, f"fold {self.fold}")
        return self.finalize()

    def finalize(self) -> dict:
        """Reload the best weights, tune thresholds on validation, store them in best.pt."""
        best = load_checkpoint(self.out_dir / "best.pt")
        self.model.load_state_dict(best["model"])
        records = self.data.records
        if self.cfg["calibration"] == "temperature":
            # before the thresholds, which are tuned on the calibrated probabilities
            self.temperature = self._fit_temperature()
        untuned, probs, y = self.validate()
        tcfg = self.cfg["thresholds"]
        wants_tuning = records.multilabel or tcfg["single_label"] == "tuned"
        if wants_tuning and tcfg["tune"]:
            self.thresholds = tune_thresholds(y, probs, records.class_names, tcfg["default"])
        elif records.multilabel:
            self.thresholds = [tcfg["default"]] * records.num_classes
        val = self._score(y, probs, untuned["val/loss"], self.thresholds)   # the same predictions, decided anew
        if self.rank == 0:
            best.update(thresholds=self.thresholds, temperature=self.temperature, val_metrics=val, finished=True)
            save_checkpoint(best, self.out_dir / "best.pt")
            last = self.state_dict()
            last["finished"] = True
            save_checkpoint(last, self.out_dir / "last.pt")
        if self.temperature is not None:
            log.info("fold %d: calibration temperature(s) fitted on validation: %s", self.fold,
                     ", ".join(f"{t:.3g}" for t in self.temperature))
        log.info("fold %d: best %s = %s at epoch %s; with tuned thresholds: %s", self.fold,
                 self.cfg["train"]["monitor"], _fmt(self.best["value"]), self.best["epoch"],
                 ", ".join(f"{k}={_fmt(v)}" for k, v in val.items()))
        return val

    def _fit_temperature(self) -> list[float]:
        """Temperature scaling on the validation split (``ecgnet.calibration``): every rank computes the
        window logits of its share, rank 0 fits on all of them and every rank takes its result."""
        records = self.data.records
        logits, rows, _ = window_logits([self.model], self.val_windows, self.device, self.dtype,
                                        self.cfg["train"]["eval_batch_size"], **self.loader_args,
                                        log_every_s=self._log_every_s(), what=f"fold {self.fold} calibration")
        logits, rows = logits[0], self.val_share[rows]          # rows: positions in split["val"]
        if self.world_size > 1:
            shares = distributed.all_gather_object((logits, rows))
            logits, rows = np.concatenate([z for z, _ in shares]), np.concatenate([r for _, r in shares])
        temperature = None
        if self.rank == 0:
            temperature = fit_temperature(logits, rows, records.multi_hot(self.split["val"]), records.multilabel,
                                          self.cfg["eval"]["aggregate"])
        return distributed.broadcast_object(temperature)

    # ---- state ----
    def state_dict(self) -> dict:
        records = self.data.records
        ids = np.asarray(records.ids)
        return {
            "format": FORMAT, "config": self.cfg, "fold": self.fold,
            "class_names": list(records.class_names), "multilabel": records.multilabel,
            "leads": list(records.leads), "fs": self.data.fs, "window": self.data.window, "stride": self.data.stride,
            "feature_names": records.feature_names,
            "full_length": self.data.full_length,
            "normalizer": self.normalizer.state_dict(),
            "split": {name: ids[idx].tolist() for name, idx in self.split.items()},
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "next_epoch": self.epoch, "step": self.step, "best": dict(self.best), "bad_epochs": self.bad_epochs,
            "stopped": self.stopped, "history": self.history, "rng": rng_state(),
            "thresholds": self.thresholds, "temperature": self.temperature, "finished": False,
        }

    def _restore(self, state: dict) -> None:
        saved_ids = state["split"]
        ids = np.asarray(self.data.records.ids)
        if any(ids[idx].tolist() != saved_ids[name] for name, idx in self.split.items()):
            raise ConfigError(f"{self.out_dir / 'last.pt'}: the data split differs from the one this run "
                              "started with; resume with the same data and config")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.bad_epochs = state["next_epoch"], state["step"], state["bad_epochs"]
        self.best, self.stopped, self.history = state["best"], state["stopped"], state["history"]
        set_rng_state(state["rng"])
        log.info("fold %d: resuming at epoch %d (step %d)", self.fold, self.epoch + 1, self.step)

    def _sync_batchnorm(self, model: nn.Module) -> nn.Module:
        """``train.sync_bn``: BatchNorm statistics over the global batch. SyncBatchNorm needs CUDA and has
        no masked variant, so it takes fixed windows (there the masked layers get no lengths and are
        plain BatchNorm1d); the state dict keys stay the same."""
        if self.device.type != "cuda":
            raise ConfigError("train.sync_bn: SyncBatchNorm needs CUDA devices; on the CPU each process "
                              "normalises with its own batch, set train.sync_bn: false")
        if self.data.full_length:
            raise ConfigError("train.sync_bn: SyncBatchNorm would normalise the padding of input.full_length "
                              "batches (it has no masked variant); set train.sync_bn: false")
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def _improved(self, value) -> bool:
        if value is None:
            return self.best["value"] is None and self.best["epoch"] is None
        if self.best["value"] is None:
            return True
        return value > self.best["value"] if self.mode == "max" else value < self.best["value"]

    # ---- logging ----
    def _progress(self) -> bool:
        setting = self.cfg["train"]["progress"]
        return self.rank == 0 and (setting == "on" or (setting == "auto" and sys.stderr.isatty()))

    def _log_every_s(self) -> float | None:
        """Seconds between progress lines when tqdm is off; None when tqdm shows progress (or null)."""
        return None if self._progress() else self.cfg["train"]["log_every_s"]

    def _announce(self, line: str, level: int = logging.INFO) -> None:
        """Log ``line`` once per run (the folds of a run share ``self.data``)."""
        if line not in self.data.announced:
            self.data.announced.add(line)
            log.log(level, "%s", line)

    def _writer(self):
        if not self.cfg["train"]["tensorboard"] or self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter   # imported lazily: slow, and optional per run
        return SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step or None)

    def _log_epoch(self, row: dict, writer, improved: bool) -> None:
        with (self.out_dir / "history.csv").open("w", newline="") as f:
            keys = list(dict.fromkeys(k for r in self.history for k in r))
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.history)
        if writer:
            for key, value in row.items():
                if key not in ("epoch", "step", "time_s") and value is not None:
                    writer.add_scalar(key, value, self.step)
            writer.flush()
        log.info("fold %d epoch %d: %s%s", self.fold, row["epoch"],
                 " ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("epoch", "step")),
                 " *" if improved else "")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
