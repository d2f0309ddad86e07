"""Throughput and memory benchmarks, printed as one table of ratios (tools/benchmark.py).

Rows (``ROWS``; experiments/BENCHMARKS.md says what each measures and what is not like-for-like):

1. ``data``: items/s of ``TrainWindows`` over the memory-mapped preprocessed cache vs over records
   decoded from WFDB per item (the PTB-XL adapter's ``load``: wfdb.rdsamp, then the same preprocessing),
   page cache warm. Goal >= 100x.
2. ``overhead``: a training step fed by the DataLoader over ``TrainWindows`` vs the same step on one
   batch already in memory, in alternating blocks. Goal <= 5 % more time.
3. ``backbones``: training samples/s of each PTB-XL benchmark backbone in fp32, bf16 autocast and
   torch.compile (with the dtype ``train.amp: auto`` picks). Goal: auto's pick is the faster dtype.
4. ``torch_ecg``: ecgnet (cache + resnet1d_wang) vs torch_ecg (its PTBXL reader decoding WFDB per item
   + its ResNet of the same layout), each through its own data path, same records, batch, dtype and
   training step. Goal >= 2x. Needs the ``bench`` extra (``pip install -e .[bench]``).
5. ``hdf5``: peak RSS of a fresh process that iterates the lazy HDF5 adapter (``windowing: full``)
   over a file of S and of 10 S. Goal: flat (<= 1.1x).
6. ``kfold``: K fold models scored on one split in K passes vs one pass (``predict_many``).

The records are PTB-XL: ``ptbxl_root`` when given, else a small fixture in the PhysioNet layout
written with wfdb.wrsamp (simulated ECGs), so the benchmark runs from a fresh clone. Training rows
run on the CPU and, when there is one, on the CUDA device.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.utils.data
from torch import nn

from .build import build, resolve_config
from .data.dataset import EvalWindows, TrainWindows
from .data.transforms import Normalizer, preprocess
from .engine.distributed import resolve_num_workers
from .engine.predict import amp_dtype, autocast, describe_amp, predict, predict_many
from .engine.run import prepare_data
from .registry import ConfigError, DataError

ROWS = ("data", "overhead", "backbones", "torch_ecg", "hdf5", "kfold")
BACKBONES = ("resnet1d", "xresnet1d101", "inception1d", "resnet1d_wang")
BENCH_EXTRA = "not installed: pip install -e .[bench]"
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@dataclasses.dataclass
class Settings:
    batch_size: int = 128          # the PTB-XL benchmark's
    warmup: int = 3                # training steps before the clock starts
    steps: int = 20                # timed training steps per case
    blocks: int = 4                # row 2: alternating blocks of ``steps // blocks`` steps per side
    items: int = 20000             # row 1: cached items timed
    decode_items: int = 1000       # row 1: WFDB-decoded items timed
    fixture_records: int = 1000    # PTB-XL fixture size when no ptbxl_root
    hdf5_mb: float = 50.0          # row 5: S
    eval_records: int = 512        # row 6
    compile: bool = True           # row 3: torch.compile case
    compile_skip: str = "skipped (--no-compile)"
    workers: int | None = None     # loader workers; None: as train.num_workers auto

    @classmethod
    def quick(cls, **changes) -> "Settings":
        """A short run of every row (a few minutes on 2 CPU cores), compile skipped."""
        return dataclasses.replace(cls(warmup=1, steps=2, blocks=2, items=2000, decode_items=200,
                                       fixture_records=256, hdf5_mb=8.0, eval_records=32, compile=False,
                                       compile_skip="skipped (--quick)"), **changes)

    def loader_workers(self, device: torch.device) -> int:
        return resolve_num_workers("auto" if self.workers is None else self.workers, device)   # as train.num_workers


@dataclasses.dataclass
class Row:
    row: str                       # "1 data path"
    cases: list[tuple[str, str]]   # (case, measured value as text), side by side
    ratio: str
    goal: str
    met: bool | None               # None: not measured / no goal
    values: dict = dataclasses.field(default_factory=dict)   # numbers for --json
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "-" if self.met is None else "met" if self.met else "NOT MET"


# ---------------------------------------------------------------- machine and timing helpers

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "gpu": gpu}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dtype_name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


class Step:
    """One training step as the Trainer takes it: autocast forward, loss, backward (scaled for fp16),
    gradient clipping, optimizer step."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer, device: torch.device,
                 dtype: torch.dtype | None, clip: float | None):
        self.model, self.loss_fn, self.optimizer = model.to(device).train(), loss_fn.to(device), optimizer
        self.device, self.dtype, self.clip = device, dtype, clip
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.forward = model

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with autocast(self.device, self.dtype):
            loss = self.loss_fn(self.forward(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()


def _seconds(step: Step, batches: Callable[[], tuple], n: int) -> float:
    _sync(step.device)
    start = time.perf_counter()
    for _ in range(n):
        step(*batches())
    _sync(step.device)
    return time.perf_counter() - start


def samples_per_s(step: Step, batches: Callable[[], tuple], s: Settings) -> float:
    _seconds(step, batches, s.warmup)             # allocation, kernel choice (and compilation)
    return s.steps * s.batch_size / _seconds(step, batches, s.steps)


def _loader(dataset, s: Settings, device: torch.device, batches: int):
    """An endless-enough iterator of ``batches`` random batches (no epoch boundary inside a case)."""
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batches * s.batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=s.batch_size, sampler=sampler,
                                         num_workers=s.loader_workers(device), pin_memory=device.type == "cuda")
    return iter(loader)


def _loader_seconds(step: Step, dataset, s: Settings, n: int) -> float:
    """Seconds for ``n`` steps fed by a fresh DataLoader, after ``s.warmup`` steps bring it to its
    steady state (so no batch its workers queued earlier comes free)."""
    loader = _loader(dataset, s, step.device, s.warmup + n)
    _seconds(step, lambda: next(loader), s.warmup)
    return _seconds(step, lambda: next(loader), n)


def _prebuilt(dataset, s: Settings, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.utils.data.default_collate([dataset[i] for i in range(s.batch_size)])
    return x.to(device), y.to(device)


def _fmt(value: float, unit: str = "") -> str:
    text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:120]


# ---------------------------------------------------------------- PTB-XL records

# a few PTB-XL statements (scp_statements.csv columns the readers use), one per superdiagnostic class
STATEMENTS = {"NORM": ("NORM", "NORM"), "IMI": ("MI", "IMI"), "NDT": ("STTC", "STTC"), "LVH": ("HYP", "LVH"),
              "IRBBB": ("CD", "IRBBB")}


def write_ptbxl_fixture(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` simulated 10 s 12-lead records at 100 Hz in PTB-XL's PhysioNet layout (wfdb.wrsamp, format
    16, 1 uV per unit), one superdiagnostic statement each plus ``SR``, strat_fold 1-10 in turn."""
    import wfdb
    from .data.ecgsim import sample_patient, simulate_ecg
    root.mkdir(parents=True, exist_ok=True)
    statements = pd.DataFrame(
        [{"code": c, "description": c, "diagnostic": 1.0, "form": np.nan, "rhythm": np.nan, "diagnostic_class": cls,
          "diagnostic_subclass": sub} for c, (cls, sub) in STATEMENTS.items()]
        + [{"code": "SR", "description": "sinus rhythm", "diagnostic": np.nan, "form": np.nan, "rhythm": 1.0,
            "diagnostic_class": np.nan, "diagnostic_subclass": np.nan}]).set_index("code")
    statements.to_csv(root / "scp_statements.csv")
    rng, rows = np.random.default_rng(seed), []
    for ecg_id in range(1, n + 1):
        name = f"records100/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_lr"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        x = simulate_ecg(rng, sample_patient(rng), 100, 10.0)
        wfdb.wrsamp(Path(name).name, fs=100, units=["mV"] * 12, sig_name=LEADS, p_signal=x.T.astype(np.float64),
                    fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str((root / name).parent))
        code = list(STATEMENTS)[ecg_id % len(STATEMENTS)]
        rows.append({"ecg_id": ecg_id, "patient_id": float(ecg_id), "recording_date": "1990-01-01 09:00:00",
                     "scp_codes": repr({code: 100.0, "SR": 0.0}), "strat_fold": (ecg_id - 1) % 10 + 1,
                     "filename_lr": name, "filename_hr": name.replace("100", "500").replace("_lr", "_hr")})
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    return root


class DecodedSignals(Sequence):
    """Record i decoded from its WFDB files on every access (``adapter.load``: wfdb.rdsamp and the
    adapter's checks) and preprocessed as the cache's records were; ``ids``: the records (after QC)
    in the order of the cached signals."""

    def __init__(self, adapter, ids: list[str], cfg: dict):
        where = {rid: k for k, rid in enumerate(adapter.records().ids)}
        self.adapter, self.positions, self.cfg, self.fs = adapter, [where[r] for r in ids], cfg, adapter.records().fs

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> np.ndarray:
        return preprocess(self.adapter.load(self.positions[i]), self.fs, self.cfg)


class Context:
    """The PTB-XL config, records and train split, prepared on first use and shared by the rows."""

    def __init__(self, cfg: dict, backbones: dict, settings: Settings, workdir: Path, ptbxl_root: str | None):
        self.settings, self.workdir, self.backbones = settings, workdir, backbones
        if ptbxl_root is None:
            self.root = workdir / "ptbxl"
            self.source = f"PTB-XL fixture: {settings.fixture_records} simulated records written with wfdb.wrsamp"
            cache = str(workdir / "cache")
        else:
            self.root = Path(ptbxl_root).expanduser()
            if not (self.root / "ptbxl_database.csv").is_file():
                raise DataError(f"--ptbxl-root {ptbxl_root}: no ptbxl_database.csv there; point it at a PTB-XL "
                                "folder (ptbxl_database.csv, scp_statements.csv, records100/) or leave it out "
                                "to benchmark on a generated fixture")
            self.source = f"PTB-XL at {self.root}"
            cache = cfg.get("preprocess", {}).get("cache_dir", "~/.cache/ecgnet")
        if cfg.get("data", {}).get("type") != "ptbxl":
            raise ConfigError(f"--config: the benchmark needs a PTB-XL config (data.type: ptbxl), got "
                              f"{cfg.get('data', {}).get('type')!r}; e.g. "
                              "cfgs/ptbxl/resnet1d_wang_superdiagnostic.yaml")
        cfg = {**cfg, "data": {**cfg["data"], "root": str(self.root)},
               "preprocess": {**cfg.get("preprocess", {}), "cache_dir": cache}}
        self.cfg = resolve_config(cfg)
        self._data = None

    @property
    def data(self):
        if self._data is None:
            if not (self.root / "ptbxl_database.csv").exists() and self.root == self.workdir / "ptbxl":
                write_ptbxl_fixture(self.root, self.settings.fixture_records)
            self._data = prepare_data(self.cfg)
            records = self._data.records
            train = np.flatnonzero(np.isin(records.folds, self.cfg["split"]["train_folds"] or []))
            self.train = train if len(train) else np.arange(len(records.ids))
            self.train_ids = [records.ids[i] for i in self.train]
            self.normalizer = Normalizer(self.cfg["preprocess"]["normalize"]).fit(
                self._data.signals[i] for i in self.train)
            self.source += f", {len(records.ids)} records ({len(self.train)} in the train folds)"
        return self._data

    def train_windows(self, signals=None) -> TrainWindows:
        """Training windows of the train folds, over the cached signals or ``signals``."""
        data = self.data
        return TrainWindows(data.signals if signals is None else signals, data.targets, self.train, data.window,
                            self.normalizer)

    def step(self, device: torch.device, dtype, model_cfg: dict | None = None, model: nn.Module | None = None) -> Step:
        cfg, records = self.cfg, self.data.records
        torch.backends.cudnn.benchmark = device.type == "cuda" and not cfg["train"]["deterministic"]   # as the Trainer
        if model is None:
            torch.manual_seed(0)
            model = build("model", {**cfg, "model": model_cfg or cfg["model"]}, in_leads=len(records.leads),
                          num_classes=records.num_classes)
        loss_fn = build("loss", cfg, multilabel=records.multilabel, class_counts=records.class_counts(self.train))
        optimizer = build("optimizer", cfg, params=model.to(device).parameters())
        return Step(model, loss_fn, optimizer, device, dtype, cfg["train"]["clip_grad_norm"])


def _warm_page_cache(paths: list[Path]) -> None:
    for path in paths:
        for ext in (".hea", ".dat"):
            Path(f"{path}{ext}").read_bytes()


def _record_paths(ctx: Context, ids: list[str]) -> list[Path]:
    column = "filename_lr" if int(ctx.cfg["data"]["fs"]) == 100 else "filename_hr"
    df = pd.read_csv(ctx.root / "ptbxl_database.csv", index_col="ecg_id", usecols=["ecg_id", column])
    return [ctx.root / df.at[int(rid), column] for rid in ids]


# ---------------------------------------------------------------- rows

def _items_per_s(dataset, positions: np.ndarray) -> float:
    for p in positions:                            # warm: page cache, first-touch allocations
        dataset[int(p)]
    start = time.perf_counter()
    for p in positions:
        dataset[int(p)]
    return len(positions) / (time.perf_counter() - start)


def row_data(ctx: Context) -> Row:
    s, data = ctx.settings, ctx.data
    rng = np.random.default_rng(0)
    cached = ctx.train_windows()
    decoded = ctx.train_windows(DecodedSignals(data.adapter, data.records.ids, ctx.cfg["preprocess"]))
    _warm_page_cache(_record_paths(ctx, ctx.train_ids))
    fast = _items_per_s(cached, rng.integers(0, len(cached), s.items))
    slow = _items_per_s(decoded, rng.integers(0, len(decoded), s.decode_items))
    ratio = fast / slow
    return Row("1 data path (items/s, warm)", [("cached (memmap)", _fmt(fast)), ("WFDB decode/item", _fmt(slow))],
               f"{ratio:.0f}x", ">= 100x", ratio >= 100, {"cached_items_s": fast, "wfdb_items_s": slow, "ratio": ratio})


def row_overhead(ctx: Context, device: torch.device) -> Row:
    s = ctx.settings
    dtype = amp_dtype("auto", device)
    dataset = ctx.train_windows()
    per_block = max(1, s.steps // s.blocks)
    prebuilt = _prebuilt(dataset, s, device)
    step = ctx.step(device, dtype)
    _seconds(step, lambda: prebuilt, s.warmup)
    t_loader = t_prebuilt = 0.0
    for block in range(s.blocks):                   # A B B A ...: drift in machine load hits both sides
        for side in ("loader", "prebuilt") if block % 2 == 0 else ("prebuilt", "loader"):
            if side == "prebuilt":
                t_prebuilt += _seconds(step, lambda: prebuilt, per_block)
            else:
                t_loader += _loader_seconds(step, dataset, s, per_block)
    n = s.blocks * per_block
    overhead = (t_loader - t_prebuilt) / t_prebuilt
    workers = s.loader_workers(device)
    return Row(f"2 loader overhead/step [{device.type}]",
               [(f"DataLoader ({workers} workers)", f"{1000 * t_loader / n:.1f} ms"),
                ("prebuilt batch", f"{1000 * t_prebuilt / n:.1f} ms")],
               f"{100 * overhead:+.1f}%", "<= 5%", overhead <= 0.05,
               {"loader_step_s": t_loader / n, "prebuilt_step_s": t_prebuilt / n, "overhead": overhead,
                "workers": workers, "model": ctx.cfg["model"]["type"], "dtype": _dtype_name(dtype)})


def row_backbone(ctx: Context, device: torch.device, name: str) -> Row:
    s = ctx.settings
    auto = amp_dtype("auto", device)
    dataset = ctx.train_windows()
    batch = _prebuilt(dataset, s, device)
    results, values = {}, {}
    for case, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        results[case] = samples_per_s(ctx.step(device, dtype, ctx.backbones[name]), lambda: batch, s)
    compiled = f"compile+{_dtype_name(auto)}"
    if s.compile:
        step = ctx.step(device, auto, ctx.backbones[name])
        step.forward = torch.compile(step.model)
        try:
            start = time.perf_counter()
            _seconds(step, lambda: batch, 1)
            values["compile_s"] = time.perf_counter() - start
            results[compiled] = samples_per_s(step, lambda: batch, s)
        except Exception as err:       # an inductor/toolchain failure is a result, not a crash
            results[compiled] = f"failed ({_one_line(err)})"
    else:
        results[compiled] = s.compile_skip
    fp32 = results["fp32"]
    cases = [(case, _fmt(v) if isinstance(v, float) else v) for case, v in results.items()]
    ratios = " / ".join(f"{v / fp32:.2f}x" if isinstance(v, float) else "-" for case, v in results.items()
                        if case != "fp32")
    pick, other = ("bf16", "fp32") if auto is not None else ("fp32", "bf16")
    values.update(results)
    row = Row(f"3 train samples/s {name} [{device.type}]", cases, ratios, f"auto ({pick}) >= {other}",
              results[pick] >= results[other], values)
    if "compile_s" in values:
        row.notes.append(f"{name} [{device.type}]: first compiled step (compilation) took {values['compile_s']:.0f} s")
    return row


def torch_ecg_resnet(n_leads: int, classes: list[str]) -> nn.Module:
    """torch_ecg's ECG_CRNN with its ResNet backbone laid out as ecgnet's resnet1d_wang: stem conv k=7
    (stride 1, no pool) to 128 channels, 3 basic blocks of 128 channels (stride 1, 2, 2; 1x1 conv + BN
    shortcut where strided), no RNN, no attention, global max pool, MLP head 128 -> ReLU -> dropout 0.5
    -> classes. What it cannot express: one kernel for both convs of a block (resnet1d_wang: 5 then 3;
    k=4 breaks its padding), so k=3, which gives it about 23 % fewer multiply-accumulates per sample
    (k=5: 23 % more), i.e. the comparison leans towards torch_ecg; the stem conv has a bias; the head
    pools max only (resnet1d_wang: concat max+avg, with BatchNorm before each Linear)."""
    from torch_ecg.cfg import CFG
    from torch_ecg.models import ECG_CRNN
    act = {"activation": "relu", "kw_activation": {"inplace": True}, "kernel_initializer": "he_normal",
           "kw_initializer": {}, "bias": False}
    resnet = CFG(num_blocks=[1, 1, 1], num_filters=[128, 128, 128], filter_lengths=[3, 3, 3],
                 subsample_lengths=[1, 2, 2], groups=1, building_block="basic", dropouts=0,
                 increase_channels_method="conv", block=CFG(increase_channels_method="conv", subsample_mode="conv",
                                                           **act),
                 stem=CFG(num_filters=128, filter_lengths=7, conv_stride=1, pool_size=1, pool_stride=1), **act)
    config = CFG(cnn=CFG(name="resnet", resnet=resnet), rnn=CFG(name="none"), attn=CFG(name="none"),
                 global_pool="max", global_pool_size=1,
                 clf=CFG(out_channels=[128], activation="relu", bias=True, kernel_initializer="he_normal",
                         dropouts=0.5))
    return ECG_CRNN(classes=classes, n_leads=n_leads, config=config)


class TorchECGWindows(torch.utils.data.Dataset):
    """torch_ecg's way to serve PTB-XL (as its ``_FastDataReader``): per item the reader decodes the
    record from WFDB (``PTBXL.load_data``, float64 mV), a random crop of ``window`` samples is
    z-scored per lead by its ``PreprocManager``; labels were taken from ``load_ann`` once, up front."""

    def __init__(self, reader, recs: list[str], labels: np.ndarray, window: int):
        from torch_ecg._preprocessors import Normalize, PreprocManager
        self.reader, self.recs, self.labels, self.window = reader, recs, labels, window
        self.ppm = PreprocManager(Normalize(method="z-score", per_channel=True))

    def __len__(self) -> int:
        return len(self.recs)

    def __getitem__(self, i: int):
        x = self.reader.load_data(self.recs[i], data_format="channel_first", units="mV")
        start = np.random.randint(0, x.shape[1] - self.window + 1)
        x, _ = self.ppm(x[:, start:start + self.window], self.reader.fs)
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(self.labels[i])


def _import_torch_ecg():
    with warnings.catch_warnings(record=True):  # recorded and dropped: its import warns about torch.jit and pandas
        import torch_ecg
        from torch_ecg.databases import PTBXL
    return torch_ecg, PTBXL


def macs_per_sample(model: nn.Module, leads: int, window: int) -> float:
    """Multiply-accumulates of the convolutions and Linear layers for one (leads, window) input."""
    total = [0]

    def count(module, args, out):
        if isinstance(module, nn.Conv1d):
            total[0] += out.numel() * module.in_channels // module.groups * module.kernel_size[0]
        elif isinstance(module, nn.Linear):
            total[0] += out.numel() * module.in_features
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    was_training = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(1, leads, window))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return float(total[0])


def row_torch_ecg(ctx: Context, device: torch.device) -> Row:
    name = f"4 ecgnet vs torch_ecg samples/s [{device.type}]"
    try:
        torch_ecg, PTBXLReader = _import_torch_ecg()
    except ImportError as err:
        missing = getattr(err, "name", None)
        why = BENCH_EXTRA if missing in (None, "torch_ecg") else f"{BENCH_EXTRA} (import failed: {_one_line(err)})"
        return Row(name, [("torch_ecg", why)], "-", ">= 2x", None, {"torch_ecg": why})
    s, data, records = ctx.settings, ctx.data, ctx.data.records
    dtype = amp_dtype("auto", device)
    recs = [f"{int(rid):05d}" for rid in ctx.train_ids]
    classes = list(records.class_names)
    try:
        with warnings.catch_warnings(record=True):  # pandas 3 deprecations inside torch_ecg's reader
            reader = PTBXLReader(db_dir=str(ctx.root), fs=int(records.fs),
                                 working_dir=str(ctx.workdir / "torch_ecg"), verbose=0)
            labels = np.stack([np.isin(classes, [v.get("diagnostic_class") for v in reader.load_ann(
                r, with_interpretation=True).values()]).astype(np.float32) for r in recs])
        torch.manual_seed(0)
        their_model = torch_ecg_resnet(len(records.leads), classes)
    except Exception as err:      # another torch_ecg version may have moved its API
        why = f"torch_ecg {torch_ecg.__version__} failed ({_one_line(err)}); written for 0.0.33"
        return Row(name, [("torch_ecg", why)], "-", ">= 2x", None, {"torch_ecg": why})
    theirs_set = TorchECGWindows(reader, recs, labels, data.window)
    ours_set = ctx.train_windows()
    _warm_page_cache(_record_paths(ctx, ctx.train_ids))
    ours_cfg = ctx.backbones["resnet1d_wang"]
    results, shapes = {}, {}
    for side, dataset, model_cfg, model in (("ecgnet", ours_set, ours_cfg, None),
                                            ("torch_ecg", theirs_set, None, their_model)):
        step = ctx.step(device, dtype, model_cfg, model)
        loader = _loader(dataset, s, device, s.warmup + s.steps)
        results[side] = samples_per_s(step, lambda: next(loader), s)
        batch = _prebuilt(dataset, s, device)
        results[f"{side} model only"] = samples_per_s(step, lambda: batch, s)
        params = sum(p.numel() for p in step.model.parameters())
        shapes[side] = (params, macs_per_sample(step.model.cpu(), len(records.leads), data.window))
    ratio = results["ecgnet"] / results["torch_ecg"]
    row = Row(name, [("ecgnet", _fmt(results["ecgnet"])), ("torch_ecg", _fmt(results["torch_ecg"])),
                     ("model only", f"{_fmt(results['ecgnet model only'])} / {_fmt(results['torch_ecg model only'])}")],
              f"{ratio:.2f}x", ">= 2x", ratio >= 2,
              {**results, "ratio": ratio, "torch_ecg_version": torch_ecg.__version__, "dtype": _dtype_name(dtype),
               "workers": s.loader_workers(device),
               "params": {k: v[0] for k, v in shapes.items()}, "macs_per_sample": {k: v[1] for k, v in shapes.items()}})
    (p_ours, m_ours), (p_theirs, m_theirs) = shapes["ecgnet"], shapes["torch_ecg"]
    row.notes.append(
        f"ecgnet resnet1d_wang {p_ours:,} params, {m_ours / 1e6:.1f} MMAC/sample vs torch_ecg {torch_ecg.__version__} "
        f"ECG_CRNN(ResNet [1,1,1]x128, k=3) {p_theirs:,} params, {m_theirs / 1e6:.1f} MMAC/sample; input "
        f"{len(records.leads)}x{data.window}, batch {s.batch_size}, {_dtype_name(dtype)}, "
        f"{s.loader_workers(device)} loader workers, the same training step (config's loss, optimizer, clipping)")
    return row


def write_hdf5_fixture(path: Path, megabytes: float, seed: int = 0) -> int:
    """A fixed-layout ecgnet-hdf5 file of about ``megabytes``: 10 s 12-lead records at 100 Hz
    (simulated ECGs, varied per record), superdiagnostic-like multi-hot labels. Returns the records."""
    import h5py
    from .data.ecgsim import sample_patient, simulate_ecg
    rng = np.random.default_rng(seed)
    base = np.stack([simulate_ecg(rng, sample_patient(rng), 100, 10.0).T for _ in range(16)])   # (16, T, 12)
    n = max(1, int(round(megabytes * 2 ** 20 / base[0].nbytes)))
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "ecgnet-hdf5", "version": 1, "fs": 100.0, "leads": LEADS,
                        "class_names": ["CD", "HYP", "MI", "NORM", "STTC"]})
        ds = f.create_dataset("signals", (n, *base.shape[1:]), np.float32, chunks=(1, *base.shape[1:]))
        for start in range(0, n, 256):
            k = np.arange(start, min(n, start + 256))
            ds[start:start + len(k)] = base[k % len(base)] * rng.uniform(0.8, 1.2, (len(k), 1, 12)).astype(np.float32)
        f["labels"] = (rng.random((n, 5)) < 0.3).astype(np.uint8)
        f.create_dataset("record_id", data=[f"r{i}" for i in range(n)], dtype=h5py.string_dtype())
    return n


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def hdf5_child(path: str, batch_size: int) -> None:
    """In a fresh process: iterate one epoch of TrainWindows over the lazy HDF5 adapter; print
    {"before_kb", "peak_kb", "records"} (VmRSS before iterating, VmHWM after; ru_maxrss off Linux)."""
    cfg = resolve_config({"data": {"type": "hdf5", "root": path, "windowing": "full", "qc_cache": None},
                          "model": {"type": "resnet1d_wang"}, "loss": {"type": "bce"},
                          "input": {"window_s": 2.5}, "preprocess": {"cache_dir": None, "normalize": "per_record"}})
    data = prepare_data(cfg)
    dataset = TrainWindows(data.signals, data.targets, np.arange(len(data.records.ids)), data.window,
                           Normalizer("per_record"))
    linux = Path("/proc/self/status").exists()
    if not linux:
        import resource
    before = _rss_kb("VmRSS") if linux else None
    for _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True):
        pass
    peak = _rss_kb("VmHWM") if linux else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (
        1024 if sys.platform == "darwin" else 1)
    print(json.dumps({"before_kb": before, "peak_kb": peak, "records": len(dataset)}))


def row_hdf5(ctx: Context) -> Row:
    s, out = ctx.settings, {}
    for label, mb in (("S", s.hdf5_mb), ("10 S", 10 * s.hdf5_mb)):
        path = ctx.workdir / f"lazy-{label.replace(' ', '')}.h5"
        write_hdf5_fixture(path, mb)
        size = path.stat().st_size / 2 ** 20
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                          os.environ.get("PYTHONPATH")]))}
        code = f"from ecgnet.benchmark import hdf5_child; hdf5_child({str(path)!r}, {s.batch_size})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if proc.returncode:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"row hdf5: the child process over {path} failed: {tail}")
        out[label] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "file_mb": size}
        path.unlink()
    small, big = out["S"], out["10 S"]
    ratio = big["peak_kb"] / small["peak_kb"]

    def case(r):
        grew = f", +{(r['peak_kb'] - r['before_kb']) / 1024:.0f} MB iterating" if r["before_kb"] else ""
        return f"{r['peak_kb'] / 1024:.0f} MB peak ({r['file_mb']:.0f} MB file{grew})"
    return Row("5 lazy HDF5 peak RSS", [("S", case(small)), ("10 S", case(big))], f"{ratio:.2f}x", "<= 1.1x",
               ratio <= 1.1, {"S": small, "10S": big, "ratio": ratio})


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def kfold_eval_timing(cfg: dict, data, device, dtype, folds: int = 3, records: int | None = None,
                      batch_size: int | None = None) -> dict:
    """Seconds to score ``records`` records (default: the config's test fraction of the data) with
    ``folds`` random-weight models in K passes and in one pass, and the largest difference between
    the two paths' probabilities."""
    n_all = len(data.records.ids)
    n = records or max(1, int(round(cfg["split"]["test_fraction"] * n_all)))
    index = np.arange(min(n, n_all))
    batch_size = batch_size or cfg["train"]["eval_batch_size"]
    models, normalizers = [], []
    thirds = np.array_split(np.random.default_rng(0).permutation(n_all), folds)
    for k in range(folds):
        torch.manual_seed(k)
        model = build("model", cfg, in_leads=len(data.records.leads), num_classes=data.records.num_classes)
        models.append(model.to(device).eval())
        normalizers.append(Normalizer("per_lead").fit(data.signals[i] for i in thirds[k]))   # differ per fold
    pad = not data.full_length

    def k_passes():
        return [predict(m, EvalWindows(data.signals, index, data.window, data.stride, norm, pad=pad),
                        data.records.multilabel, device, dtype, batch_size)[0] for m, norm in zip(models, normalizers)]

    def one_pass():
        shared = EvalWindows(data.signals, index, data.window, data.stride, Normalizer("none"), pad=pad)
        return [p for p, _ in predict_many(models, shared, data.records.multilabel, device, dtype, batch_size,
                                           normalizers=normalizers)]

    one_pass()                                  # warm-up (allocation, kernel choice)
    k_s, separate = _timed(k_passes)
    one_s, joint = _timed(one_pass)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(separate, joint))
    return {"folds": folds, "records": len(index), "k_passes_s": k_s, "one_pass_s": one_s, "max_abs_diff": diff}


def row_kfold(ctx: Context, device: torch.device) -> Row:
    folds = max(ctx.cfg["kfold"]["folds"], 3)
    t = kfold_eval_timing(ctx.cfg, ctx.data, device, amp_dtype("auto", device), folds,
                          records=ctx.settings.eval_records, batch_size=ctx.cfg["train"]["eval_batch_size"])
    speedup = t["k_passes_s"] / t["one_pass_s"]
    row = Row(f"6 k-fold evaluation [{device.type}]", [(f"{folds} passes", f"{t['k_passes_s']:.2f} s"),
                                                      ("one pass", f"{t['one_pass_s']:.2f} s")],
              f"{speedup:.2f}x", "> 1x", speedup > 1, {**t, "speedup": speedup})
    row.notes.append(f"k-fold [{device.type}]: {folds} random-weight {ctx.cfg['model']['type']} models, "
                     f"{t['records']} records; largest probability difference between the paths "
                     f"{t['max_abs_diff']:.1e}")
    return row


# ---------------------------------------------------------------- the table

def format_table(rows: list[Row]) -> str:
    lines = []
    cells = [(r.row, " | ".join(f"{c}: {v}" for c, v in r.cases), r.ratio, r.goal, r.verdict) for r in rows]
    heads = ("row", "cases (side by side)", "ratio", "goal", "met")
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    for line in [heads, tuple("-" * w for w in widths), *cells]:
        lines.append("  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip())
    notes = [n for r in rows for n in r.notes]
    lines += [f"  [{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def parse_rows(text: str | None) -> list[str]:
    """``--only``: row names or numbers, comma-separated (e.g. ``data,hdf5`` or ``1,5``)."""
    if not text:
        return list(ROWS)
    chosen = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name = ROWS[int(item) - 1] if item.isdigit() and 1 <= int(item) <= len(ROWS) else item
        if name not in ROWS:
            raise ConfigError(f"--only: unknown row {item!r}; choose from {', '.join(ROWS)} (or 1-{len(ROWS)})")
        chosen.append(name)
    return chosen


def run_benchmark(cfg: dict, backbones: dict, rows: Sequence[str] = ROWS, settings: Settings | None = None,
                  ptbxl_root: str | None = None, devices: Sequence[str] | None = None,
                  json_path: str | None = None, out=print,
                  progress=lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    """Run ``rows`` and print one table. ``cfg``: a PTB-XL config (its data.root is replaced by
    ``ptbxl_root`` or a fixture); ``backbones``: {name: model section} for rows 3 and 4 (row 4 uses
    resnet1d_wang). Returns everything printed, as numbers (also written to ``json_path``)."""
    s = settings or Settings()
    if s.batch_size < 1:
        raise ConfigError(f"--batch-size: must be 1 or more, got {s.batch_size}")
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible; use cpu")
    devices = [torch.device(d) for d in devices]
    if json_path and not Path(json_path).resolve().parent.is_dir():
        raise ConfigError(f"--json {json_path}: its folder does not exist; create it or choose another path")
    info = machine()
    for device in devices:
        out(f"train.amp auto on {device}: {describe_amp('auto', device, amp_dtype('auto', device))}")
    out(f"machine: {info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}, GPU: {info['gpu'] or 'none'}")
    results: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ecgnet-bench-") as tmp:
        ctx = Context(cfg, backbones, s, Path(tmp), ptbxl_root)
        plan: list[tuple[str, Callable[[], Row]]] = []
        for name in rows:
            if name == "data":
                plan.append(("data path", lambda: row_data(ctx)))
            elif name == "hdf5":
                plan.append(("lazy HDF5 peak RSS", lambda: row_hdf5(ctx)))
            else:
                for device in devices:
                    if name == "overhead":
                        plan.append((f"loader overhead [{device}]", lambda d=device: row_overhead(ctx, d)))
                    elif name == "backbones":
                        plan += [(f"{b} [{device}]", lambda d=device, b=b: row_backbone(ctx, d, b)) for b in backbones]
                    elif name == "torch_ecg":
                        plan.append((f"ecgnet vs torch_ecg [{device}]", lambda d=device: row_torch_ecg(ctx, d)))
                    elif name == "kfold":
                        plan.append((f"k-fold evaluation [{device}]", lambda d=device: row_kfold(ctx, d)))
        start = time.perf_counter()
        for i, (label, measure) in enumerate(plan, 1):
            progress(f"[{i}/{len(plan)}] {label} ...")
            t = time.perf_counter()
            results.append(measure())
            results[-1].values["seconds"] = time.perf_counter() - t
        elapsed = time.perf_counter() - start
        source = ctx.source if ctx._data is not None else None
        shape = f", input {len(ctx.data.records.leads)} leads x {ctx.data.window} samples" if source else ""
    if source:
        out(f"records: {source}")
    out(f"batch {s.batch_size}, {s.warmup} warm-up + {s.steps} timed steps per case{shape}; took {elapsed:.0f} s")
    out(format_table(results))
    report = {"machine": info, "settings": dataclasses.asdict(s), "records": source, "seconds": elapsed,
              "rows": [dataclasses.asdict(r) | {"verdict": r.verdict} for r in results]}
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=str))
    return report
