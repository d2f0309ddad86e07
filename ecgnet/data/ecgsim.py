"""A small physiological simulator of multi-lead ECGs with labelled abnormalities.

Every beat is a sum of Gaussian waves P, Q, R, S, T placed relative to its R peak: a
time-domain version of the morphology of ECGSYN (McSharry et al., IEEE TBME 2003). Each
wave is one source signal; a lead sees it through a per-patient projection (mV), so a
record is ``gains @ sources`` plus noise. Only the eight independent leads I, II and
V1-V6 are modelled; III = II - I, aVR = -(I + II)/2, aVL = I - II/2 and aVF = II - I/2
are derived, as an electrocardiograph does, so Einthoven's law holds for every part of
the signal, noise included. Everything is drawn from the ``numpy.random.Generator``
passed in, so a record is fully determined by it.

Normal sinus rhythm (numbers as used)
    * Heart rate: the patient's base rate, 60-95 bpm, times a per-record factor
      exp(N(0, 0.03)), kept within 60-98 bpm.
    * Heart-rate variability: RR_n = RR * (1 + a_rsa sin(2 pi f_resp t) + a_lf sin(2 pi f_lf t)
      + N(0, s)), respiratory sinus arrhythmia a_rsa = 3-5 % at f_resp = 0.20-0.33 Hz (damped
      below RR = 0.6 s), Mayer waves a_lf = 0-2 % at 0.08-0.12 Hz, jitter s = 0.5-1.5 %.
      Respiration also modulates the beat amplitudes by 3-8 %.
    * Waves (R at t = 0): Q at -25..-30 ms, R at 0, S at +25..+30 ms with sigma 8-12 ms
      (QRS 80-100 ms); P with sigma 20-28 ms and a PR interval (P onset to QRS onset) of
      130-190 ms, shortening as RR**0.15; T peak at 0.26-0.31 s * sqrt(RR) (Bazett), an
      asymmetric Gaussian (sigma 45-60 ms before the peak, 60-80 % of that after) whose
      widths also scale with sqrt(RR). RR is the interval preceding the beat.
    * Lead projections: typical adult amplitudes (R 1.2 mV in II, 1.5 mV in V5; QRS and T
      negative in aVR; rS in V1-V2, RS transition at V3; septal q in I, V5, V6), per patient
      scaled by 0.75-1.3 (QRS), 0.7-1.2 (P), 0.7-1.3 (T), a log-normal factor (sd 0.12) and an offset
      (sd 0.015 mV) per wave and lead, and the frontal QRS axis rotated by N(0, 12 deg)
      (at most 30 deg). Each record rescales the waves by a further exp(N(0, 0.05)).

Abnormalities (``RHYTHM_LABELS``)
    * ``brady``: 38-55 bpm; ``tachy``: 105-160 bpm (the two are exclusive).
    * ``AF``: no P waves; RR drawn i.i.d. log-normal around the mean with a coefficient of
      variation of 0.15-0.30, clipped to [max(0.25 s, 0.4 RR), 2.5 RR]; ventricular rate
      62-98 bpm unless brady/tachy. Fibrillatory f-waves: two atrial sources at 4-9 Hz whose
      frequency wanders by about 0.3-0.7 Hz and amplitude by up to 35 % (0.02-0.3 Hz
      modulations), with a second harmonic for a saw-tooth shape; 0.03-0.10 mV (second
      source 30-70 % of that) in whichever of II, III, aVF, V1 shows them most, nearly
      always V1, which sits next to the atria; about half of that in III and aVF.
    * ``PVC``: max(1, round(duration/10 s * U(1, 3))) premature ventricular beats, each
      replacing a sinus beat at 0.55-0.75 of the RR interval; no P wave (the sinus P falls,
      non-conducted, at its usual time), a 140-210 ms QRS of three Gaussians (sigma 15-28
      ms) from a per-patient ectopic focus (RV outflow tract, LV free wall, RV apex or LV
      base, +-20 deg; a dipole of 1.4-2.2 mV scaled with the patient's QRS size), a T wave
      opposite to the QRS (30-45 % of it) and a full compensatory pause (the next sinus
      beat keeps its time). Records shorter than about two beats may hold none.
    * ``wide_qrs``: bundle-branch block, per patient RBBB or LBBB: Q, R, S widths x1.5-1.8
      and offsets x1.25, plus a late R' (RBBB: +50-60 ms, rightward-anterior, rsR' in V1 and
      a broad S in I/V6; LBBB: +45-55 ms, leftward-posterior, broad notched R in I/V6, QS in
      V1, no septal q): QRS 130-160 ms (RBBB) or 140-220 ms (LBBB) in place of 85-100 ms;
      T waves turned against the terminal QRS.

Noise: white Gaussian noise of sd ``noise_mv`` per independent lead; baseline wander of
1-2 sinusoids at 0.05-0.5 Hz totalling about ``baseline_wander_mv`` (40-100 % per lead);
with probability 0.3 a 50 or 60 Hz power-line component of 0.2-1 x ``noise_mv``. The
signal starts at a random phase of the cardiac cycle. Waves pass a Gaussian anti-alias
filter (sigma 0.5/fs) so low sampling rates (e.g. 100 Hz) see smooth, area-preserving
waves. Lead subsets: a patient sampled for some leads has exactly the gains of the
12-lead patient from the same generator state, and a record the same rows.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np

__all__ = ["STANDARD_LEADS", "RHYTHM_LABELS", "WAVES", "Patient", "sample_patient", "simulate_ecg"]

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
RHYTHM_LABELS = ("AF", "PVC", "brady", "tachy", "wide_qrs")  # abnormalities
WAVES = ("P", "Q", "R", "S", "T")

NORMAL_BASE_HR_BPM = (60.0, 95.0)
NORMAL_HR_LIMITS_BPM = (60.0, 98.0)
AF_HR_BPM = (62.0, 98.0)
BRADY_HR_BPM = (38.0, 55.0)
TACHY_HR_BPM = (105.0, 160.0)

_SQRT3_2 = math.sqrt(3.0) / 2.0

# Independent leads: I, II, V1..V6 (the "basis"). Rows of _DERIVE map them onto STANDARD_LEADS.
_DERIVE = np.zeros((12, 8))
_DERIVE[0, 0] = 1.0                      # I
_DERIVE[1, 1] = 1.0                      # II
_DERIVE[2, :2] = (-1.0, 1.0)             # III = II - I
_DERIVE[3, :2] = (-0.5, -0.5)            # aVR = -(I + II) / 2
_DERIVE[4, :2] = (1.0, -0.5)             # aVL = I - II / 2
_DERIVE[5, :2] = (-0.5, 1.0)             # aVF = II - I / 2
_DERIVE[6:, 2:] = np.eye(6)              # V1..V6

# Typical amplitudes (mV) of P, Q, R, S, T in I, II, V1..V6. Q is the septal wave (r in V1-V3,
# q in I/V5/V6); in V1/V2 the "R" gain is negative: the S of an rS complex.
_CANONICAL_GAINS = np.array([
    #  I      II     V1     V2     V3     V4     V5     V6
    [0.10, 0.18, 0.06, 0.08, 0.08, 0.08, 0.08, 0.07],         # P
    [-0.08, -0.05, 0.20, 0.30, 0.25, 0.00, -0.10, -0.10],     # Q
    [0.75, 1.20, -0.90, -1.30, 0.50, 1.40, 1.50, 1.10],       # R
    [-0.10, -0.20, -0.30, -0.50, -0.90, -0.60, -0.30, -0.10],  # S
    [0.25, 0.35, 0.05, 0.45, 0.45, 0.40, 0.35, 0.25],         # T
])

# Lead vectors for dipole sources (x: left, y: inferior, z: anterior); precordial leads lie
# near the horizontal plane at the given angle from the left axis towards anterior, with a
# proximity gain.
_V_ANGLE_DEG = np.array([115.0, 95.0, 75.0, 55.0, 30.0, 5.0])
_V_GAIN = np.array([1.0, 1.4, 1.5, 1.4, 1.2, 1.0])
_V_INFERIOR = np.array([0.0, 0.0, 0.1, 0.2, 0.25, 0.3])
_LEAD_VECTORS_BASIS = np.vstack([
    [1.0, 0.0, 0.0],
    [0.5, _SQRT3_2, 0.0],
    np.column_stack([_V_GAIN * np.cos(np.radians(_V_ANGLE_DEG)), _V_INFERIOR,
                     _V_GAIN * np.sin(np.radians(_V_ANGLE_DEG))]),
])
_LEAD_VECTORS = _DERIVE @ _LEAD_VECTORS_BASIS            # (12, 3)
# Atrial sources sit posterior-superior, next to V1: extra weight there for f-waves.
_ATRIAL_PROXIMITY = np.array([1, 1, 1, 1, 1, 1, 1.5, 0.8, 0.55, 0.4, 0.3, 0.3])
_AF_LEADS = [1, 2, 5, 6]                 # II, III, aVF, V1: f-wave amplitude is set there

# Ectopic foci for PVCs: RV outflow tract, LV free wall, RV apex, LV base.
_PVC_FOCI = np.array([[0.2, 0.9, -0.4], [-0.5, -0.4, 0.75], [-0.3, -0.7, -0.6], [0.6, 0.5, 0.6]])
_RBBB_DIR = np.array([-0.5, 0.05, 0.85])
_LBBB_DIR = np.array([0.75, 0.15, -0.65])

# Source rows of the record's gain matrix.
_SRC_P, _SRC_Q, _SRC_R, _SRC_S, _SRC_T, _SRC_RPRIME = 0, 1, 2, 3, 4, 5
_SRC_PVC = (6, 7, 8, 9)                  # early, main, late QRS component, T
_SRC_F = (10, 11)
_N_PULSE_SRC, _N_SRC = 10, 12


@dataclass(frozen=True, eq=False)
class Patient:
    """Per-patient morphology, shared by that patient's records.

    Times are relative to the R peak; the P and T entries of ``wave_times_s`` and the T
    width hold for RR = 1 s (P moves as RR**0.15, T and its widths as sqrt(RR)). Gains are
    in mV, one column per lead of ``leads``.
    """
    leads: tuple[str, ...]
    lead_gains: np.ndarray      # (5, n_leads) projections of P, Q, R, S, T on each lead
    base_hr_bpm: float
    wave_times_s: np.ndarray    # (5,) centres of P, Q, R, S, T
    wave_widths_s: np.ndarray   # (5,) Gaussian sigmas (T: before its peak)
    t_wave_asymmetry: float     # T sigma after the peak / sigma before
    pvc_gains: np.ndarray       # (5, n_leads) ectopic beat: P (zero), early, main, late QRS, T
    pvc_times_s: np.ndarray     # (5,)
    pvc_widths_s: np.ndarray    # (5,)
    bbb_type: str               # "RBBB" or "LBBB", shown by records with wide_qrs
    bbb_gains: np.ndarray       # (n_leads,) the late R' wave of the bundle-branch block
    bbb_time_s: float
    bbb_width_s: float
    bbb_widen: float            # factor on the Q, R, S widths
    af_gains: np.ndarray        # (2, n_leads) projections of the two f-wave sources


def _hint(word, choices: Sequence[str]) -> str:
    lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(lower), n=1, cutoff=0.5)
    return f"; did you mean '{lower[close[0]]}'?" if close else f"; choose from {', '.join(choices)}"


def _lead_indices(leads: Sequence[str]) -> np.ndarray:
    if isinstance(leads, str):
        leads = (leads,)
    leads = tuple(leads)
    if not leads:
        raise ValueError("leads: give at least one lead")
    for lead in leads:
        if lead not in STANDARD_LEADS:
            raise ValueError(f"unknown lead '{lead}'{_hint(lead, STANDARD_LEADS)}")
    return np.array([STANDARD_LEADS.index(lead) for lead in leads])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def sample_patient(rng: np.random.Generator, leads: Sequence[str] = STANDARD_LEADS) -> Patient:
    """Draw one patient's heart rate, intervals and lead projections for ``leads``."""
    sel = _lead_indices(leads)
    derive, vectors = _DERIVE[sel], _LEAD_VECTORS[sel]

    base_hr = rng.uniform(*NORMAL_BASE_HR_BPM)
    pr = rng.uniform(0.13, 0.19)
    sig_p = rng.uniform(0.020, 0.028)
    t_q, t_s = -rng.uniform(0.025, 0.030), rng.uniform(0.025, 0.030)
    sig_q, sig_r, sig_s = rng.uniform(0.008, 0.010), rng.uniform(0.010, 0.012), rng.uniform(0.010, 0.012)
    t_p = (t_q - 2 * sig_q) - pr + 2 * sig_p           # PR: P onset (-2 sd) to QRS onset
    t_t, sig_t = rng.uniform(0.26, 0.31), rng.uniform(0.045, 0.060)
    asym = rng.uniform(0.6, 0.8)

    basis = _CANONICAL_GAINS.copy()
    basis[0] *= rng.uniform(0.7, 1.2)
    basis[1:4] *= rng.uniform(0.75, 1.3)
    basis[4] *= rng.uniform(0.7, 1.3)
    basis *= np.exp(0.12 * rng.standard_normal(basis.shape))
    basis += 0.015 * rng.standard_normal(basis.shape)
    delta = math.radians(float(np.clip(rng.normal(0.0, 12.0), -30.0, 30.0)))
    x, y = basis[:, 0], (basis[:, 1] - 0.5 * basis[:, 0]) / _SQRT3_2
    x, y = x * math.cos(delta) - y * math.sin(delta), x * math.sin(delta) + y * math.cos(delta)
    basis[:, 0], basis[:, 1] = x, 0.5 * x + _SQRT3_2 * y

    # Ectopic focus of this patient's PVCs.
    focus = _unit(_PVC_FOCI[rng.integers(len(_PVC_FOCI))] + 0.3 * rng.standard_normal(3))
    magnitude = rng.uniform(1.4, 2.2) * np.abs(basis[2]).mean() / np.abs(_CANONICAL_GAINS[2]).mean()
    main = vectors @ focus * magnitude
    early = vectors @ _unit(focus + 0.9 * rng.standard_normal(3)) * magnitude * rng.uniform(0.2, 0.4)
    late = vectors @ _unit(-0.6 * focus + rng.standard_normal(3)) * magnitude * rng.uniform(0.2, 0.4)
    pvc_t = -rng.uniform(0.30, 0.45) * main + 0.02 * rng.standard_normal(12)[sel]
    pvc_gains = np.vstack([np.zeros(len(sel)), early, main, late, pvc_t])
    pvc_times = np.array([0.0, -rng.uniform(0.028, 0.036), 0.0, rng.uniform(0.032, 0.045),
                          rng.uniform(0.28, 0.34)])
    pvc_widths = np.array([0.02, rng.uniform(0.015, 0.020), rng.uniform(0.022, 0.028),
                           rng.uniform(0.018, 0.024), rng.uniform(0.060, 0.075)])

    # Bundle-branch block shown when a record has wide_qrs.
    if rng.random() < 0.5:
        bbb_type, direction = "RBBB", _RBBB_DIR
        bbb_time, bbb_width, bbb_mag = rng.uniform(0.050, 0.060), rng.uniform(0.014, 0.018), rng.uniform(0.5, 0.9)
    else:
        bbb_type, direction = "LBBB", _LBBB_DIR
        bbb_time, bbb_width, bbb_mag = rng.uniform(0.045, 0.055), rng.uniform(0.020, 0.025), rng.uniform(0.6, 1.0)
    bbb_gains = vectors @ _unit(direction + 0.2 * rng.standard_normal(3)) * bbb_mag
    bbb_widen = rng.uniform(1.5, 1.8)

    # Two atrial fibrillatory sources, mostly inferior and anterior (II, III, aVF, V1).
    af1 = _unit(np.array([-0.25, 0.7, 0.65]) + 0.2 * rng.standard_normal(3))
    af2 = _unit(np.array([0.0, 0.5, 0.85]) + 0.3 * rng.standard_normal(3))
    af_all = np.vstack([_LEAD_VECTORS @ af1, _LEAD_VECTORS @ af2]) * _ATRIAL_PROXIMITY
    af_gains = af_all[:, sel] / np.abs(af_all[:, _AF_LEADS]).max(1, keepdims=True)

    return Patient(
        leads=tuple(STANDARD_LEADS[i] for i in sel), lead_gains=_frozen(basis @ derive.T),
        base_hr_bpm=float(base_hr),
        wave_times_s=_frozen([t_p, t_q, 0.0, t_s, t_t]),
        wave_widths_s=_frozen([sig_p, sig_q, sig_r, sig_s, sig_t]), t_wave_asymmetry=float(asym),
        pvc_gains=_frozen(pvc_gains), pvc_times_s=_frozen(pvc_times), pvc_widths_s=_frozen(pvc_widths),
        bbb_type=bbb_type, bbb_gains=_frozen(bbb_gains), bbb_time_s=float(bbb_time),
        bbb_width_s=float(bbb_width), bbb_widen=float(bbb_widen), af_gains=_frozen(af_gains))


