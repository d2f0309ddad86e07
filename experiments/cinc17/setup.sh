#!/usr/bin/env bash
# Download the PhysioNet/CinC Challenge 2017 training set (8,528 records, ~99 MB zip) and the
# v3 reference labels, check both against PhysioNet's SHA256SUMS.txt, and unpack.
#   experiments/cinc17/setup.sh [DIR]        (default DIR: data/cinc17)
# Result: DIR/training2017/{REFERENCE.csv,RECORDS,A*.mat,A*.hea}, as the cinc17 adapter reads it.
set -euo pipefail

dir="${1:-data/cinc17}"
base="https://physionet.org/files/challenge-2017/1.0.0"
mkdir -p "$dir"
cd "$dir"

wget -nv -N "$base/SHA256SUMS.txt" "$base/training2017.zip" "$base/REFERENCE-v3.csv"
# check only the files fetched here; fail if PhysioNet's list lacks one of them
grep -E ' (training2017\.zip|REFERENCE-v3\.csv)$' SHA256SUMS.txt > cinc17.sha256
[ "$(wc -l < cinc17.sha256)" -eq 2 ] || { echo "SHA256SUMS.txt does not list both files" >&2; exit 1; }
sha256sum -c cinc17.sha256

unzip -q -o training2017.zip
# The split shipped with ecgnet (ecgnet/data/resources/cinc17_split.csv) was drawn with the v3
# labels; use them as training2017/REFERENCE.csv, keeping the zip's file if it differs.
if ! cmp -s REFERENCE-v3.csv training2017/REFERENCE.csv; then
    mv training2017/REFERENCE.csv training2017/REFERENCE-zip.csv
    cp REFERENCE-v3.csv training2017/REFERENCE.csv
    echo "training2017/REFERENCE.csv now holds the v3 labels (the zip's copy: training2017/REFERENCE-zip.csv)"
fi
n=$(ls training2017/*.mat | wc -l)
echo "CinC 2017: $n records in $(pwd)/training2017"
echo "use it with: --opts data.root=$(pwd)"
