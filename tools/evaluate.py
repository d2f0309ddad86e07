"""Evaluate a run or checkpoint: python tools/evaluate.py --ckpt runs/demo [--split test|val] [--out DIR]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.cli import evaluate_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(evaluate_main())
