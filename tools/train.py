"""Train from a YAML config: python tools/train.py --config cfgs/demo.yaml [--opts k=v ...] [--folds K].
On N GPUs (or N CPU processes): torchrun --standalone --nproc_per_node N tools/train.py --config ..."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
