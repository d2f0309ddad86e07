"""Checkpoints: atomic writes, safe loads, RNG state capture."""
from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..registry import DataError

FORMAT = 1


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temp file, then rename: a reader (or a crash) sees the old file or the new one.
    A failed write (full disk, read-only folder) removes the temp file and keeps the old one."""
    buffer = io.BytesIO()
    torch.save(state, buffer)    # serialised in memory: torch's file writer reports a full disk as a RuntimeError
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())          # on disk before the rename, so a power cut cannot leave an empty file
        os.replace(tmp, path)
    except BaseException as err:          # also Ctrl-C mid-write
        tmp.unlink(missing_ok=True)
        if not isinstance(err, OSError):
            raise
        run_dir = path.parent.parent if re.fullmatch(r"fold\d+", path.parent.name) else path.parent
        then = (f"the previous {path.name} is unchanged; free disk space or make the folder writable, then "
                f"continue with --resume {run_dir}" if path.is_file() else
                "free disk space or make the folder writable, then start again")
        raise DataError(f"{path}: cannot write the checkpoint ({err.strerror or err}); {then}") from None


def load_checkpoint(path: Path) -> dict:
    """Load with ``weights_only=True`` (no pickled code runs); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found; pass a .pt file or a run directory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise DataError(f"{path}: not a readable ecgnet checkpoint ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path}: not an ecgnet checkpoint of format {FORMAT}")
    return state


def load_finished(paths: list[Path]) -> list[dict]:
    """The checkpoints at ``paths``; one whose training did not finish (no tuned thresholds, no
    temperature) is refused with the command that finishes it."""
    states = [load_checkpoint(p) for p in paths]
    for p, s in zip(paths, states):
        if not s.get("finished"):
            run = p.parent.parent if re.fullmatch(r"fold\d+", p.parent.name) else p.parent   # --resume takes the run
            raise DataError(f"{p}: training did not finish (no tuned thresholds); finish it with tools/train.py "
                            f"--resume {run}, or wait for the process still training it")
    return states


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, np.uint32), *rest))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
