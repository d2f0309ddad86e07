"""Generate the fixed, label-stratified train/val/test split of the CinC 2017 training records:
python tools/make_cinc17_split.py --reference ../shared/data/cinc17/REFERENCE-all.csv \
    --out ecgnet/data/resources/cinc17_split.csv [--seed 2017] [--fractions 0.7 0.1 0.2]"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.cli import guarded  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write a stratified record,split csv for the CinC 2017 adapter "
                                                 "(data.split_file).")
    parser.add_argument("--reference", required=True, help="REFERENCE.csv with every record (record,label; no header)")
    parser.add_argument("--out", required=True, help="csv to write (record,split)")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--fractions", type=float, nargs=3, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "VAL", "TEST"))
    args = parser.parse_args(argv)

    from ecgnet.data.cinc17 import write_split_file
    return guarded(lambda: write_split_file(args.reference, args.out, args.seed, args.fractions))


if __name__ == "__main__":
    sys.exit(main())
