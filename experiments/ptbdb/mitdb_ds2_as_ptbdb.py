"""Build a PTB-diagnostic-shaped beat task from MIT-BIH for the transfer-learning demo:
python experiments/ptbdb/mitdb_ds2_as_ptbdb.py --root ../shared/data/mitdb --out data/mitdb_ds2_binary

Beats of the inter-patient DS2 records (Kaggle style: 125 Hz, 187 samples in [0, 1]) are written as
ptbdb_normal.csv (AAMI N, label 0) and ptbdb_abnormal.csv (S, V, F, Q, label 1), the layout of the
Kaggle PTB diagnostic files, so cfgs/ptbdb/*.yaml run on it unchanged with --opts data.root=OUT.
The source model (cfgs/mitdb/cnn1d_kaggle_beats_ds1.yaml) never sees a DS2 patient.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # run from a checkout without installing

import numpy as np  # noqa: E402

from ecgnet.data.kaggle_csv import read_kaggle_csv, write_kaggle_csv  # noqa: E402
from ecgnet.data.mitdb import export_kaggle_csv  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="mitdb folder")
    parser.add_argument("--out", required=True, help="output folder for ptbdb_normal.csv / ptbdb_abnormal.csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        export_kaggle_csv(args.root, tmp, split_mode="inter")
        beats, labels = read_kaggle_csv(Path(tmp) / "mitbih_test.csv")      # DS2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    normal = labels == 0
    write_kaggle_csv(out / "ptbdb_normal.csv", beats[normal], np.zeros(normal.sum(), np.int64))
    write_kaggle_csv(out / "ptbdb_abnormal.csv", beats[~normal], np.ones((~normal).sum(), np.int64))
    print(f"{out}: {normal.sum()} normal and {(~normal).sum()} abnormal DS2 beats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
