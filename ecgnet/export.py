"""Export a trained model to ONNX or TorchScript: ``tools/export.py``.

The exported graph takes one batch of windows, ``signal``: float32 (batch, leads, samples) in mV at the
model's rate, already resampled and band-passed as its ``preprocess`` section says, and returns
``probabilities`` (batch, classes): the checkpoint's normalisation, the network, the calibration
temperature and the sigmoid (multi-label) or softmax, all inside; a k-fold run becomes one graph that
averages its folds' probabilities. The batch is always dynamic, the length too where the network's
shape arithmetic allows (``metadata["dynamic_length"]``; otherwise windows of exactly
``window_samples``). What stays outside (reading, resampling, band-pass, windows, combining a
record's windows, thresholds) is described in the metadata embedded in the file: class names, rate,
leads, window and stride, aggregation, thresholds, temperatures, normalisation, preprocessing.
"""
from __future__ import annotations

import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from .registry import ConfigError
from .reports import write_atomic

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "ecgnet"                 # ONNX metadata_props key / TorchScript extra file name (JSON)
OPSET = 18
MIN_SAMPLES = 64                        # shortest window the dynamic-length export promises to take


class ProbabilityModel(nn.Module):
    """Windows in mV -> calibrated probabilities, for one model or the mean of several (k folds)."""

    def __init__(self, models: Sequence[nn.Module], normalizers: Sequence[dict], temperatures: Sequence,
                 multilabel: bool):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.multilabel = multilabel
        self.modes = [n["mode"] for n in normalizers]
        for k, (n, t) in enumerate(zip(normalizers, temperatures)):
            mean = torch.zeros(1) if n["mean"] is None else torch.tensor(n["mean"], dtype=torch.float32)[:, None]
            std = torch.ones(1) if n["std"] is None else torch.tensor(n["std"], dtype=torch.float32)[:, None]
            self.register_buffer(f"mean{k}", mean)
            self.register_buffer(f"std{k}", std)
            self.register_buffer(f"inv_temperature{k}", torch.ones(1) if t is None
                                 else 1.0 / torch.tensor(t, dtype=torch.float32))

    def normalize(self, signal: torch.Tensor, k: int) -> torch.Tensor:
        """Model ``k``'s input normalisation, as ``Normalizer`` does it."""
        if self.modes[k] == "per_lead":
            return (signal - getattr(self, f"mean{k}")) / getattr(self, f"std{k}")
        if self.modes[k] == "per_record":       # population std over the window, + 1e-6
            mean = signal.mean(dim=-1, keepdim=True)
            return (signal - mean) / (((signal - mean) ** 2).mean(dim=-1, keepdim=True).sqrt() + 1e-6)
        return signal

    def single(self, signal: torch.Tensor, k: int) -> torch.Tensor:
        """Model ``k``'s calibrated probabilities."""
        z = self.models[k](self.normalize(signal, k)).float() * getattr(self, f"inv_temperature{k}")
        return torch.sigmoid(z) if self.multilabel else torch.softmax(z, dim=1)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        out = [self.single(signal, k) for k in range(len(self.models))]
        return out[0] if len(out) == 1 else torch.stack(out).mean(0)


def load_for_export(ckpt: str | Path) -> tuple[ProbabilityModel, dict]:
    """The checkpoint(s) of ``ckpt`` as one ``ProbabilityModel`` (eval mode, CPU) and the metadata."""
    from .engine.predictor import Predictor
    predictor = Predictor(ckpt, device="cpu")
    described = predictor.describe()
    cfg, fs = predictor.cfg, predictor.fs
    meta = {
        "format": "ecgnet-export", "version": 1, "run": described["run"], "checkpoints": described["checkpoints"],
        "name": cfg.get("name"), "model": cfg["model"]["type"], "folds": len(predictor.models),
        "classes": predictor.class_names, "multilabel": predictor.multilabel,
        "decision": "p >= threshold per class" if predictor.multilabel else
                    ("argmax" if described["thresholds"] is None else "argmax of p / threshold"),
        "thresholds": described["thresholds"], "fs": fs, "leads": predictor.leads,
        "window_samples": predictor.window, "stride_samples": predictor.stride,
        "window_s": predictor.window / fs, "stride_s": predictor.stride / fs,
        "full_length": predictor.full_length, "aggregate": predictor.aggregate,
        "temperature": predictor.temperatures,
        "normalization": predictor.normalizers[0].mode + " (inside the graph)",
        "preprocess": {k: cfg["preprocess"][k] for k in ("bandpass_hz", "filter_order")},
        "input": "signal: float32 (batch, leads, samples) in mV at fs, band-passed per preprocess",
        "output": "probabilities: float32 (batch, classes), calibrated",
    }
    return predictor.probability_model(), meta


