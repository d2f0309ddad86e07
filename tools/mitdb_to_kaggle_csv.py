"""Write the Kaggle heartbeat CSVs (mitbih_train.csv, mitbih_test.csv) from raw PhysioNet mitdb:
python tools/mitdb_to_kaggle_csv.py --root ../shared/data/mitdb --out data/mitbih_csv [--split-mode inter]."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.data.mitdb import AAMI_CLASSES, export_kaggle_csv  # noqa: E402
from ecgnet.registry import ConfigError, DataError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cut mitdb into Kaggle-style beats (125 Hz, 187 samples in [0, 1] "
                                                 "+ AAMI label N=0 S=1 V=2 F=3 Q=4) and write train/test CSVs.")
    parser.add_argument("--root", required=True, help="mitdb folder (RECORDS, *.hea, *.dat, *.atr)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--split-mode", choices=["intra", "inter"], default="intra",
                        help="intra: stratified random beats (as Kaggle); inter: DS1 -> train, DS2 -> test")
    parser.add_argument("--lead", default="MLII")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="intra only")
    parser.add_argument("--seed", type=int, default=0, help="intra only")
    args = parser.parse_args(argv)
    try:
        result = export_kaggle_csv(args.root, args.out, args.split_mode, args.lead, args.test_fraction, args.seed)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, ids in result["files"].items():
        counts = ", ".join(f"{c} {n}" for c, n in zip(AAMI_CLASSES, result["class_counts"][name]))
        print(f"{Path(args.out) / name}: {len(ids)} beats ({counts})")
    for reason, ids in result["skipped"].items():
        print(f"left out {len(ids)} ({reason}): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
