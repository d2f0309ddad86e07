"""``synthetic``: the built-in default dataset, generated on the fly (no download).

Records come from :mod:`ecgnet.data.ecgsim`, a small physiological model, with
abnormalities a network has to learn from the waveform: atrial fibrillation
(irregular RR, no P waves, f-waves), premature ventricular beats, brady- and
tachycardia, wide QRS. Patients share morphology across their records, so the
patient-grouped splits matter here as they do on real data. Fully determined by
``seed``: record i is the same whatever else is generated.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import numpy as np

from ..registry import DATASETS, ConfigError
from .base import ECGAdapter, RecordSet
from .ecgsim import RHYTHM_LABELS, STANDARD_LEADS, sample_patient, simulate_ecg

NORMAL = "NORM"


@DATASETS.register("synthetic")
class SyntheticECG(ECGAdapter):
    """
    Args:
        num_records: records to generate.
        fs, duration_s: sampling rate (Hz) and length; with ``max_duration_s`` the length of
            each record is drawn from [duration_s, max_duration_s].
        leads: any of I II III aVR aVL aVF V1-V6.
        mode: ``multilabel`` (abnormalities co-occur; NORM when none) or ``single_label``
            (one class per record).
        prevalence: probability of AF, PVC, brady, tachy, wide_qrs (in ``single_label`` mode,
            class shares; NORM gets the rest). Unequal values make an imbalanced dataset.
        records_per_patient: records that share one patient's morphology.
    """

    def __init__(self, num_records: int = 2000, fs: float = 100.0, duration_s: float = 10.0,
                 max_duration_s: Optional[float] = None, leads: Sequence[str] = STANDARD_LEADS,
                 mode: Literal["multilabel", "single_label"] = "multilabel",
                 prevalence: Sequence[float] = (0.15, 0.15, 0.1, 0.1, 0.12),
                 records_per_patient: int = 2, noise_mv: float = 0.03, seed: int = 0):
        unknown = [lead for lead in leads if lead not in STANDARD_LEADS]
        if unknown:
            raise ConfigError(f"data.leads: unknown lead(s) {unknown}; choose from {list(STANDARD_LEADS)}")
        if len(prevalence) != len(RHYTHM_LABELS) or not all(0 <= p <= 1 for p in prevalence):
            raise ConfigError(f"data.prevalence: give {len(RHYTHM_LABELS)} probabilities for {list(RHYTHM_LABELS)}")
        if mode == "single_label" and sum(prevalence) > 1:
            raise ConfigError("data.prevalence: in single_label mode the shares must sum to at most 1")
        if num_records < 10:
            raise ConfigError("data.num_records: need at least 10 records")
        self.fs, self.duration_s, self.max_duration_s = fs, duration_s, max_duration_s
        self.leads, self.mode, self.noise_mv, self.seed = list(leads), mode, noise_mv, seed
        self.record_length_s = None if max_duration_s else duration_s
        rng = np.random.default_rng([seed, 0])
        self.abnormalities = self._draw_labels(rng, num_records, np.asarray(prevalence))
        self.durations = (rng.uniform(duration_s, max_duration_s, num_records) if max_duration_s
                          else np.full(num_records, duration_s))
        self.patient_of = np.arange(num_records) // max(records_per_patient, 1)
        self.class_names = [NORMAL, *RHYTHM_LABELS]
        self._records = self._record_set(num_records)

    def _draw_labels(self, rng, n: int, prevalence: np.ndarray) -> list[tuple[str, ...]]:
        if self.mode == "single_label":
            shares = np.concatenate([[1 - prevalence.sum()], prevalence])
            picks = rng.choice(len(shares), size=n, p=shares)
            return [() if k == 0 else (RHYTHM_LABELS[k - 1],) for k in picks]
        draws = rng.random((n, len(RHYTHM_LABELS))) < prevalence
        brady, tachy = RHYTHM_LABELS.index("brady"), RHYTHM_LABELS.index("tachy")
        draws[draws[:, brady], tachy] = False          # one heart rate per record
        return [tuple(name for name, on in zip(RHYTHM_LABELS, row) if on) for row in draws]

    def _record_set(self, n: int) -> RecordSet:
        if self.mode == "single_label":
            labels = np.array([self.class_names.index(a[0]) if a else 0 for a in self.abnormalities], np.int64)
        else:
            labels = np.zeros((n, len(self.class_names)), np.float32)
            for i, abn in enumerate(self.abnormalities):
                for name in abn or (NORMAL,):
                    labels[i, self.class_names.index(name)] = 1
        return RecordSet(ids=[f"syn{i:05d}" for i in range(n)],
                         groups=[f"patient{p:05d}" for p in self.patient_of],
                         labels=labels, class_names=self.class_names, fs=self.fs, leads=self.leads)

    def records(self) -> RecordSet:
        return self._records

    def load(self, index: int) -> np.ndarray:
        patient = sample_patient(np.random.default_rng([self.seed, 2, int(self.patient_of[index])]), self.leads)
        rng = np.random.default_rng([self.seed, 1, index])
        return simulate_ecg(rng, patient, self.fs, float(self.durations[index]),
                            abnormalities=self.abnormalities[index], noise_mv=self.noise_mv)
