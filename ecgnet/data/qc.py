"""Signal quality control: one record in, the first criterion it fails (or None) out.

Every dataset goes through it: the records of a non-lazy adapter as they are read
(``dataset.load_signals``, settings ``preprocess.qc``), the HDF5 adapter in its own streaming
pass over the file (``data.qc``). Criteria, each with its reason string (the key of
``RecordSet.skipped`` a rejected record is listed under):

- ``qc: missing or flat lead``: more than ``max_bad_leads`` leads that are all NaN (missing) or
  have a standard deviation below ``flat_std_mv`` (disconnected electrode);
- ``qc: NaN/inf samples``: more than ``max_nonfinite_fraction`` of the samples of the remaining
  leads are NaN or inf (those within the allowance are served as 0);
- ``qc: amplitude artefact``: more than ``max_amplitude_fraction`` of the samples lie further than
  ``amplitude_mv`` from their lead's median (saturation, electrode pops);
- ``qc: high-frequency noise``: the share of signal power above ``hf_cutoff_hz`` among all power
  above 0.5 Hz (all leads pooled, mean removed) exceeds ``max_hf_ratio`` (muscle or mains noise;
  checked only when the record's rate exceeds 2 x ``hf_cutoff_hz``). A clean ECG has 0.01-0.05,
  white noise of 0.2 mV on a 1 mV ECG about 0.5;
- ``empty record``: no samples (whether QC is on or not).

``amplitude_mv: null`` or ``max_hf_ratio: null`` turns one criterion off, ``enabled: false`` all
of them. The defaults are those of ``QCSettings``, except that ``preprocess.qc`` leaves the
high-frequency check off (``PREPROCESS_DEFAULTS``).

The thresholds in mV apply to signals in mV (the adapter contract). An adapter whose signals are in
other units sets its ``signal_units`` attribute to something else (e.g. ``"normalized"`` for beats
scaled to [0, 1]); then the amplitude criterion is skipped and a lead is flat only when constant.
"""
from __future__ import annotations

import typing
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..registry import ConfigError, check_type, hint

REASON_FS = "qc: non-standard fs"
REASON_FLAT = "qc: missing or flat lead"
REASON_NONFINITE = "qc: NaN/inf samples"
REASON_AMPLITUDE = "qc: amplitude artefact"
REASON_HF = "qc: high-frequency noise"
REASON_EMPTY = "empty record"
#: ``preprocess.qc`` differs from the class defaults only here: the high-frequency check is off unless
#: asked for, because noisy records are a class of their own in some datasets (CinC 2017 ``~``)
PREPROCESS_DEFAULTS = {"max_hf_ratio": None}
#: every reason ``qc_record`` returns (a skipped record's failure that is not one of these was unreadable)
REASONS = (REASON_FLAT, REASON_NONFINITE, REASON_AMPLITUDE, REASON_HF, REASON_EMPTY)


@dataclass(frozen=True)
class QCSettings:
    """One QC mapping (``data.qc`` of the HDF5 adapter, ``preprocess.qc`` of the others)."""
    enabled: bool = True
    flat_std_mv: float = 0.01
    max_bad_leads: int = 0
    max_nonfinite_fraction: float = 0.0
    amplitude_mv: Optional[float] = 10.0
    max_amplitude_fraction: float = 0.01
    hf_cutoff_hz: float = 40.0
    max_hf_ratio: Optional[float] = 0.5

    @classmethod
    def from_cfg(cls, cfg: Optional[dict], where: str = "data.qc", **defaults) -> "QCSettings":
        """Settings from a config mapping (keys checked and named as ``<where>.<key>``); ``defaults``
        replace the class defaults for keys the mapping leaves out."""
        types = typing.get_type_hints(cls)
        if cfg is not None and not isinstance(cfg, dict):
            raise ConfigError(f"{where}: expected a mapping of QC settings, got {cfg!r}")
        values = dict(defaults)
        for key, value in (cfg or {}).items():
            if key not in types:
                raise ConfigError(f"{where}.{key}: not a QC setting{hint(key, types)}")
            values[key] = check_type(value, types[key], f"{where}.{key}")
        return cls(**values)


def qc_record(x: np.ndarray, fs: float, qc: QCSettings, physical: bool = True) -> Optional[str]:
    """The first QC criterion ``x`` (samples, leads) fails, or None when it passes.

    ``physical``: the signal is in mV. Otherwise the mV thresholds mean nothing: a lead is flat
    only when it is constant, and the amplitude criterion is skipped.
    """
    if x.shape[0] == 0:
        return REASON_EMPTY
    if not qc.enabled:
        return None
    finite = np.isfinite(x)
    all_finite = bool(finite.all())
    missing = ~finite.any(axis=0)
    if all_finite:
        std, centre = x.std(axis=0), np.median(x, axis=0)
    else:
        masked = np.where(finite, x, np.nan)
        with warnings.catch_warnings():          # all-NaN leads warn; they are counted below
            warnings.simplefilter("ignore", RuntimeWarning)
            std, centre = np.nanstd(masked, axis=0), np.nanmedian(masked, axis=0)
    bad = missing | (~(std >= qc.flat_std_mv) if physical else ~(std > 0))
    if bad.sum() > qc.max_bad_leads:
        return REASON_FLAT
    present = ~missing
    if not all_finite and (~finite[:, present]).mean() > qc.max_nonfinite_fraction:
        return REASON_NONFINITE
    use = present & ~bad
    if not use.any():
        return None
    xs = np.where(finite[:, use], x[:, use], centre[use]) - centre[use]
    if physical and qc.amplitude_mv is not None and \
            (np.abs(xs) > qc.amplitude_mv).mean() > qc.max_amplitude_fraction:
        return REASON_AMPLITUDE
    if qc.max_hf_ratio is not None and fs > 2 * qc.hf_cutoff_hz and len(xs) > 1:
        power = np.abs(np.fft.rfft(xs - xs.mean(axis=0), axis=0)) ** 2
        freqs = np.fft.rfftfreq(len(xs), 1 / fs)
        total = power[freqs > 0.5].sum()
        if total > 0 and power[freqs > qc.hf_cutoff_hz].sum() / total > qc.max_hf_ratio:
            return REASON_HF
    return None