def _example(meta: dict, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, len(meta["leads"]), meta["window_samples"], generator=torch.Generator().manual_seed(0))


def _dynamo_export(model: nn.Module, x: torch.Tensor, batch, samples, meta: dict):
    """torch.onnx.export (dynamo): a dynamic batch and length, or a dynamic batch alone when
    torch.export refuses the length."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for shapes in ({"signal": {0: batch, 2: samples}}, {"signal": {0: batch}}):
            try:
                return torch.onnx.export(model, (x,), None, input_names=["signal"], output_names=["probabilities"],
                                         dynamic_shapes=shapes, dynamo=True, opset_version=OPSET, verbose=False)
            except Exception as err:        # torch.export's constraint violation, whatever its class
                if 2 not in shapes["signal"]:
                    raise
                log.info("export: a fixed window of %d samples (the network does not allow a dynamic length: %s)",
                         meta["window_samples"], str(err).splitlines()[0][:200])


def _export_onnx(model: nn.Module, meta: dict, path: Path) -> bool:
    """-> whether the length is dynamic. torch.export refuses a dynamic length when the network's
    shape arithmetic needs a fixed one (e.g. MaxPool1d(ceil_mode=True)); then the window is fixed."""
    import onnx
    x = _example(meta)
    batch = torch.export.Dim("batch", min=1)
    samples = torch.export.Dim("samples", min=MIN_SAMPLES)
    # the exporter and its optimizer log every rewrite at INFO; keep this tool's output to its result
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        program = _dynamo_export(model, x, batch, samples, meta)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    proto = program.model_proto
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dynamic_length = bool(dims[2].dim_param)
    meta = {**meta, "dynamic_length": dynamic_length}
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
    write_atomic(path, proto.SerializeToString())
    return dynamic_length


def _export_torchscript(model: nn.Module, meta: dict, path: Path) -> bool:
    """Traced; -> whether the length is dynamic (the trace gives the same probabilities at another length)."""
    x = _example(meta)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")       # TracerWarnings, the deprecation of TorchScript itself
        traced = torch.jit.trace(model, (x,), check_trace=False)
        other = _example({**meta, "window_samples": meta["window_samples"] + 37}, batch=3)
        try:
            dynamic_length = bool(torch.allclose(traced(other), model(other), atol=1e-5, rtol=0))
        except RuntimeError:
            dynamic_length = False
    meta = {**meta, "dynamic_length": dynamic_length}
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
    write_atomic(path, buffer.getvalue())
    return dynamic_length


def export(ckpt: str | Path, fmt: str, out: Optional[str | Path] = None) -> tuple[Path, dict]:
    """Write ``ckpt`` as ``fmt`` (onnx or torchscript) to ``out`` (default: next to the checkpoint,
    ``model.onnx`` / ``model.torchscript.pt``). -> (path, metadata)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose {' or '.join(FORMATS)}")
    model, meta = load_for_export(ckpt)
    run_dir = Path(meta["run"])
    path = Path(out) if out else run_dir / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")
    if fmt == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"--format onnx: needs the {' and '.join(missing)} package(s); "
                              "pip install -e '.[export]'")
        dynamic = _export_onnx(model, meta, path)
    else:
        dynamic = _export_torchscript(model, meta, path)
    meta["dynamic_length"] = dynamic
    return path, meta


def read_metadata(path: str | Path) -> dict:
    """The metadata embedded by ``export`` in an .onnx or TorchScript file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[METADATA_KEY])
    files = {f"{METADATA_KEY}.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files[f"{METADATA_KEY}.json"])
