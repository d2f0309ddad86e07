"""Explain a prediction: python tools/explain.py --ckpt runs/demo --input RECORD [--class NAME]
[--method integrated_gradients|gradcam|attention] [--out DIR]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.cli import explain_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(explain_main())
