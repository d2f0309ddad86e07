"""The ECG simulator: shapes, determinism, lead algebra, and the physiology each label stands for.

Every physiological claim is measured from the waveform the way one would on a real ECG
(R peaks with scipy.signal.find_peaks, RR statistics, averaged beats, spectra), on several
patients, so a regression in the model shows up as a failed measurement.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.signal import butter, detrend, find_peaks, peak_widths, sosfiltfilt

from ecgnet.data.ecgsim import RHYTHM_LABELS, STANDARD_LEADS, Patient, sample_patient, simulate_ecg

FS = 500.0
CLEAN = {"noise_mv": 0.005, "baseline_wander_mv": 0.0}
II, AVR, V1, V6 = (STANDARD_LEADS.index(name) for name in ("II", "aVR", "V1", "V6"))


def patient(seed: int, leads=STANDARD_LEADS) -> Patient:
    return sample_patient(np.random.default_rng([seed, 7]), leads)


def record(seed: int, abnormalities=(), duration_s: float = 10.0, fs: float = FS, pat_seed=None,
           **kwargs) -> np.ndarray:
    pat = patient(seed if pat_seed is None else pat_seed)
    return simulate_ecg(np.random.default_rng([seed, 8]), pat, fs, duration_s, abnormalities,
                        **{**CLEAN, **kwargs})


def r_peaks(x: np.ndarray, fs: float = FS) -> np.ndarray:
    """R peaks of a lead with upright QRS (lead II): find_peaks on the 8-30 Hz band, where
    QRS complexes stand out from P and T waves, moved to the raw maximum within 30 ms."""
    band = sosfiltfilt(butter(2, (8.0, 30.0), "bandpass", fs=fs, output="sos"), x.astype(np.float64))
    peaks, _ = find_peaks(band, height=0.35 * band.max(), distance=int(0.25 * fs))
    w = int(0.03 * fs)
    return np.array([max(p - w, 0) + int(np.argmax(x[max(p - w, 0):p + w])) for p in peaks], dtype=int)


def qrs_peaks(ecg: np.ndarray, fs: float = FS) -> np.ndarray:
    """Beats of any morphology (normal or ectopic): peaks of the 5-30 Hz energy over all leads,
    smoothed over 40 ms, at least 300 ms apart and above 13 % of the typical beat (T waves,
    slow, stay below 10 %; ectopic beats, slower than normal ones but larger, above 17 %)."""
    band = sosfiltfilt(butter(2, (5.0, 30.0), "bandpass", fs=fs, output="sos"), ecg.astype(np.float64), axis=1)
    energy = np.convolve((band ** 2).sum(0), np.ones(int(0.04 * fs)) / int(0.04 * fs), mode="same")
    peaks, props = find_peaks(energy, height=0.05 * energy.max(), distance=int(0.3 * fs))
    return peaks[props["peak_heights"] > 0.13 * np.median(props["peak_heights"])]


def rr_intervals(peaks: np.ndarray, fs: float = FS) -> np.ndarray:
    return np.diff(peaks) / fs


def average_beat(x: np.ndarray, peaks: np.ndarray, before_s: float, after_s: float, fs: float = FS):
    b, a = int(before_s * fs), int(after_s * fs)
    beats = [x[p - b:p + a] for p in peaks if p - b >= 0 and p + a <= len(x)]
    return np.arange(-b, a) / fs, np.mean(beats, axis=0)


# --- shapes, determinism, leads -------------------------------------------------------------

@pytest.mark.parametrize("fs,duration_s,leads,abnormalities", [
    (500, 10.0, STANDARD_LEADS, ()),
    (100, 10.0, STANDARD_LEADS, ("AF", "PVC")),
    (250, 2.5, ("II",), ("tachy", "wide_qrs")),
    (360, 7.3, ("V1", "I", "aVF"), ("brady", "PVC")),
    (128, 30.0, ("III", "V6"), ("AF", "tachy", "PVC", "wide_qrs")),
    (1000, 0.5, STANDARD_LEADS, ("PVC",)),
])
def test_shape_dtype_and_range(fs, duration_s, leads, abnormalities):
    pat = sample_patient(np.random.default_rng(0), leads)
    assert pat.lead_gains.shape == (5, len(leads)) and pat.leads == tuple(leads)
    x = simulate_ecg(np.random.default_rng(1), pat, fs, duration_s, abnormalities)
    assert x.shape == (len(leads), round(fs * duration_s))
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert 0.3 < np.abs(x).max() < 8.0          # millivolts: beats are there, nothing explodes


def test_same_seed_same_record_other_seed_other_record():
    a = simulate_ecg(np.random.default_rng(5), patient(1), FS, 10.0, ("AF", "PVC"))
    b = simulate_ecg(np.random.default_rng(5), patient(1), FS, 10.0, ("AF", "PVC"))
    c = simulate_ecg(np.random.default_rng(6), patient(1), FS, 10.0, ("AF", "PVC"))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05
    assert not np.allclose(patient(1).lead_gains, patient(2).lead_gains, atol=0.02)


def test_lead_subset_is_the_same_rows_of_the_12_lead_record():
    subset = ("aVR", "V1", "II")
    full_p, sub_p = patient(3), patient(3, subset)
    cols = [STANDARD_LEADS.index(name) for name in subset]
    np.testing.assert_allclose(sub_p.lead_gains, full_p.lead_gains[:, cols], atol=1e-12)
    full = simulate_ecg(np.random.default_rng(9), full_p, FS, 5.0, ("PVC",))
    sub = simulate_ecg(np.random.default_rng(9), sub_p, FS, 5.0, ("PVC",))
    np.testing.assert_allclose(sub, full[cols], atol=1e-5)


def test_einthoven_and_goldberger_hold_for_the_whole_signal():
    x = simulate_ecg(np.random.default_rng(2), patient(2), FS, 10.0, ("AF", "wide_qrs"))
    lead = {name: x[i].astype(np.float64) for i, name in enumerate(STANDARD_LEADS)}
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=1e-5)
    np.testing.assert_allclose(lead["aVR"], -(lead["I"] + lead["II"]) / 2, atol=1e-5)
    np.testing.assert_allclose(lead["aVL"], lead["I"] - lead["II"] / 2, atol=1e-5)
    np.testing.assert_allclose(lead["aVF"], lead["II"] - lead["I"] / 2, atol=1e-5)


def test_bad_arguments_are_rejected():
    pat = patient(0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="exclude"):
        simulate_ecg(rng, pat, FS, 10.0, ("brady", "tachy"))
    with pytest.raises(ValueError, match="did you mean 'AF'"):
        simulate_ecg(rng, pat, FS, 10.0, ("af",))
    with pytest.raises(ValueError, match="unknown lead"):
        sample_patient(rng, ("II", "V7"))
    with pytest.raises(ValueError):
        simulate_ecg(rng, pat, 0.0, 10.0)
    assert set(RHYTHM_LABELS) == {"AF", "PVC", "brady", "tachy", "wide_qrs"}


# --- rate and rhythm ------------------------------------------------------------------------

@pytest.mark.parametrize("abnormalities,low,high", [
    ((), 58.0, 100.0), (("brady",), 36.0, 57.0), (("tachy",), 102.0, 163.0)])
def test_heart_rate_from_r_peaks_is_in_the_band(abnormalities, low, high):
    rates = []
    for seed in range(6):
        peaks = r_peaks(record(seed, abnormalities)[II])
        rates.append(60.0 / rr_intervals(peaks).mean())
    assert all(low <= hr <= high for hr in rates), rates
    assert np.ptp(rates) > 3.0                    # rates vary between records


def test_af_rr_is_irregularly_irregular_and_sinus_is_not():
    cv = {}
    for name, abn in (("sinus", ()), ("AF", ("AF",))):
        values = []
        for seed in range(6):
            rr = rr_intervals(r_peaks(record(seed, abn, duration_s=20.0)[II]))
            values.append(rr.std() / rr.mean())
        cv[name] = np.array(values)
    assert (cv["AF"] > 0.10).all(), cv
    assert (cv["sinus"] < 0.07).all() and (cv["sinus"] > 0.005).all(), cv   # variable, not a metronome
    assert cv["AF"].min() > 2 * cv["sinus"].max()


def test_signal_starts_at_a_random_phase_of_the_cycle():
    first = [r_peaks(record(seed, ())[II])[0] / FS for seed in range(12)]
    assert np.std(first) > 0.1 and min(first) < 0.3 < max(first)


def test_pvc_records_have_premature_beats_with_compensatory_pauses():
    for seed in range(6):
        for duration_s, min_pairs in ((10.0, 1), (30.0, 3)):
            rr = rr_intervals(qrs_peaks(record(seed, ("PVC",), duration_s=duration_s)))
            median = np.median(rr)
            pairs = [(a, b) for a, b in zip(rr[:-1], rr[1:]) if a < 0.82 * median and b > 1.1 * median]
            assert len(pairs) >= min_pairs, (seed, duration_s, rr)
            for a, b in pairs:                    # full compensation: short + long ~ two cycles
                assert abs((a + b) / (2 * median) - 1) < 0.12, (seed, a, b, median)
        # without PVCs there is no such pair
        rr = rr_intervals(qrs_peaks(record(seed, ())))
        assert not any(a < 0.82 * np.median(rr) for a in rr)


def test_pvc_beats_are_wide_with_discordant_t_waves():
    for seed in range(5):
        x = record(seed, ("PVC",), noise_mv=0.0)
        peaks = qrs_peaks(x)
        rr_before = np.diff(peaks)
        premature = [p for p, rr in zip(peaks[1:], rr_before) if rr < 0.8 * np.median(rr_before)]
        normal = [p for p, rr in zip(peaks[1:], rr_before) if abs(rr / np.median(rr_before) - 1) < 0.1]
        assert premature and normal
        duration = {kind: np.median([qrs_duration(x, p) for p in beats])
                    for kind, beats in (("pvc", premature), ("normal", normal))}
        assert duration["pvc"] >= 0.12 and duration["pvc"] > duration["normal"] + 0.03, duration
        # in the lead with the largest ectopic QRS, the T wave points the other way
        p = premature[0]
        qrs = x[:, p - int(0.06 * FS):p + int(0.06 * FS)]
        lead = int(np.abs(qrs).max(1).argmax())
        qrs_sign = np.sign(qrs[lead, np.abs(qrs[lead]).argmax()])
        st_t = x[lead, p + int(0.15 * FS):p + int(0.45 * FS)]
        assert np.sign(st_t[np.abs(st_t).argmax()]) == -qrs_sign


# --- morphology -----------------------------------------------------------------------------

def qrs_duration(ecg: np.ndarray, peak: int, fs: float = FS) -> float:
    """Span around ``peak`` where the spatial velocity exceeds 10 % of its maximum."""
    speed = np.sqrt((np.gradient(ecg[:, max(peak - int(0.12 * fs), 0):peak + int(0.12 * fs)], axis=1) ** 2).sum(0))
    above = np.nonzero(speed > 0.1 * speed.max())[0]
    return (above[-1] - above[0]) / fs


def test_wide_qrs_is_at_least_120ms_and_normal_qrs_is_narrow():
    for seed in range(6):
        normal = record(seed, (), noise_mv=0.0)
        wide = record(seed, ("wide_qrs",), noise_mv=0.0)
        pn, pw = r_peaks(normal[II]), r_peaks(wide[II])
        inner = lambda p: p[(p > 0.2 * FS) & (p < normal.shape[1] - 0.2 * FS)]  # noqa: E731
        dur_n = np.median([qrs_duration(normal, p) for p in inner(pn)])
        dur_w = np.median([qrs_duration(wide, p) for p in inner(pw)])
        assert 0.07 <= dur_n < 0.11 and dur_w >= 0.12, (seed, dur_n, dur_w)
        # and the R wave of lead II is broader at half its prominence
        width_n = np.median(peak_widths(normal[II], pn, rel_height=0.5)[0]) / FS
        width_w = np.median(peak_widths(wide[II], pw, rel_height=0.5)[0]) / FS
        assert width_w > 1.3 * width_n, (seed, width_n, width_w)


def test_avr_qrs_is_opposite_to_lead_ii_and_v1_is_rs():
    for seed in range(8):
        x = record(seed, ())
        for p in r_peaks(x[II]):
            assert x[AVR, p] < -0.2 < 0.4 < x[II, p]
        qrs = lambda lead: np.concatenate([x[lead, p - 25:p + 25] for p in r_peaks(x[II])[1:-1]])  # noqa: E731
        assert qrs(II).sum() > 0 > qrs(AVR).sum()
        assert qrs(V1).min() < -0.3 and -qrs(V1).min() > qrs(V1).max()     # rS: deep S, small r
        assert qrs(V6).max() > -qrs(V6).min()                                # V6: tall R


def p_wave(x: np.ndarray) -> tuple[float, float]:
    """(prominence, lead time before R) of the largest bump 80-260 ms before R in the average beat."""
    t, beat = average_beat(x, r_peaks(x), 0.3, 0.1)
    window = (t > -0.26) & (t < -0.08)
    peaks, props = find_peaks(beat[window], prominence=0.0)
    if len(peaks) == 0:
        return 0.0, np.nan
    best = props["prominences"].argmax()
    return float(props["prominences"][best]), float(-t[window][peaks[best]])


def test_sinus_beats_have_p_waves_and_af_beats_do_not():
    for seed in range(6):
        height, lead_time = p_wave(record(seed, (), duration_s=20.0, pat_seed=seed)[II])
        assert height > 0.05, (seed, height)
        assert 0.08 < lead_time < 0.25, (seed, lead_time)   # P peak precedes R by a PR-like interval
        af_height, _ = p_wave(record(seed, ("AF",), duration_s=20.0, pat_seed=seed)[II])
        assert af_height < 0.35 * height, (seed, height, af_height)


def band_power_outside_qrst(ecg: np.ndarray, lead: int, lo: float, hi: float) -> float:
    """Mean ``lo``-``hi`` Hz power of ``lead`` in the TQ intervals: each QRS-T (R - 70 ms ..
    R + 450 ms) is bridged by a straight line before filtering and left out of the mean."""
    x = ecg[lead].astype(np.float64)
    keep = np.ones(len(x), bool)
    for p in r_peaks(ecg[II]):
        keep[max(p - int(0.07 * FS), 0):p + int(0.45 * FS)] = False
    idx = np.arange(len(x))
    x = np.interp(idx, idx[keep], x[keep])
    x = sosfiltfilt(butter(4, (lo, hi), "bandpass", fs=FS, output="sos"), x)
    return float(np.mean(x[keep] ** 2))


def unlocked_atrial_power(ecg: np.ndarray, lead: int, lo: float, hi: float) -> float:
    """``lo``-``hi`` Hz power of ``lead`` 300-80 ms before each R that is not locked to the
    QRS: the mean segment (a sinus P wave) is subtracted, each residual detrended."""
    peaks = r_peaks(ecg[II])
    segs = np.array([ecg[lead, p - int(0.3 * FS):p - int(0.08 * FS)] for p in peaks if p >= 0.3 * FS],
                    dtype=np.float64)
    resid = detrend(segs - segs.mean(0), axis=1) * np.hanning(segs.shape[1])
    power = np.abs(np.fft.rfft(resid, n=4 * segs.shape[1], axis=1)) ** 2
    freqs = np.fft.rfftfreq(4 * segs.shape[1], 1 / FS)
    return float(power[:, (freqs >= lo) & (freqs <= hi)].sum(1).mean())


def test_af_has_fibrillatory_waves_at_4_to_9_hz():
    """f-waves: more 4-9 Hz power in V1 between the beats than a sinus P wave gives, and,
    unlike a P wave, none of it is locked to the QRS."""
    tq, unlocked = [], []
    for seed in range(6):
        af, sinus = record(seed, ("AF",), duration_s=20.0), record(seed, (), duration_s=20.0)
        tq.append(band_power_outside_qrst(af, V1, 4.0, 9.0) / band_power_outside_qrst(sinus, V1, 4.0, 9.0))
        unlocked.append(unlocked_atrial_power(af, V1, 4.0, 9.0) / unlocked_atrial_power(sinus, V1, 4.0, 9.0))
    assert np.median(tq) > 3.0, tq   # fine f-waves can match a large P wave in some patients
    assert min(unlocked) > 20.0, unlocked


def test_qt_follows_bazett():
    """Beat by beat in AF (irregular RR, no P waves), the T wave peaks later after a longer
    preceding RR: T latency ~ RR**0.5."""
    for seed in range(4):
        x = record(seed, ("AF",), duration_s=30.0, pat_seed=seed)
        lead = sosfiltfilt(butter(2, 5.0, fs=FS, output="sos"), x[II].astype(np.float64))  # damp f-waves
        peaks = r_peaks(x[II])
        prev_rr, latency = [], []
        for before, p, after in zip(peaks[:-2], peaks[1:-1], peaks[2:]):
            window = lead[p + int(0.12 * FS):p + int(min(0.6, (after - p) / FS - 0.1) * FS)]
            if len(window) > 2 and 0 < window.argmax() < len(window) - 1:        # a T peak
                prev_rr.append((p - before) / FS)
                latency.append(0.12 + window.argmax() / FS)
        slope = np.polyfit(np.log(prev_rr), np.log(latency), 1)[0]
        assert len(prev_rr) > 15 and 0.4 < slope < 0.6, (seed, len(prev_rr), slope)   # 0: fixed, 1: linear


# --- noise ----------------------------------------------------------------------------------

def test_noise_settings_mean_what_they_say():
    pat = patient(4)
    clean = simulate_ecg(np.random.default_rng(3), pat, FS, 20.0, (), noise_mv=0.0, baseline_wander_mv=0.0)
    noisy = simulate_ecg(np.random.default_rng(3), pat, FS, 20.0, (), noise_mv=0.05, baseline_wander_mv=0.3)
    residual = (noisy - clean)[[0, 1] + list(range(6, 12))].astype(np.float64)  # independent leads
    slow = sosfiltfilt(butter(2, 1.0, fs=FS, output="sos"), residual, axis=1)
    fast = residual - slow
    assert 0.04 < fast.std() < 0.07                                # white noise ~ noise_mv
    assert 0.05 < slow.std(axis=1).mean() and np.abs(slow).max() < 0.6   # wander ~ baseline_wander_mv
    spectrum = np.abs(np.fft.rfft(slow, axis=1)).mean(0)
    freqs = np.fft.rfftfreq(slow.shape[1], 1 / FS)
    assert 0.04 <= freqs[spectrum.argmax()] <= 0.55               # wander at 0.05-0.5 Hz


def test_simulation_is_fast():
    pat = patient(0)
    rng = np.random.default_rng(0)
    simulate_ecg(rng, pat, FS, 10.0, ("AF", "PVC", "wide_qrs"))
    start = time.perf_counter()
    for _ in range(20):
        simulate_ecg(rng, pat, FS, 10.0, ("AF", "PVC", "wide_qrs"))
    assert (time.perf_counter() - start) / 20 < 0.05   # ~2 ms on one core; generous for CI
