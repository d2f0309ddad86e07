"""Reading a user's own recordings for ``tools/predict.py``: one file, or every recording in a folder.

Formats (by suffix):

* ``.hea``: WFDB (``.dat`` or any signal file its header names, including the CinC 2017/2020
  ``.mat``/``.hea`` pairs), read with ``wfdb.rdsamp`` in physical units (mV); a ``.mat`` is read
  through the ``.hea`` beside it (without one its rate, leads and gain are unknown).
* ``.h5``/``.hdf5``: ecgnet's HDF5 layout (``ecgnet.data.hdf5``): every record of the file.
* ``.csv``: one recording, a column per lead named in the header row, a row per sample, in mV;
  needs ``fs`` (a CSV carries no rate).
* ``.npy``: (leads, samples) for one recording or (records, leads, samples) for several, in mV at
  ``fs``; leads in ``leads`` order (default: the model's).
* ``.npz``: ``signal`` as for .npy, with optional ``fs`` and ``leads`` arrays.

Each item is a ``Recording`` or, for a file that cannot be read, a ``BadFile`` naming why, so a
folder goes on past one broken file.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import wfdb

from ..registry import DataError

SUFFIXES = (".hea", ".mat", ".h5", ".hdf5", ".csv", ".npy", ".npz")


@dataclass
class Recording:
    id: str
    signal: np.ndarray            # float32 (leads, samples), mV
    fs: float
    leads: Optional[list[str]]    # None: not named (NumPy without --leads), taken in the model's order
    source: str                   # the file it came from


@dataclass
class BadFile:
    source: str
    reason: str


Item = Union[Recording, BadFile]


def find_inputs(path: str | Path) -> list[Path]:
    """The recordings under ``path`` (a file, or a folder searched recursively), sorted; a ``.mat``
    with a ``.hea`` beside it is read through the header and not listed twice."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"--input {path}: no such file or directory")
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    headers = {p.with_suffix("") for p in found if p.suffix.lower() == ".hea"}
    found = [p for p in found if not (p.suffix.lower() == ".mat" and p.with_suffix("") in headers)]
    if not found:
        raise DataError(f"--input {path}: no recordings there (looked for {', '.join(SUFFIXES)})")
    return found


def read_inputs(paths: Sequence[Path], fs: Optional[float] = None, leads: Optional[Sequence[str]] = None
                ) -> Iterator[Item]:
    """Every recording of ``paths`` in order; ``fs``/``leads``: for formats that carry none (CSV, NumPy)."""
    for path in paths:
        try:
            yield from _read(path, fs, leads)
        except DataError as err:
            yield BadFile(str(path), str(err))
        except Exception as err:           # a corrupt file of any kind: reported, the rest still read
            yield BadFile(str(path), f"unreadable ({type(err).__name__}: {err})")


def _read(path: Path, fs: Optional[float], leads: Optional[Sequence[str]]) -> Iterator[Recording]:
    suffix = path.suffix.lower()
    if suffix in (".hea", ".mat"):
        yield _read_wfdb(path)
    elif suffix in (".h5", ".hdf5"):
        yield from _read_hdf5(path)
    elif suffix == ".csv":
        yield _read_csv(path, fs)
    elif suffix in (".npy", ".npz"):
        yield from _read_numpy(path, fs, leads)
    else:
        raise DataError(f"{path}: not a recording format predict reads ({', '.join(SUFFIXES)})")


def _read_wfdb(path: Path) -> Recording:
    base = path.with_suffix("")
    if not base.with_suffix(".hea").is_file():
        raise DataError(f"{path}: no {base.name}.hea beside it; the header gives the rate, leads and gain")
    try:
        signal, meta = wfdb.rdsamp(str(base))
    except (OSError, ValueError, IndexError) as err:
        raise DataError(f"{base}.hea: unreadable WFDB record ({err})") from None
    x = np.nan_to_num(np.ascontiguousarray(np.asarray(signal, np.float32).T))
    return Recording(base.name, x, float(meta["fs"]), [str(n) for n in meta["sig_name"]], str(path))


