"""Why a model decided: attribution of one class's probability over each lead and time, through Captum.

* ``integrated_gradients`` (Sundararajan et al. 2017): per lead and sample, from a flat-line (0 mV)
  baseline to the recording; the attributions of a window add up to p(window) - p(flat line).
* ``gradcam`` (Selvaraju et al. 2017) on the network's last convolution: one map over time, shared by
  the leads, upsampled to the input's samples.
* ``attention``: ``se_attention1d``'s own temporal attention weights, upsampled likewise.

The model is the calibrated probability function ``Predictor.probability_model`` (normalisation
inside), applied window by window as in evaluation; overlapping windows' attributions are averaged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from .data.transforms import crop_or_pad, window_starts  # noqa: E402
from .registry import ConfigError  # noqa: E402

METHODS = ("integrated_gradients", "gradcam", "attention")


@dataclass
class Explanation:
    record: str
    class_name: str
    method: str
    probability: float                  # the record's probability of the class (windows combined)
    signal: np.ndarray                  # (leads, samples) mV at fs, as the model saw it
    attribution: np.ndarray             # (leads, samples); gradcam / attention: the same row for every lead
    fs: float
    leads: list[str]


def _last_conv(model: nn.Module) -> nn.Module:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    if not convs:
        raise ConfigError("--method gradcam: this network has no Conv1d layer to take Grad-CAM from")
    return convs[-1]


def _upsample(row: torch.Tensor, samples: int) -> np.ndarray:
    """(steps,) -> (samples,) by linear interpolation over the window."""
    return torch.nn.functional.interpolate(row.reshape(1, 1, -1).float(), size=samples, mode="linear",
                                           align_corners=False).reshape(-1).detach().numpy()


def _window_attribution(prob_model, x: torch.Tensor, target: int, method: str, steps: int) -> np.ndarray:
    """One window (1, leads, samples) -> (leads, samples)."""
    leads, samples = x.shape[1:]
    if method == "integrated_gradients":
        from captum.attr import IntegratedGradients
        ig = IntegratedGradients(prob_model)
        attr = ig.attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps,
                            internal_batch_size=steps)
        return attr[0].detach().numpy()
    maps = []
    for k, model in enumerate(prob_model.models):
        if method == "gradcam":
            from captum.attr import LayerGradCam

            def forward(signal, k=k):          # model k alone, as ProbabilityModel applies it
                return prob_model.single(signal, k)
            cam = LayerGradCam(forward, _last_conv(model)).attribute(x, target=target, relu_attributions=True)
            maps.append(_upsample(cam[0].sum(0), samples))
        else:
            if not hasattr(model, "attention"):
                raise ConfigError(f"--method attention: model '{type(model).__name__}' has no attention weights "
                                  "(se_attention1d has); use integrated_gradients or gradcam")
            with torch.no_grad():
                weights = model.attention(prob_model.normalize(x, k))
            maps.append(_upsample(weights[0], samples))
    return np.repeat(np.mean(maps, 0)[None], leads, axis=0)


def explain_signal(predictor, signal: np.ndarray, record: str, class_name: Optional[str] = None,
                   method: str = "integrated_gradients", steps: int = 32) -> Explanation:
    """Attribution of ``class_name`` (default: the most probable class) over a preprocessed record
    ``signal`` (leads, samples) at ``predictor.fs``."""
    if method not in METHODS:
        raise ConfigError(f"--method {method}: choose one of {', '.join(METHODS)}")
    probs = predictor.score_signals([signal])[0][0]
    if class_name is None:
        target = int(np.argmax(probs))
    elif class_name in predictor.class_names:
        target = predictor.class_names.index(class_name)
    else:
        raise ConfigError(f"--class {class_name}: not a class of the model ({', '.join(predictor.class_names[:20])})")
    prob_model = predictor.probability_model()
    samples = signal.shape[1]
    window = samples if predictor.full_length else predictor.window
    total = np.zeros(signal.shape, np.float64)
    count = np.zeros(samples, np.float64)
    for start in window_starts(samples, window, predictor.stride if not predictor.full_length else window):
        piece = crop_or_pad(signal[:, start:start + window], window)
        x = torch.from_numpy(np.array(piece, np.float32))[None]      # a copy: the signal may be a read-only memmap
        attr = _window_attribution(prob_model, x, target, method, steps)
        real = min(window, samples - start)
        total[:, start:start + real] += attr[:, :real]
        count[start:start + real] += 1
    attribution = (total / np.maximum(count, 1)).astype(np.float32)
    return Explanation(record, predictor.class_names[target], method, float(probs[target]), signal, attribution,
                       predictor.fs, list(predictor.leads))


def plot_explanation(e: Explanation, path: Path, title: Optional[str] = None) -> None:
    """Every lead's trace (mV) over time with its attribution as a colour band behind it: red where the
    signal raises the class's probability, blue where it lowers it (signed methods), white where neutral."""
    leads, samples = e.signal.shape
    t = np.arange(samples) / e.fs
    scale = float(np.abs(e.attribution).max()) or 1.0
    signed = e.method == "integrated_gradients"
    fig, axes = plt.subplots(leads, 1, figsize=(12, 1.1 * leads + 1), sharex=True, squeeze=False)
    for k, ax in enumerate(axes[:, 0]):
        x = e.signal[k]
        low, high = float(x.min()), float(x.max())
        pad = 0.1 * (high - low or 1.0)
        ax.imshow(e.attribution[k][None], aspect="auto", cmap="bwr" if signed else "Reds",
                  vmin=-scale if signed else 0, vmax=scale, extent=(0, samples / e.fs, low - pad, high + pad),
                  interpolation="nearest", alpha=0.8)
        ax.plot(t, x, color="black", lw=0.6)
        ax.set_ylabel(e.leads[k], rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    what = {"integrated_gradients": "integrated gradients (red: raises, blue: lowers p)",
            "gradcam": "Grad-CAM on the last convolution", "attention": "attention weights"}[e.method]
    fig.suptitle(title or f"{e.record}: p({e.class_name}) = {e.probability:.3f}; {what}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_explanation(e: Explanation, out_dir: Path) -> tuple[Path, Path]:
    """``<record>_<class>.png`` and ``.npz`` (signal, attribution, fs, leads, class, method, probability)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{e.record}_{e.class_name}".replace("/", "_").replace("#", "_")
    png, npz = out_dir / f"{stem}.png", out_dir / f"{stem}.npz"
    plot_explanation(e, png)
    np.savez_compressed(npz, signal=e.signal, attribution=e.attribution, fs=e.fs, leads=np.array(e.leads),
                        class_name=e.class_name, method=e.method, probability=e.probability)
    return png, npz


def explain_file(ckpt: str | Path, input_path: str | Path, class_name: Optional[str] = None,
                 method: str = "integrated_gradients", out: Optional[str | Path] = None, fs: Optional[float] = None,
                 steps: int = 32) -> list[tuple[Explanation, Path, Path]]:
    """``tools/explain.py``: every recording of ``input_path`` (read as predict reads it) explained."""
    from .data.recordings import BadFile, find_inputs, read_inputs
    from .engine.predictor import Predictor
    from .registry import DataError
    predictor = Predictor(ckpt, device="cpu", amp="off")      # gradients in full precision
    out_dir = Path(out) if out else Path(predictor.run_dir) / "explain"
    done = []
    for item in read_inputs(find_inputs(input_path), fs):
        if isinstance(item, BadFile):
            raise DataError(item.reason)
        predictor.check_input(item)
        e = explain_signal(predictor, predictor.prepare(item), item.id, class_name, method, steps)
        done.append((e, *save_explanation(e, out_dir)))
    (out_dir / "explanations.json").write_text(json.dumps(
        [{"record": e.record, "class": e.class_name, "probability": e.probability, "method": e.method,
          "png": str(png), "arrays": str(npz)} for e, png, npz in done], indent=1) + "\n")
    return done
