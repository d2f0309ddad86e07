"""Throughput side by side: training (fp32 vs bf16 autocast vs loader workers), k-fold evaluation
(K passes vs one pass), and what train.amp auto picks here:
python tools/benchmark.py --config cfgs/demo.yaml [--steps 30] [--batch-size 32] [--quick] [--opts k=v ...]."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.cli import guarded  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true",
                        help="5 training steps and 64 evaluation records: checks that every case runs")
    args = parser.parse_args()

    def run():
        from ecgnet.benchmark import run_benchmark
        from ecgnet.config import load_config
        run_benchmark(load_config(args.config, args.opts), args.steps, args.batch_size, quick=args.quick)
    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
