"""On-disk preprocessing cache: decode and preprocess a dataset once, then memory-map it.

A cache entry is a directory ``<cache_dir>/<dataset>-<key>/`` holding
``signals.f32`` (raw float32, (total samples, leads), records concatenated along time),
``meta.json`` (leads, total), ``offsets.npy`` ((N+1,) int64), ``ids.json`` and
``failed.json`` (records that could not be read, with the reason). The key hashes the adapter's
``cache_key()`` (source file names, sizes, mtimes and reading settings), the preprocessing
settings, ``CACHE_VERSION``, the ecgnet version and a fingerprint of the code that produced the
signals, so a changed source, setting or preprocessing code builds a new entry. An entry is
written to a temporary directory and renamed into place, so readers never see half of one.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .. import __version__

log = logging.getLogger(__name__)

CACHE_VERSION = 2


def file_fingerprint(paths: Iterable[Path]) -> list:
    """(name, size, mtime_ns) of each file: cheap to compute, changes when a file does."""
    out = []
    for p in sorted(Path(p) for p in paths):
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


#: the modules every cached signal passes through, besides the adapter's own module
PREPROCESSING_CODE = ("transforms.py", "dataset.py", "cache.py")


def code_fingerprint(adapter: object) -> str:
    """sha256 of the source files that turn the adapter's files into cached signals: the adapter's
    module (and those of its base classes within ecgnet) and ``PREPROCESSING_CODE``. An edit to
    any of them, or a new ecgnet version, builds a new cache entry instead of serving old signals."""
    here = Path(__file__).parent
    files = {here / name for name in PREPROCESSING_CODE}
    for cls in type(adapter).__mro__[:-1]:          # all but ``object``
        try:
            source = inspect.getsourcefile(cls)
        except TypeError:                             # defined without a source file
            source = None
        if source:
            files.add(Path(source))
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_dir_for(root: str, dataset: str, adapter_key: str, preprocess: dict, code: str = "") -> Path:
    """The entry for these sources (``adapter_key``), preprocessing settings and code (``code_fingerprint``)."""
    text = json.dumps({"v": CACHE_VERSION, "ecgnet": __version__, "code": code, "adapter": adapter_key,
                       "preprocess": {k: preprocess[k] for k in ("fs", "bandpass_hz", "filter_order")}},
                      sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Path(os.path.expanduser(root)) / f"{dataset}-{digest}"


def read_cache(path: Path) -> Optional[tuple[list[str], list[np.ndarray], dict]]:
    """-> (ids, signals as memory-mapped (leads, samples) views, failed {id: reason}), or None when absent."""
    if not (path / "ids.json").is_file():
        return None
    ids = json.loads((path / "ids.json").read_text())
    failed = json.loads((path / "failed.json").read_text())
    meta = json.loads((path / "meta.json").read_text())
    offsets = np.load(path / "offsets.npy")
    if meta["total"] == 0:
        data = np.zeros((0, meta["leads"]), np.float32)
    else:
        data = np.memmap(path / "signals.f32", dtype=np.float32, mode="r", shape=(meta["total"], meta["leads"]))
    return ids, [data[offsets[i]:offsets[i + 1]].T for i in range(len(ids))], failed


def write_cache(path: Path, items: Iterable[tuple[str, Optional[np.ndarray], Optional[str]]], leads: int) -> None:
    """Stream (id, signal (leads, samples) or None, failure reason) items into a new entry.

    Records are appended one at a time (time-major, so each is one contiguous write), so
    memory stays flat however large the dataset.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent))
    try:
        ids, offsets, failed = [], [0], {}
        with open(tmp / "signals.f32", "wb") as f:
            for rid, x, reason in items:
                ids.append(rid)
                if x is None:
                    failed[rid] = reason
                    offsets.append(offsets[-1])
                    continue
                f.write(np.ascontiguousarray(x.T, dtype=np.float32).tobytes())
                offsets.append(offsets[-1] + x.shape[1])
        np.save(tmp / "offsets.npy", np.asarray(offsets, np.int64))
        (tmp / "meta.json").write_text(json.dumps({"leads": leads, "total": offsets[-1]}))
        (tmp / "failed.json").write_text(json.dumps(failed))
        (tmp / "ids.json").write_text(json.dumps(ids))   # written last: its presence marks a complete entry
        try:
            os.replace(tmp, path)
        except OSError:              # another process finished the same entry first
            if not (path / "ids.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
