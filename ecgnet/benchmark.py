"""Throughput benchmarks, printed side by side as ratios (tools/benchmark.py).

Training: each case trains the config's model on the config's data for a fixed number of steps
after a warm-up and reports samples per second; the first case is the baseline every ratio refers
to. Evaluation: K fold models (random weights, each with its own per-lead normalisation, as a
k-fold run has) scored on one split in K passes (one per model) and in one pass (each batch read
once, every model applied to it), as ``evaluate`` does for a k-fold run. The first line says what
``train.amp: auto`` resolves to on this machine.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.utils.data

from .build import build, resolve_config
from .data.dataset import EvalWindows, TrainWindows
from .data.transforms import Normalizer
from .engine.predict import amp_dtype, autocast, describe_amp, predict, predict_many, resolve_device
from .engine.run import prepare_data


def _train_throughput(cfg: dict, data, dtype, device, steps: int, batch_size: int, num_workers: int = 0) -> float:
    records = data.records
    index = np.arange(len(records.ids))
    torch.manual_seed(0)
    model = build("model", cfg, in_leads=len(records.leads), num_classes=records.num_classes).to(device)
    loss_fn = build("loss", cfg, multilabel=records.multilabel, class_counts=records.class_counts(index)).to(device)
    optimizer = build("optimizer", cfg, params=model.parameters())
    dataset = TrainWindows(data.signals, data.targets, index, data.window, Normalizer("per_record"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         drop_last=True)
    model.train()
    done, start = 0, None
    while done < steps + 3:
        for x, y in loader:
            if done == 3:                      # the first steps include allocation and warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            x, y = x.to(device), y.to(device)
            with autocast(device, dtype):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done >= steps + 3:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


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


def run_benchmark(cfg: dict, steps: int = 30, batch_size: int = 32, quick: bool = False) -> dict:
    """``quick``: a few steps and a small evaluation split, to see that everything runs."""
    cfg = resolve_config(cfg)
    data = prepare_data(cfg)
    device = resolve_device(cfg["train"]["device"])
    auto = amp_dtype("auto", device)
    print(f"train.amp auto on {device}: {describe_amp('auto', device, auto)}")
    if quick:
        steps = min(steps, 5)
    cases = [("fp32", None, 0), ("bf16 autocast", torch.bfloat16, 0), ("fp32, 2 loader workers", None, 2)]
    if device.type == "cuda":
        cases.insert(2, ("fp16 autocast", torch.float16, 0))
    results = []
    for name, dtype, workers in cases:
        results.append((name, _train_throughput(cfg, data, dtype, device, steps, batch_size, workers)))
    base = results[0][1]
    print(f"training throughput on {device} ({cfg['model']['type']}, batch {batch_size}, {steps} steps, "
          f"window {data.window} samples x {len(data.records.leads)} leads)")
    print(f"{'case':28s}{'samples/s':>12s}{'ratio':>8s}")
    for name, value in results:
        print(f"{name:28s}{value:12.1f}{value / base:8.2f}x")
    folds = max(cfg["kfold"]["folds"], 3)
    timing = kfold_eval_timing(cfg, data, device, auto, folds, records=64 if quick else None)
    print(f"\nk-fold evaluation on {device}: {timing['folds']} random-weight models, {timing['records']} records, "
          f"amp auto ({'fp32' if auto is None else str(auto).replace('torch.', '')}); "
          f"largest probability difference {timing['max_abs_diff']:.1e}")
    print(f"{'case':28s}{'seconds':>12s}{'speed-up':>10s}")
    for name, value in (("K passes", timing["k_passes_s"]), ("one pass", timing["one_pass_s"])):
        print(f"{name:28s}{value:12.2f}{timing['k_passes_s'] / value:10.2f}x")
    return {"train": results, "kfold_eval": timing, "amp_auto": None if auto is None else str(auto)}
