"""Export a trained model: python tools/export.py --ckpt runs/demo --format onnx|torchscript [--out FILE]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.cli import export_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(export_main())
