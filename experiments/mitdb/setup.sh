#!/usr/bin/env bash
# Download the MIT-BIH Arrhythmia Database 1.0.0 from PhysioNet (48 records: .hea/.dat/.atr, RECORDS,
# ANNOTATORS; ~100 MB), verify each file against PhysioNet's published SHA256SUMS.txt and print the
# override that points ecgnet at it.
#
#   experiments/mitdb/setup.sh [DIR]        # DIR defaults to data/mitdb
#
# Left out (not read by ecgnet): the .xws viewer files, superseded annotations (*.at_, 203.at-,
# 102-0.atr), x_mitdb/ and mitdbdir/. Running the script again re-downloads only changed files.
# The Kaggle-style CSVs (mitbih_train.csv / mitbih_test.csv) can then be built with
#   python tools/mitdb_to_kaggle_csv.py --root DIR --out DIR/kaggle_csv
set -euo pipefail

DIR=${1:-data/mitdb}
BASE=${MITDB_BASE_URL:-https://physionet.org/files/mitdb/1.0.0}   # override only to test against a mirror

for tool in wget sha256sum; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required; install it and run this again" >&2; exit 1; }
done
mkdir -p "$DIR"
cd "$DIR"

wget -nv -N "$BASE/SHA256SUMS.txt"
# the files ecgnet reads, as PhysioNet lists them (hash, two spaces, path)
grep -E '  ([0-9]{3}\.(hea|dat|atr)|RECORDS|ANNOTATORS)$' SHA256SUMS.txt > mitdb.sha256
n=$(wc -l < mitdb.sha256)
[ "$n" -eq 146 ] || { echo "error: expected 146 files (48 x .hea/.dat/.atr + RECORDS + ANNOTATORS) in SHA256SUMS.txt, found $n" >&2; exit 1; }
awk '{print $2}' mitdb.sha256 | sed "s|^|$BASE/|" > mitdb.urls
echo ">> downloading $n files to $(pwd)"
wget -nv -N -i mitdb.urls
sha256sum --quiet -c mitdb.sha256
rm -f mitdb.urls
echo "MIT-BIH Arrhythmia Database: $(wc -w < RECORDS) records in $(pwd), checksums OK"
echo "use it with: --opts data.root=$(pwd)"
