"""Multi-process (DDP) training under torchrun, and the per-process share of the machine.

``torchrun --nproc_per_node N tools/train.py ...`` starts N copies of the training command with
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set; ``session`` joins them into one process group (NCCL on
CUDA, each process on ``cuda:LOCAL_RANK``; gloo on the CPU). Without those variables (or with one
process) every function here is a no-op and training is the single-process code path.

Rank 0 alone writes files and logs at INFO; every rank trains, and the others wait for it where
they read what it wrote. The run directory must be one that every rank sees (one machine, or a
shared filesystem).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import signal
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from ..registry import ConfigError, DataError
from .predict import resolve_device

log = logging.getLogger(__name__)

# Bounds every wait of one rank for another; rank 0 reading (and caching) a large dataset for the
# first time while the others wait is the longest legitimate one.
TIMEOUT = datetime.timedelta(minutes=60)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_device(setting: str) -> torch.device:
    """``train.device`` for this process: under torchrun a CUDA device is ``cuda:LOCAL_RANK``."""
    device = resolve_device(setting)
    if not launched() or device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(f"train.device: '{setting}' under torchrun, where each process uses cuda:LOCAL_RANK; "
                          "set auto or cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if processes > torch.cuda.device_count():      # the same on every rank of this machine, so rank 0 says it
        raise ConfigError(f"torchrun: {processes} processes on this machine but {torch.cuda.device_count()} CUDA "
                          "device(s) visible; start one process per GPU (--nproc_per_node)")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def session(device_setting: str):
    """Join the torchrun process group for the body (NCCL on CUDA, else gloo) and leave it on the way
    out, also on an error or Ctrl-C; ranks other than 0 log warnings only. SIGTERM (sent by torchrun
    when another rank fails or the job is stopped) becomes a KeyboardInterrupt, so an interrupted
    run says how to continue. A no-op without torchrun, or when already joined."""
    if not launched() or dist.is_initialized():
        yield
        return
    device = process_device(device_setting)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    quiet = logging.getLogger("ecgnet")
    level = quiet.level
    if not is_main():
        quiet.setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        quiet.setLevel(level)
        dist.destroy_process_group()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def local_batch_size(batch_size: int) -> int:
    """``train.batch_size`` is the global batch: each of the N processes takes batch_size / N."""
    world = world_size()
    if batch_size % world:
        lower = max(world, batch_size // world * world)
        raise ConfigError(f"train.batch_size: {batch_size} is the global batch, split evenly over {world} processes; "
                          f"use a multiple of {world} (e.g. {lower} or {lower + world})")
    return batch_size // world


def cpus_per_process() -> int:
    """CPU cores this process may use, shared evenly with the other training processes on this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def resolve_num_workers(setting: int | str, device: torch.device) -> int:
    """``train.num_workers``: an int as given; auto = min(8, this process's cores - 1) on CUDA, where
    workers prepare the next batches while the GPU computes; 0 on the CPU, where the data path is an
    in-memory slice and workers would take the cores the model trains on."""
    if setting != "auto":
        return int(setting)
    return min(8, cpus_per_process() - 1) if device.type == "cuda" else 0


# ---- collectives (identity with one process) ----

def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: with per-rank batch statistics
    they drift apart within an epoch, and the model rank 0 saves must be the one every rank evaluates."""
    if world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


USER_ERRORS = (ConfigError, DataError, OSError)


def on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 alone (choosing and writing the run directory); its result, or the user error
    it raised, on every rank. Other ranks re-raise that error marked ``from_main``: the CLI lets rank 0
    alone print it."""
    return _share(fn, others_run=False)


def main_first(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0, then on the other ranks (which then find the cache rank 0 filled); a user
    error on rank 0 is raised on every rank without the others trying."""
    return _share(fn, others_run=True)


def _share(fn: Callable[[], Any], others_run: bool) -> Any:
    if world_size() == 1:
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except USER_ERRORS as err:
            error = err
    shared, error = broadcast_object((None if others_run else result, error))
    if error is not None:
        if not is_main():
            error.from_main = True
        raise error
    if is_main():
        return result
    return fn() if others_run else shared


# ---- replicas ----

def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names and exact tensor bytes."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy()).tobytes())
    return digest.hexdigest()


def check_replicas(model: torch.nn.Module, what: str) -> None:
    """Every rank must hold the weights rank 0 saves (DDP keeps them equal; a difference is a bug, e.g.
    a buffer no one synchronised); logs the digest, raises on a difference."""
    if world_size() == 1:
        return
    digests = all_gather_object(state_digest(model.state_dict()))
    if len(set(digests)) > 1:
        raise RuntimeError(f"{what}: the {world_size()} processes hold different weights after training "
                           f"({', '.join(f'rank {r}: {d[:12]}' for r, d in enumerate(digests))})")
    log.info("%s: all %d processes hold identical weights (sha256 %s)", what, world_size(), digests[0])