def _check_labels(abnormalities: Collection[str]) -> frozenset:
    if isinstance(abnormalities, str):
        abnormalities = (abnormalities,)
    labels = frozenset(abnormalities)
    for label in labels:
        if label not in RHYTHM_LABELS:
            raise ValueError(f"unknown abnormality '{label}'{_hint(label, RHYTHM_LABELS)}")
    if {"brady", "tachy"} <= labels:
        raise ValueError("abnormalities: 'brady' and 'tachy' exclude each other")
    return labels


def _pick_pvcs(rng: np.random.Generator, t: np.ndarray, duration_s: float) -> np.ndarray:
    """Indices of sinus beats to replace by PVCs, each between two conducted beats."""
    n_pvc = max(1, int(round(duration_s / 10.0 * rng.uniform(1.0, 3.0))))
    k = np.arange(1, len(t) - 1)
    strict = k[(t[k - 1] >= 0.05) & (t[k + 1] <= duration_s - 0.05)]
    loose = k[(t[k - 1] >= -0.3) & (t[k - 1] + 0.5 * (t[k] - t[k - 1]) < duration_s)]
    chosen: list[int] = []
    for pool in (strict, loose):
        for i in rng.permutation(pool):
            if len(chosen) == n_pvc:
                break
            if all(abs(int(i) - j) >= 2 for j in chosen):
                chosen.append(int(i))
        if chosen:
            break
    return np.array(sorted(chosen), dtype=int)


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for a few rows, without BLAS: its threads cost far more than this work."""
    return np.einsum("ij,jn->in", a, b)


def _smooth_walk(rng: np.random.Generator, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A slowly varying zero-mean signal of about unit amplitude: two random sinusoids."""
    f = rng.uniform(lo, hi, 2)
    phase = rng.uniform(0, 2 * np.pi, 2)
    return (np.sin(2 * np.pi * f[0] * t + phase[0]) + np.sin(2 * np.pi * f[1] * t + phase[1])) / math.sqrt(2)


