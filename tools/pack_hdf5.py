"""Pack a config's dataset into one ecgnet HDF5 file (see experiments/pediatric/README.md):
python tools/pack_hdf5.py --config CFG.yaml --out FILE.h5 [--opts data.root=... preprocess.fs=500]

The records come from the config's ``data`` section, after its ``preprocess`` resampling and
band-pass; any other section is ignored, so a data-only config works too.
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.build import build  # noqa: E402
from ecgnet.cli import guarded  # noqa: E402
from ecgnet.config import check_schema, load_yaml_tree, merge, parse_opts  # noqa: E402
from ecgnet.data.pack import pack_adapter  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pack any dataset adapter's records into ecgnet's HDF5 layout.")
    parser.add_argument("--config", required=True, help="YAML config whose data and preprocess sections are used")
    parser.add_argument("--out", required=True, help="the .h5 file to write")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. data.root=/path")
    parser.add_argument("--compression", choices=["gzip", "lzf"],
                        help="HDF5 compression (default: none, the fastest to read)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def run():
        raw = merge(load_yaml_tree(args.config), parse_opts(args.opts))
        cfg = check_schema({"model": {}, **raw})   # packing needs data + preprocess; a model is optional
        summary = pack_adapter(build("data", cfg), args.out, cfg["preprocess"], args.overwrite, args.compression,
                               progress=sys.stderr.isatty())
        print(f"packed {summary['records']} records ({summary['layout']} length, {summary['fs']:g} Hz, "
              f"{summary['bytes'] / 1e6:.1f} MB) into {summary['path']}; unreadable: {len(summary['failed'])}, "
              f"left out by the adapter: {summary['skipped'] or 0}")
    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
