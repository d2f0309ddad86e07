"""Opening and checking a file in ecgnet's HDF5 layout (described in :mod:`ecgnet.data.hdf5`).

``read_layout`` reads everything but the samples (attributes, ids, labels, offsets, rates, folds)
and refuses a file that does not follow the layout with a DataError naming the dataset and what
it should hold. :mod:`ecgnet.data.pack` writes the layout (``FORMAT``, ``VERSION``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ..registry import DataError

FORMAT = "ecgnet-hdf5"
VERSION = 1
PACK_HINT = "write it with tools/pack_hdf5.py (see experiments/pediatric/README.md)"


@dataclass
class Layout:
    """What ``read_layout`` found in a file: everything but the samples."""
    path: Path
    variable: bool
    fs: float                        # root attribute
    leads: list[str]
    class_names: list[str]
    ids: list[str]
    patient_ids: Optional[list[str]]
    labels: np.ndarray               # (N, C) float32 or (N,) int64
    lengths: np.ndarray              # (N,) samples per record at its own rate
    offsets: Optional[np.ndarray]    # (N + 1,) int64, variable layout only
    record_fs: np.ndarray            # (N,) float64
    folds: Optional[np.ndarray]

    @property
    def n(self) -> int:
        return len(self.ids)


def _strings(value, where: str) -> list[str]:
    arr = np.atleast_1d(np.asarray(value, dtype=object))
    if arr.ndim != 1 or not all(isinstance(v, (str, bytes)) for v in arr):
        raise DataError(f"{where}: expected a list of strings, got {value!r}")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in arr]


def _string_dataset(f: h5py.File, name: str, n: int, path: Path) -> list[str]:
    ds = f[name]
    if ds.shape != (n,) or h5py.check_string_dtype(ds.dtype) is None:
        raise DataError(f"{path}:/{name}: expected [{n}] utf-8 strings, got {ds.dtype} {ds.shape}; {PACK_HINT}")
    return [str(s) for s in ds.asstr()[()]]


def _attr(f: h5py.File, name: str, path: Path, what: str):
    """A root attribute as a plain Python value (numpy scalars unwrapped, bytes decoded)."""
    if name not in f.attrs:
        raise DataError(f"{path}: root attribute '{name}' missing; expected {what}; {PACK_HINT}")
    value = f.attrs[name]
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def _labels(f: h5py.File, n: int, num_classes: int, path: Path) -> np.ndarray:
    expected = f"[{n}, {num_classes}] multi-hot 0/1 or [{n}] int class index"
    if "labels" not in f:
        raise DataError(f"{path}:/labels: missing; expected {expected}; {PACK_HINT}")
    ds = f["labels"]
    if ds.dtype.kind not in "biuf" or ds.shape not in ((n, num_classes), (n,)):
        raise DataError(f"{path}:/labels: is {ds.dtype} {ds.shape}, expected {expected} "
                        f"(C = len(class_names)); {PACK_HINT}")
    y = ds[()]
    if y.ndim == 2:
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"{path}:/labels: multi-hot labels must be 0 or 1")
        return y.astype(np.float32)
    if y.dtype.kind not in "iu" or (n and (y.min() < 0 or y.max() >= num_classes)):
        raise DataError(f"{path}:/labels: single-label classes must be integers in [0, {num_classes})")
    return y.astype(np.int64)


def read_layout(path: str | Path) -> Layout:
    """Open ``path`` and check it against the layout; DataError naming the dataset otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: HDF5 file not found; {PACK_HINT}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err}); {PACK_HINT}") from None
    with f:
        fmt = _attr(f, "format", path, f"'{FORMAT}'")
        if fmt != FORMAT:
            raise DataError(f"{path}: root attribute 'format' is {fmt!r}, expected '{FORMAT}'; {PACK_HINT}")
        version = _attr(f, "version", path, f"{VERSION}")
        if version != VERSION:
            raise DataError(f"{path}: layout version {version!r}, this ecgnet reads version {VERSION}; {PACK_HINT}")
        fs = float(_attr(f, "fs", path, "the sampling rate in Hz"))
        if not fs > 0:
            raise DataError(f"{path}: root attribute 'fs' is {fs}, expected a rate > 0 in Hz")
        leads = _strings(_attr(f, "leads", path, "a list of lead names"), f"{path}: root attribute 'leads'")
        class_names = _strings(_attr(f, "class_names", path, "a list of class names"),
                               f"{path}: root attribute 'class_names'")
        if "record_id" not in f:
            raise DataError(f"{path}:/record_id: missing; expected [N] utf-8 strings; {PACK_HINT}")
        n = f["record_id"].shape[0] if f["record_id"].ndim == 1 else -1
        ids = _string_dataset(f, "record_id", n, path)
        if len(set(ids)) != n:
            raise DataError(f"{path}:/record_id: record ids are not unique")
        patient_ids = _string_dataset(f, "patient_id", n, path) if "patient_id" in f else None
        labels = _labels(f, n, len(class_names), path)
        if "signals" not in f:
            raise DataError(f"{path}:/signals: missing; expected float32 [N, T, L] or [sum T, L] with /offsets")
        sig = f["signals"]
        variable = sig.ndim == 2
        if sig.ndim not in (2, 3) or sig.shape[-1] != len(leads) or (sig.ndim == 3 and sig.shape[0] != n) \
                or sig.dtype.kind != "f":
            raise DataError(f"{path}:/signals: is {sig.dtype} {sig.shape}, expected float [{n}, T, {len(leads)}] "
                            f"or [sum T, {len(leads)}] with /offsets (L = len(leads)); {PACK_HINT}")
        if variable:
            offsets = _offsets(f, n, sig.shape[0], path)
            lengths = np.diff(offsets)
        else:
            offsets, lengths = None, np.full(n, sig.shape[1], np.int64)
        record_fs = np.full(n, fs)
        if "fs" in f:
            if f["fs"].shape != (n,) or f["fs"].dtype.kind not in "iuf" or not (f["fs"][()] > 0).all():
                raise DataError(f"{path}:/fs: expected [{n}] rates > 0 in Hz, got {f['fs'].dtype} {f['fs'].shape}")
            record_fs = f["fs"][()].astype(np.float64)
        folds = None
        if "fold" in f:
            if f["fold"].shape != (n,) or f["fold"].dtype.kind not in "iu":
                raise DataError(f"{path}:/fold: expected [{n}] int, got {f['fold'].dtype} {f['fold'].shape}")
            folds = f["fold"][()].astype(np.int64)
    return Layout(path, variable, fs, leads, class_names, ids, patient_ids, labels, lengths, offsets,
                  record_fs, folds)


def _offsets(f: h5py.File, n: int, total: int, path: Path) -> np.ndarray:
    expected = f"int64 [{n + 1}] from 0 to {total}, non-decreasing"
    if "offsets" not in f:
        raise DataError(f"{path}:/offsets: missing; a 2-D /signals [sum T, L] needs {expected}; {PACK_HINT}")
    ds = f["offsets"]
    if ds.shape != (n + 1,) or ds.dtype.kind not in "iu":
        raise DataError(f"{path}:/offsets: is {ds.dtype} {ds.shape}, expected {expected}")
    offsets = ds[()].astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != total or (np.diff(offsets) < 0).any():
        raise DataError(f"{path}:/offsets: must be {expected}")
    return offsets
