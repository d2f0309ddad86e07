"""Apply a trained model to recordings:
python tools/predict.py --ckpt runs/demo --input RECORD_OR_DIR [--out preds.json|preds.csv] [--per-window]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.cli import predict_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(predict_main())
