"""The HDF5 adapter's quality-control pass: every record of the file through ``qc.qc_record``
at its own rate, streamed a block of records at a time (never the whole file), with the result
cached as a small JSON file keyed by the file's fingerprint (name, size, mtime) and the settings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ..registry import DataError
from .cache import file_fingerprint
from .hdf5_layout import Layout
from .qc import QCSettings, qc_record

log = logging.getLogger(__name__)

QC_VERSION = 1
QC_BLOCK_BYTES = 16 << 20          # the QC pass reads at most this much at once (or one record)


def _blocks(layout: Layout, row_bytes: int) -> list[tuple[int, int]]:
    """Consecutive record ranges of at most QC_BLOCK_BYTES each (or one record)."""
    out, start, size = [], 0, 0
    for i, length in enumerate(layout.lengths):
        rec = int(length) * row_bytes
        if i > start and size + rec > QC_BLOCK_BYTES:
            out.append((start, i))
            start, size = i, 0
        size += rec
    if start < layout.n:
        out.append((start, layout.n))
    return out


def run_qc(layout: Layout, qc: QCSettings, check: np.ndarray) -> dict[str, list[int]]:
    """Stream the records with ``check[i]`` through ``qc_record``: reason -> record positions."""
    reasons: dict[str, list[int]] = {}
    with h5py.File(layout.path, "r") as f:
        sig = f["signals"]
        row_bytes = len(layout.leads) * sig.dtype.itemsize
        for start, stop in _blocks(layout, row_bytes):
            if not check[start:stop].any():
                continue
            try:
                if layout.variable:
                    block = sig[layout.offsets[start]:layout.offsets[stop]]
                else:
                    block = sig[start:stop]
            except OSError as err:
                raise DataError(f"{layout.path}:/signals: records {start}-{stop - 1} unreadable ({err})") from None
            for i in range(start, stop):
                if not check[i]:
                    continue
                if layout.variable:
                    x = block[layout.offsets[i] - layout.offsets[start]:layout.offsets[i + 1] - layout.offsets[start]]
                else:
                    x = block[i - start]
                reason = qc_record(x, float(layout.record_fs[i]), qc)
                if reason:
                    reasons.setdefault(reason, []).append(i)
    return reasons


def qc_reasons(layout: Layout, qc: QCSettings, check: np.ndarray, cache_dir: Optional[str]) -> dict[str, list[int]]:
    """``run_qc``'s result, read from (or first written to) ``cache_dir`` when one is given."""
    key = json.dumps({"v": QC_VERSION, "file": file_fingerprint([layout.path]), "qc": dataclasses.asdict(qc),
                      "check": hashlib.sha256(np.packbits(check).tobytes()).hexdigest()}, sort_keys=True)
    cache = None
    if cache_dir:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache = Path(os.path.expanduser(cache_dir)) / f"{layout.path.stem}-{digest}.json"
        if cache.is_file():
            log.info("QC result read from %s", cache)
            return {k: list(v) for k, v in json.loads(cache.read_text())["reasons"].items()}
    began = time.perf_counter()
    reasons = run_qc(layout, qc, check)
    log.info("QC of %d records took %.1f s", int(check.sum()), time.perf_counter() - began)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=cache.name, suffix=".tmp", dir=cache.parent)
        with os.fdopen(fd, "w") as out:
            json.dump({"key": key, "reasons": reasons}, out)
        os.replace(tmp, cache)   # readers see the whole file or none
    return reasons
