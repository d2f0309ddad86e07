"""Throughput benchmarks, printed side by side as ratios (tools/benchmark.py).

Each case trains the config's model on the config's data for a fixed number of
steps after a warm-up and reports samples per second; the first case is the
baseline every ratio refers to.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.utils.data

from .build import build, resolve_config
from .data.dataset import TrainWindows
from .data.transforms import Normalizer
from .engine.predict import autocast, resolve_device
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


def run_benchmark(cfg: dict, steps: int = 30, batch_size: int = 32) -> list[tuple[str, float]]:
    cfg = resolve_config(cfg)
    data = prepare_data(cfg)
    device = resolve_device(cfg["train"]["device"])
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
    return results
