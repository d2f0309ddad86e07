"""One table of throughput and memory ratios, each with its goal (experiments/BENCHMARKS.md):
1 data path (cache vs WFDB decode per item), 2 data-loader overhead per training step, 3 training
samples/s per backbone (fp32 / bf16 / torch.compile), 4 ecgnet vs torch_ecg, 5 lazy HDF5 peak RSS
(S vs 10 S), 6 k-fold evaluation (K passes vs one pass).

python tools/benchmark.py [--quick] [--only data,hdf5] [--ptbxl-root /path/to/ptbxl] [--json out.json]
Without --ptbxl-root the PTB-XL rows run on a generated PTB-XL-format fixture; row 4 needs
pip install -e .[bench]."""
import argparse
import dataclasses
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run from a checkout without installing

from ecgnet.cli import guarded  # noqa: E402

DEFAULT_CONFIG = REPO / "cfgs" / "ptbxl" / "resnet1d_wang_superdiagnostic.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a short run of every row (2 timed steps per case, small fixture and files, no compile)")
    parser.add_argument("--only", metavar="ROWS",
                        help="comma-separated rows: data, overhead, backbones, torch_ecg, hdf5, kfold (or 1-6)")
    parser.add_argument("--ptbxl-root", help="a PTB-XL folder (default: a generated PTB-XL-format fixture)")
    parser.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="training batch (default 128, the PTB-XL benchmark's)")
    parser.add_argument("--steps", type=int, help="timed training steps per case (default 20; --quick 2)")
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                        help="where training rows run (all: the CPU, and the GPU when there is one)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default as train.num_workers auto: 0 on the CPU, min(8, cores - 1) on CUDA)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile case of row 3")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="PTB-XL config whose model, preprocessing and training settings rows 2 and 6 use "
                             "(default: cfgs/ptbxl/resnet1d_wang_superdiagnostic.yaml)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of --config")
    args = parser.parse_args()

    def run():
        from ecgnet.benchmark import BACKBONES, Settings, parse_rows, run_benchmark
        from ecgnet.config import load_config, load_yaml_tree
        from ecgnet.registry import ConfigError
        for flag, value in (("--steps", args.steps), ("--workers", args.workers)):
            if value is not None and value < (1 if flag == "--steps" else 0):
                raise ConfigError(f"{flag}: must be {'1' if flag == '--steps' else '0'} or more, got {value}")
        rows = parse_rows(args.only)
        settings = Settings.quick() if args.quick else Settings()
        changes = {"batch_size": args.batch_size, "workers": args.workers}
        if args.steps is not None:
            changes["steps"] = args.steps
        if args.no_compile:
            changes.update(compile=False, compile_skip="skipped (--no-compile)")
        settings = dataclasses.replace(settings, **changes)
        backbones = {name: load_yaml_tree(REPO / "cfgs" / "_base_" / "models" / f"{name}.yaml")["model"]
                     for name in BACKBONES}
        devices = None if args.device == "all" else [args.device]
        run_benchmark(load_config(args.config, args.opts), backbones, rows, settings, args.ptbxl_root, devices,
                      args.json)
    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