def simulate_ecg(rng: np.random.Generator, patient: Patient, fs: float, duration_s: float,
                 abnormalities: Collection[str] = (), noise_mv: float = 0.02,
                 baseline_wander_mv: float = 0.15) -> np.ndarray:
    """-> float32 array (n_leads, round(fs*duration_s)) in mV."""
    labels = _check_labels(abnormalities)
    fs, duration_s = float(fs), float(duration_s)
    if not (fs > 0 and math.isfinite(fs)) or not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"fs and duration_s must be positive, got {fs} and {duration_s}")
    if noise_mv < 0 or baseline_wander_mv < 0:
        raise ValueError("noise_mv and baseline_wander_mv must be >= 0")
    n = int(round(fs * duration_s))
    if n < 1:
        raise ValueError(f"fs * duration_s = {fs * duration_s} gives no samples")
    af, pvc, wide = "AF" in labels, "PVC" in labels, "wide_qrs" in labels
    sel = _lead_indices(patient.leads)

    # --- ventricular rhythm --------------------------------------------------------------
    if "brady" in labels:
        hr = rng.uniform(*BRADY_HR_BPM)
    elif "tachy" in labels:
        hr = rng.uniform(*TACHY_HR_BPM)
    elif af:
        hr = rng.uniform(*AF_HR_BPM)
    else:
        hr = float(np.clip(patient.base_hr_bpm * math.exp(rng.normal(0.0, 0.03)), *NORMAL_HR_LIMITS_BPM))
    rr0 = 60.0 / hr
    f_resp, phi_resp, resp_depth = rng.uniform(0.20, 0.33), rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.08)
    t_first = -1.0 - rng.random() * rr0                # random phase of the cycle at t = 0
    if af:
        rr_min, rr_max = max(0.25, 0.4 * rr0), 2.5 * rr0
    else:
        rr_min = 0.8 * rr0
    n_beats = int(math.ceil((duration_s + 1.5 - t_first) / rr_min)) + 2
    if af:
        cv = rng.uniform(0.15, 0.30)
        s = math.sqrt(math.log1p(cv * cv))
        rr = np.clip(rr0 * np.exp(rng.normal(-0.5 * s * s, s, n_beats)), rr_min, rr_max)
    else:
        t_approx = t_first + rr0 * np.arange(n_beats)
        a_rsa = rng.uniform(0.03, 0.05) * min(1.0, rr0 / 0.6)
        a_lf, f_lf, phi_lf = rng.uniform(0.0, 0.02), rng.uniform(0.08, 0.12), rng.uniform(0, 2 * np.pi)
        jitter = rng.uniform(0.005, 0.015)
        rr = rr0 * (1.0 + a_rsa * np.sin(2 * np.pi * f_resp * t_approx + phi_resp)
                    + a_lf * np.sin(2 * np.pi * f_lf * t_approx + phi_lf)
                    + jitter * rng.standard_normal(n_beats))
        rr = np.maximum(rr, rr_min)
    t_beat = t_first + np.concatenate([[0.0], np.cumsum(rr[:-1])])
    keep = t_beat < duration_s + 0.4
    t_beat, rr = t_beat[keep], rr[keep]
    prev_rr = np.concatenate([[rr0], rr[:-1]])          # interval preceding each beat

    is_pvc = np.zeros(len(t_beat), bool)
    blocked_p = np.empty(0)
    if pvc:
        idx = _pick_pvcs(rng, t_beat, duration_s)
        coupling = rng.uniform(0.55, 0.75, len(idx))
        blocked_p = t_beat[idx]                         # sinus P waves that are not conducted
        t_beat = t_beat.copy()
        t_beat[idx] = t_beat[idx - 1] + coupling * (t_beat[idx] - t_beat[idx - 1])
        prev_rr = np.diff(np.concatenate([[t_beat[0] - prev_rr[0]], t_beat]))
        is_pvc[idx] = True

    # --- wave events: (source, centre, sigma before, sigma after, amplitude) ------------
    def resp(tt: np.ndarray) -> np.ndarray:           # respiratory amplitude modulation
        return 1.0 + resp_depth * np.sin(2 * np.pi * f_resp * tt + phi_resp + 1.0)

    times, widths = patient.wave_times_s, patient.wave_widths_s
    qrs_t, qrs_w = times[1:4].copy(), widths[1:4].copy()
    if wide:
        qrs_t *= 1.25
        qrs_w *= patient.bbb_widen
    events = []

    def add(src, centre, sig_l, sig_r, amp):
        centre = np.atleast_1d(centre)
        b = np.broadcast_arrays(centre, sig_l, sig_r, amp)
        events.append((np.full(len(centre), src), *b))

    tn, rrn = t_beat[~is_pvc], np.clip(prev_rr[~is_pvc], 0.3, 2.0)
    an = resp(tn)
    if not af:
        p_t = np.concatenate([tn + times[0] * rrn ** 0.15, blocked_p + times[0] * rr0 ** 0.15])
        add(_SRC_P, p_t, widths[0], widths[0], resp(p_t))
    for src, dt, w in zip((_SRC_Q, _SRC_R, _SRC_S), qrs_t, qrs_w):
        add(src, tn + dt, w, w, an)
    if wide:
        add(_SRC_RPRIME, tn + patient.bbb_time_s, patient.bbb_width_s, patient.bbb_width_s, an)
    sq = np.sqrt(rrn)
    sig_t = widths[4] * sq
    add(_SRC_T, tn + times[4] * sq, sig_t, sig_t * patient.t_wave_asymmetry, an)
    if is_pvc.any():
        tv = t_beat[is_pvc]
        av = resp(tv)
        for src, dt, w in zip(_SRC_PVC[:3], patient.pvc_times_s[1:4], patient.pvc_widths_s[1:4]):
            add(src, tv + dt, w, w, av)
        sq = math.sqrt(min(max(rr0, 0.3), 2.0))
        w = patient.pvc_widths_s[4] * sq
        add(_SRC_PVC[3], tv + patient.pvc_times_s[4] * sq, w, w * patient.t_wave_asymmetry, av)

    src, centre, sig_l, sig_r, amp = (np.concatenate(parts) for parts in zip(*events))
    # Gaussian anti-alias filter (sigma 0.5/fs), area-preserving.
    sig_aa2 = (0.5 / fs) ** 2
    sig_l2, sig_r2 = np.sqrt(sig_l ** 2 + sig_aa2), np.sqrt(sig_r ** 2 + sig_aa2)
    amp = amp * 2.0 / (sig_l2 / sig_l + sig_r2 / sig_r)
    sources = np.zeros((_N_SRC, n))
    flat_idx, flat_val = [], []
    for s_id in np.unique(src):
        m = src == s_id
        c, sl, sr, a = centre[m], sig_l2[m], sig_r2[m], amp[m]
        half = int(math.ceil(4.5 * max(sl.max(), sr.max()) * fs)) + 1
        i0 = np.rint(c * fs).astype(np.int64)
        inside = (i0 + half >= 0) & (i0 - half < n)
        if not inside.any():
            continue
        c, sl, sr, a, i0 = c[inside], sl[inside], sr[inside], a[inside], i0[inside]
        idx = i0[:, None] + np.arange(-half, half + 1)[None, :]
        dt = idx / fs - c[:, None]
        sig = np.where(dt < 0, sl[:, None], sr[:, None])
        val = a[:, None] * np.exp(-0.5 * (dt / sig) ** 2)
        ok = (idx >= 0) & (idx < n)
        flat_idx.append(s_id * n + idx[ok])
        flat_val.append(val[ok])
    if flat_idx:
        sources[:_N_PULSE_SRC] = np.bincount(np.concatenate(flat_idx), np.concatenate(flat_val),
                                             minlength=_N_SRC * n)[:_N_PULSE_SRC * n].reshape(_N_PULSE_SRC, n)

    t = np.arange(n) / fs
    if af:
        base_f = rng.uniform(4.5, 8.0)
        amp0 = rng.uniform(0.03, 0.10)
        for k, s_id in enumerate(_SRC_F):
            f0 = base_f if k == 0 else float(np.clip(base_f * rng.uniform(0.8, 1.2), 4.2, 8.8))
            depth = rng.uniform(0.3, 0.7)
            f_inst = np.clip(f0 + depth * _smooth_walk(rng, t, 0.02, 0.2), 4.0, 9.0)
            phase = 2 * np.pi * np.cumsum(f_inst) / fs + rng.uniform(0, 2 * np.pi)
            a = amp0 * (1.0 if k == 0 else rng.uniform(0.3, 0.7))
            a_t = a * (1.0 + rng.uniform(0.1, 0.35) * _smooth_walk(rng, t, 0.05, 0.3))
            h2 = rng.uniform(0.1, 0.35)
            sources[s_id] = a_t * (np.sin(phase) + h2 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))

    # --- projection onto the leads ------------------------------------------------------
    gains = np.zeros((len(sel), _N_SRC))
    lead_gains = patient.lead_gains * np.exp(0.05 * rng.standard_normal((5, 1)))
    gains[:, :5] = lead_gains.T
    if wide:
        gains[:, _SRC_RPRIME] = patient.bbb_gains
        gains[:, _SRC_T] = 0.5 * lead_gains[4] - 0.35 * patient.bbb_gains
        if patient.bbb_type == "LBBB":
            gains[:, _SRC_Q] = 0.0                     # no septal q / initial r
    gains[:, _SRC_PVC[0]:_SRC_PVC[-1] + 1] = patient.pvc_gains[1:].T
    gains[:, _SRC_F[0]:_SRC_F[-1] + 1] = patient.af_gains.T
    active = np.flatnonzero(np.abs(sources).max(axis=1) > 0)
    ecg = _mix(gains[:, active], sources[active])

    # --- noise, on the eight independent leads, then derived ------------------------------
    derive = _DERIVE[sel]
    n_comp = int(rng.integers(1, 3))
    bw_f = rng.uniform(0.05, 0.5, n_comp)
    bw_phase = rng.uniform(0, 2 * np.pi, n_comp)
    bw_amp = baseline_wander_mv / math.sqrt(n_comp) * rng.uniform(0.4, 1.0, (8, n_comp))
    bw_shift = rng.normal(0.0, 0.3, (8, n_comp))
    arg = 2 * np.pi * bw_f[:, None] * t[None, :] + bw_phase[:, None]
    coef = np.hstack([bw_amp * np.cos(bw_shift), bw_amp * np.sin(bw_shift)])   # (8, 2 n_comp)
    basis_noise = _mix(coef, np.vstack([np.sin(arg), np.cos(arg)]))
    line_on, line_f = rng.random() < 0.3, (50.0, 60.0)[int(rng.integers(2))]
    line_amp, line_phase = noise_mv * rng.uniform(0.2, 1.0, 8), rng.uniform(0, 2 * np.pi, 8)
    if line_on and noise_mv > 0 and line_f < fs / 2:
        atten = math.exp(-0.5 * (2 * np.pi * line_f * 0.5 / fs) ** 2)
        basis_noise += atten * line_amp[:, None] * np.sin(2 * np.pi * line_f * t[None, :] + line_phase[:, None])
    if noise_mv > 0:
        basis_noise += noise_mv * rng.standard_normal((8, n))
    ecg += _mix(derive, basis_noise)
    return ecg.astype(np.float32)
