"""Pack any adapter's records into one file in ecgnet's HDF5 layout (described in :mod:`ecgnet.data.hdf5`).

``pack_adapter`` reads every record through ``adapter.load``, applies the ``preprocess``
section's once-per-record steps (``fs`` resampling, ``bandpass_hz``; not normalisation, which is
fitted on the training split at training time) and writes the records with their ids, patient
ids, labels, class names, leads, rate and predefined folds. ``write_hdf5`` is the writer, for
your own arrays: give it a :class:`RecordSet` and the signals.

Records stream to a temporary file in the variable-length layout (``/signals [sum T, L]`` +
``/offsets``); when every record has the same length the file is rewritten record by record in
the fixed layout (``/signals [N, T, L]``, one record per chunk). The result is renamed into
place at the end, so an interrupted pack leaves no half-written file under the final name.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional

import h5py
import numpy as np
from tqdm import tqdm

from ..registry import ConfigError, DataError
from .base import ECGAdapter, RecordSet
from .hdf5_layout import FORMAT, VERSION
from .transforms import preprocess

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 << 10          # variable layout: rows per chunk give about this many bytes


def _tmp_path(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}.{os.getpid()}.tmp")


def write_hdf5(path: str | Path, records: RecordSet, signals: Iterable[tuple[int, np.ndarray]], fs: float,
               overwrite: bool = False, compression: Optional[str] = None) -> dict:
    """Write ``signals`` ((position in ``records``, float32 (leads, samples)) pairs, in any
    subset and order) with the matching metadata of ``records`` to ``path``.

    Returns a summary: path, records, layout (fixed/variable), samples, bytes.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"--out {path}: already exists; delete it, choose another path or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    n_leads = len(records.leads)
    rows = max(1, CHUNK_BYTES // (4 * n_leads))
    stream, final = _tmp_path(path, "stream"), _tmp_path(path, "pack")
    kept, lengths = [], []
    try:
        with h5py.File(stream, "w") as f:
            ds = f.create_dataset("signals", shape=(0, n_leads), maxshape=(None, n_leads), dtype=np.float32,
                                  chunks=(rows, n_leads), compression=compression)
            for i, x in signals:
                if x.ndim != 2 or x.shape[0] != n_leads:
                    raise DataError(f"record {records.ids[i]}: shape {x.shape}, expected ({n_leads}, samples)")
                start = ds.shape[0]
                ds.resize(start + x.shape[1], axis=0)
                ds[start:] = x.T
                kept.append(i)
                lengths.append(x.shape[1])
        if not kept:
            raise DataError("no record could be read; nothing to pack")
        kept_idx = np.asarray(kept, np.int64)
        fixed = len(set(lengths)) == 1
        if fixed:
            _copy_fixed(stream, final, len(kept), lengths[0], n_leads, compression)
            stream.unlink()
        else:
            os.replace(stream, final)
        with h5py.File(final, "a") as f:
            if not fixed:
                f.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            _write_meta(f, records, kept_idx, fs)
        os.replace(final, path)
    finally:
        for tmp in (stream, final):
            tmp.unlink(missing_ok=True)
    return {"path": str(path), "records": len(kept), "layout": "fixed" if fixed else "variable",
            "samples": int(sum(lengths)), "bytes": path.stat().st_size}


def _copy_fixed(src: Path, dst: Path, n: int, length: int, n_leads: int, compression: Optional[str]) -> None:
    """Rewrite the streamed [sum T, L] signals as [N, T, L], one record per chunk."""
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        out = fout.create_dataset("signals", shape=(n, length, n_leads), dtype=np.float32,
                                  chunks=(1, length, n_leads), compression=compression)
        sig = fin["signals"]
        per_block = max(1, (16 << 20) // max(1, length * n_leads * 4))
        for start in range(0, n, per_block):
            stop = min(n, start + per_block)
            out[start:stop] = sig[start * length:stop * length].reshape(stop - start, length, n_leads)


def _write_meta(f: h5py.File, records: RecordSet, kept: np.ndarray, fs: float) -> None:
    text = h5py.string_dtype()
    f.attrs["format"] = FORMAT
    f.attrs["version"] = VERSION
    f.attrs["fs"] = float(fs)
    f.attrs["leads"] = list(records.leads)
    f.attrs["class_names"] = list(records.class_names)
    f.create_dataset("record_id", data=[records.ids[i] for i in kept], dtype=text)
    f.create_dataset("patient_id", data=[str(records.groups[i]) for i in kept], dtype=text)
    labels = records.labels[kept]
    f.create_dataset("labels", data=labels.astype(np.uint8) if records.multilabel else labels.astype(np.int64))
    if records.folds is not None:
        f.create_dataset("fold", data=np.asarray(records.folds)[kept].astype(np.int64))


def _read_records(adapter: ECGAdapter, records: RecordSet, preprocess_cfg: dict, failed: dict,
                  progress: bool) -> Iterator[tuple[int, np.ndarray]]:
    for i in tqdm(range(len(records.ids)), desc="packing", disable=not progress, leave=False):
        try:
            x = adapter.load(i)
            if x.ndim != 2 or x.shape[1] == 0 or not np.isfinite(x).all():
                raise DataError(f"record {records.ids[i]}: expected finite (leads, samples), got shape {x.shape}")
        except DataError as err:
            if adapter.strict:
                raise
            failed[records.ids[i]] = str(err)
            continue
        yield i, np.asarray(preprocess(x, records.fs, preprocess_cfg), np.float32)


def pack_adapter(adapter: ECGAdapter, out: str | Path, preprocess_cfg: dict, overwrite: bool = False,
                 compression: Optional[str] = None, progress: bool = False) -> dict:
    """Pack every readable record of ``adapter`` into ``out``; ``preprocess_cfg`` is a resolved
    ``preprocess`` section (its ``fs``, ``bandpass_hz`` and ``filter_order`` apply).

    Unreadable records are skipped and listed (an error when the adapter is strict). Returns
    ``write_hdf5``'s summary plus ``failed`` ({id: reason}) and ``skipped`` (the adapter's own).
    """
    records = adapter.records()
    fs = preprocess_cfg.get("fs") or records.fs
    failed: dict[str, str] = {}
    summary = write_hdf5(out, records, _read_records(adapter, records, preprocess_cfg, failed, progress), fs,
                         overwrite, compression)
    if failed:
        reasons = list(failed.values())
        log.warning("skipped %d unreadable record(s): %s%s", len(failed), "; ".join(reasons[:5]),
                    " ..." if len(reasons) > 5 else "")
    return {**summary, "fs": fs, "failed": failed, "skipped": {k: len(v) for k, v in records.skipped.items()}}
