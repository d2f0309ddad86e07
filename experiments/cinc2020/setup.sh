#!/usr/bin/env bash
# Download the PhysioNet/CinC Challenge 2020 training set from PhysioNet (challenge-2020 version 1.0.2:
# 43,101 records, 86,202 .mat/.hea files), check every file against PhysioNet's SHA256SUMS.txt,
# and print the data.root to use.
#   experiments/cinc2020/setup.sh [DIR]        (default DIR: data/cinc2020)
# Result: DIR/training/<source>/g*/{*.hea,*.mat} for the sources cpsc_2018, cpsc_2018_extra,
# st_petersburg_incart, ptb, ptb-xl, georgia; the cinc2020 adapter searches DIR/training recursively.
set -euo pipefail

dir="${1:-data/cinc2020}"
base="https://physionet.org/files/challenge-2020/1.0.2"
mkdir -p "$dir"
cd "$dir"

wget -nv -N "$base/SHA256SUMS.txt"
# -nH --cut-dirs=3 keeps PhysioNet's paths (training/...) below DIR, as SHA256SUMS.txt lists them
wget -r -N -c -np -nH --cut-dirs=3 -nv -R "index.html*" "$base/training/"

# check every file of training/ that PhysioNet lists; fail if the list has none
grep -E ' training/' SHA256SUMS.txt > cinc2020.sha256
[ -s cinc2020.sha256 ] || { echo "SHA256SUMS.txt lists no training/ files" >&2; exit 1; }
sha256sum -c --quiet cinc2020.sha256
echo "checked $(wc -l < cinc2020.sha256) files against SHA256SUMS.txt"

n=$(find training -name '*.hea' | wc -l)
echo "CinC 2020: $n records in $(pwd)/training"
echo "use it with: --opts data.root=$(pwd)/training"
