#!/usr/bin/env bash
# Download PTB-XL 1.0.3 from PhysioNet, verify every file against PhysioNet's SHA256SUMS.txt and print the
# override that points ecgnet at it.
#
#   experiments/ptbxl/setup.sh [DIR]        # DIR defaults to data/ptbxl
#
# The official zip is about 1.7 GB (3 GB unpacked: records100/ and records500/). Running the script again
# skips the download when DIR already holds the files and only verifies them.
set -euo pipefail

VERSION=1.0.3
DIR=${1:-data/ptbxl}
ZIP_URL="https://physionet.org/static/published-projects/ptb-xl/ptb-xl-a-large-publicly-available-electrocardiography-dataset-${VERSION}.zip"
SUMS_URL="https://physionet.org/files/ptb-xl/${VERSION}/SHA256SUMS.txt"

for tool in wget unzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required; install it and run this again" >&2; exit 1; }
done
mkdir -p "$DIR"

if [[ ! -f "$DIR/ptbxl_database.csv" || ! -d "$DIR/records100" ]]; then
  zip="$DIR/ptb-xl-${VERSION}.zip"
  echo ">> downloading PTB-XL ${VERSION} (~1.7 GB) to $zip"
  wget -c -O "$zip" "$ZIP_URL"
  echo ">> unpacking"
  tmp=$(mktemp -d "$DIR/unzip.XXXXXX")
  unzip -q "$zip" -d "$tmp"
  # the zip holds one top folder, ptb-xl-a-large-...-1.0.3/; move its contents into DIR
  top=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  cp -al "$top"/. "$DIR"/ 2>/dev/null || cp -a "$top"/. "$DIR"/
  rm -rf "$tmp" "$zip"
fi

# the checksum list is fetched on its own, so the unpacked files are checked against what PhysioNet publishes
echo ">> fetching PhysioNet's SHA256SUMS.txt"
if ! wget -q -O "$DIR/SHA256SUMS.txt.new" "$SUMS_URL"; then
  rm -f "$DIR/SHA256SUMS.txt.new"
  echo "error: could not download $SUMS_URL; check the connection and run this again" >&2
  exit 1
fi
mv "$DIR/SHA256SUMS.txt.new" "$DIR/SHA256SUMS.txt"
echo ">> verifying $(wc -l < "$DIR/SHA256SUMS.txt") files against SHA256SUMS.txt (a few minutes)"
(cd "$DIR" && sha256sum -c --quiet SHA256SUMS.txt) || {
  echo "error: some files in $DIR do not match PhysioNet's checksums (listed above); delete them and run again" >&2
  exit 1
}

echo ">> PTB-XL ${VERSION} is ready in $DIR. Train with, e.g.:"
echo "   python tools/train.py --config cfgs/ptbxl/resnet1d_superdiagnostic.yaml --opts data.root=$(cd "$DIR" && pwd)"
