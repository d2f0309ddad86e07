"""On-disk preprocessing cache: decode, check and preprocess a dataset once, then memory-map it.

A cache entry is a directory ``<cache_dir>/<dataset>-<key>/`` holding
``signals.f32`` (raw float32, (total samples, leads), records concatenated along time),
``meta.json`` (leads, total), ``offsets.npy`` ((N+1,) int64), ``ids.json`` and
``failed.json`` (records that could not be read or failed QC, with the reason). The key hashes the
adapter's ``cache_key()`` (source file names, sizes, mtimes and reading settings), the
preprocessing and QC settings, ``CACHE_VERSION``, the ecgnet version and a fingerprint of the code
that produced the signals, so a changed source, setting or preprocessing code builds a new entry.

An entry is written to a temporary directory and renamed into place, so readers never see half of
one. Every read verifies it (``read_cache``): each file parses, the sizes agree, it lists exactly
the dataset's records, in order, and every sample is finite. An entry that fails is never used: it
is rebuilt, and the rebuilt one replaces it (the old one is moved aside, then deleted).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .. import __version__

log = logging.getLogger(__name__)

CACHE_VERSION = 3
FINITE_CHECK_BYTES = 64 << 20      # the NaN/inf check reads an entry this much at a time


class InvalidEntry(Exception):
    """A cache entry that exists but must not be used; the message says why, in one line."""


class CacheWriteError(Exception):
    """The cache folder cannot take a new entry (read-only, full, or not a folder)."""


def file_fingerprint(paths: Iterable[Path]) -> list:
    """(name, size, mtime_ns) of each file: cheap to compute, changes when a file does."""
    out = []
    for p in sorted(Path(p) for p in paths):
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


#: the modules every cached signal passes through, besides the adapter's own module
PREPROCESSING_CODE = ("transforms.py", "dataset.py", "cache.py", "qc.py")


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


def cache_dir_for(root: str, dataset: str, adapter_key: str, preprocess: dict, code: str = "",
                  qc: Optional[dict] = None) -> Path:
    """The entry for these sources (``adapter_key``), preprocessing and QC settings and code
    (``code_fingerprint``)."""
    text = json.dumps({"v": CACHE_VERSION, "ecgnet": __version__, "code": code, "adapter": adapter_key,
                       "preprocess": {k: preprocess[k] for k in ("fs", "bandpass_hz", "filter_order")},
                       "qc": qc}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Path(os.path.expanduser(root)) / f"{dataset}-{digest}"


def _load(path: Path, name: str):
    """One small file of an entry, parsed; InvalidEntry when it is missing or does not parse."""
    try:
        if name.endswith(".npy"):
            return np.load(path / name, allow_pickle=False)
        return json.loads((path / name).read_text())
    except FileNotFoundError:
        raise InvalidEntry(f"{name} is missing") from None
    except (OSError, ValueError, EOFError) as err:       # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidEntry(f"{name} is unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__})") \
            from None


def _difference(cached: list, ids: list) -> str:
    k = next((i for i, (a, b) in enumerate(zip(cached, ids)) if a != b), min(len(cached), len(ids)))

    def at(seq):
        return repr(seq[k]) if k < len(seq) else "nothing"
    return (f"it lists other records than the dataset ({len(cached)} vs {len(ids)}; at position {k} "
            f"{at(cached)} where the dataset has {at(ids)})")


def _all_finite(data: np.ndarray) -> bool:
    """NaN/inf check in chunks, so memory stays flat (about 0.05 s per GB in the page cache)."""
    rows = max(1, FINITE_CHECK_BYTES // max(1, data.shape[1] * data.itemsize))
    return all(np.isfinite(data[start:start + rows]).all() for start in range(0, len(data), rows))


def read_cache(path: Path, ids: list[str], leads: int) -> Optional[tuple[list[np.ndarray], dict]]:
    """-> (signals as memory-mapped (leads, samples) views in the order of ``ids``, failed {id: reason}),
    None when there is no entry; InvalidEntry when there is one that must not be used."""
    if not path.exists():
        return None
    cached_ids, failed, meta = _load(path, "ids.json"), _load(path, "failed.json"), _load(path, "meta.json")
    offsets = _load(path, "offsets.npy")
    if not (isinstance(cached_ids, list) and isinstance(failed, dict) and isinstance(meta, dict)
            and isinstance(meta.get("leads"), int) and isinstance(meta.get("total"), int)):
        raise InvalidEntry("ids.json, failed.json or meta.json does not hold what this ecgnet writes")
    if cached_ids != list(ids):
        raise InvalidEntry(_difference(cached_ids, list(ids)))
    total = meta["total"]
    if meta["leads"] != leads:
        raise InvalidEntry(f"meta.json says {meta['leads']} leads, the dataset has {leads}")
    if offsets.shape != (len(ids) + 1,) or offsets.dtype.kind not in "iu" or offsets[0] != 0 \
            or offsets[-1] != total or (np.diff(offsets.astype(np.int64)) < 0).any():
        raise InvalidEntry(f"offsets.npy is not {len(ids) + 1} non-decreasing offsets from 0 to {total}")
    failed_at = [i for i, rid in enumerate(ids) if rid in failed]
    if len(failed_at) != len(failed) or np.diff(offsets)[failed_at].any():    # a failed record has no samples
        raise InvalidEntry("failed.json does not match the records")
    try:
        size = (path / "signals.f32").stat().st_size
        expected = total * leads * 4
        if size != expected:
            raise InvalidEntry(f"signals.f32 has {size} bytes, expected {expected} (truncated or overwritten)")
        data = np.memmap(path / "signals.f32", dtype=np.float32, mode="r", shape=(total, leads)) if total \
            else np.zeros((0, leads), np.float32)
    except FileNotFoundError:
        raise InvalidEntry("signals.f32 is missing") from None
    except (OSError, ValueError) as err:
        raise InvalidEntry(f"signals.f32 is unreadable ({err})") from None
    if not _all_finite(data):
        raise InvalidEntry("signals.f32 holds NaN/inf samples")
    return [data[offsets[i]:offsets[i + 1]].T for i in range(len(ids))], failed


def _discard(path: Path) -> None:
    """Move an unusable entry aside (one rename, so no reader sees it half deleted), then delete it."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:      # another process moved it already
        return
    shutil.rmtree(aside, ignore_errors=True)