def _read_hdf5(path: Path) -> Iterator[Recording]:
    import h5py

    from .hdf5_layout import read_layout
    layout = read_layout(path)
    with h5py.File(path, "r") as f:
        signals = f["signals"]
        for r, rid in enumerate(layout.ids):
            if layout.variable:
                x = signals[layout.offsets[r]:layout.offsets[r + 1]]
            else:
                x = signals[r]
            yield Recording(rid, np.nan_to_num(np.ascontiguousarray(np.asarray(x, np.float32).T)),
                            float(layout.record_fs[r]), list(layout.leads), str(path))


def _need_fs(path: Path, fs: Optional[float]) -> float:
    if fs is None:
        raise DataError(f"{path}: this format carries no sampling rate; pass --fs (Hz)")
    return float(fs)


def _read_csv(path: Path, fs: Optional[float]) -> Recording:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header row of lead names and a row per sample")
    header = [h.strip() for h in rows[0]]
    try:
        x = np.array(rows[1:], dtype=np.float32).T
    except ValueError:
        raise DataError(f"{path}: expected numbers below the header row of lead names ({', '.join(header)})") \
            from None
    if x.shape[0] != len(header):
        raise DataError(f"{path}: {len(header)} lead names in the header but {x.shape[0]} columns")
    return Recording(path.stem, np.nan_to_num(np.ascontiguousarray(x)), _need_fs(path, fs), header, str(path))


def _read_numpy(path: Path, fs: Optional[float], leads: Optional[Sequence[str]]) -> Iterator[Recording]:
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "signal" not in z:
                raise DataError(f"{path}: expected an array named 'signal' (and optionally 'fs', 'leads')")
            x = np.asarray(z["signal"], np.float32)
            fs = float(z["fs"]) if "fs" in z else fs
            leads = [str(v) for v in z["leads"]] if "leads" in z else leads
    else:
        x = np.asarray(np.load(path, allow_pickle=False), np.float32)
    if x.ndim not in (2, 3):
        raise DataError(f"{path}: expected (leads, samples) or (records, leads, samples), got shape {x.shape}")
    fs = _need_fs(path, fs)
    many = x.ndim == 3
    x = x if many else x[None]
    names = list(leads) if leads is not None else None
    if names is not None and len(names) != x.shape[1]:
        raise DataError(f"{path}: {x.shape[1]} leads in the array but {len(names)} lead names given")
    for k, signal in enumerate(x):
        rid = f"{path.stem}#{k}" if many else path.stem
        # leads None: taken in the model's order (``select_leads``)
        yield Recording(rid, np.nan_to_num(np.ascontiguousarray(signal)), fs, names, str(path))


def _key(name: str) -> str:
    return name.strip().upper()


def lead_indices(available: Sequence[str], wanted: Sequence[str], where: str) -> list[int]:
    """Positions of the ``wanted`` leads among ``available``, matched by name (case-insensitive:
    PTB-XL's AVR is aVR); a missing one is a DataError that starts with ``where``."""
    position = {_key(n): i for i, n in enumerate(available)}
    missing = [lead for lead in wanted if _key(lead) not in position]
    if missing:
        raise DataError(f"{where} has no lead {', '.join(missing)} (it has {', '.join(available)}); "
                        f"the model needs {', '.join(wanted)}")
    return [position[_key(lead)] for lead in wanted]


def select_leads(rec: Recording, wanted: Sequence[str]) -> np.ndarray:
    """The model's leads of ``rec`` in the model's order, matched by name (case-insensitive); a
    recording without names (NumPy) must have exactly the model's number of leads, in its order."""
    if rec.leads is None:
        if rec.signal.shape[0] != len(wanted):
            raise DataError(f"{rec.source}: {rec.signal.shape[0]} leads, the model takes {len(wanted)} "
                            f"({', '.join(wanted)}); pass --leads to name the array's leads")
        return rec.signal
    return rec.signal[lead_indices(rec.leads, wanted, f"{rec.source}: record {rec.id}")]
