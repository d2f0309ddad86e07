"""Results table from run directories: python tools/compare_runs.py RUN_DIR... [--metric test/macro_auroc ...]
[--md OUT.md] [--runs-file FILE]. One table per dataset: metrics with 95 % CIs and the config keys that differ."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from ecgnet.cli import compare_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(compare_main())