def _install(tmp: Path, path: Path, ids: list[str], leads: int) -> None:
    """Rename the finished entry ``tmp`` into place. An entry already there is kept when it is valid
    (another process finished the same one first) and replaced when it is not."""
    for _ in range(5):
        try:
            os.replace(tmp, path)           # atomic; fails when ``path`` is a non-empty folder
            return
        except OSError:
            if not path.is_dir():
                raise
        try:
            if read_cache(path, ids, leads) is not None:
                return
        except InvalidEntry:
            _discard(path)
    raise CacheWriteError(f"{path}: other processes keep replacing this entry")


def write_cache(path: Path, items: Iterable[tuple[str, Optional[np.ndarray], Optional[str]]], leads: int) -> None:
    """Stream (id, signal (leads, samples) or None, failure reason) items into a new entry at ``path``.

    Records are appended one at a time (time-major, so each is one contiguous write), so
    memory stays flat however large the dataset. CacheWriteError when the cache folder cannot take
    the entry; whatever ``items`` raises (the adapter's errors) passes through unchanged.
    """
    from_items = []

    def source():
        try:
            yield from items
        except Exception:
            from_items.append(True)
            raise

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise CacheWriteError(str(err)) from None
    try:
        ids, offsets, failed = [], [0], {}
        with open(tmp / "signals.f32", "wb") as f:
            for rid, x, reason in source():
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
        (tmp / "ids.json").write_text(json.dumps(ids))
        _install(tmp, path, ids, leads)
    except OSError as err:
        if from_items:
            raise
        raise CacheWriteError(str(err)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
