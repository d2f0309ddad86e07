#!/usr/bin/env bash
# The PTB-XL 5-fold ensembles of experiments/ptbxl/README.md ("5-fold ensembles per task, side by side"):
# for each config name, train 5 fold models on folds 1-9 (or continue a cut run with --resume), then score
# the ensemble on fold 10 once.
#
#   experiments/ptbxl/fivefold.sh PTBXL_DIR RUNS_DIR NAME [NAME ...]
#   e.g. OMP_NUM_THREADS=1 experiments/ptbxl/fivefold.sh data/ptbxl runs/ptbxl_full resnet1d_rhythm xresnet1d101_rhythm
#
# NAME is a config in cfgs/ptbxl/ without .yaml; the run goes to RUNS_DIR/NAME_5fold, its log to
# RUNS_DIR/NAME_5fold.out. A run whose test report exists is left alone (the test split is read once per
# run); a failed or stopped training stops the script before anything is evaluated.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 PTBXL_DIR RUNS_DIR NAME [NAME ...]" >&2
  exit 2
fi
data=$1 runs=$2
shift 2
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python}
for name in "$@"; do
  [[ -f "$repo/cfgs/ptbxl/$name.yaml" ]] || { echo "error: $repo/cfgs/ptbxl/$name.yaml: no such config" >&2; exit 2; }
done
mkdir -p "$runs"

for name in "$@"; do
  run=$runs/${name}_5fold
  if [[ -f "$run/eval/test/metrics.json" ]]; then
    echo ">> $run: already evaluated on the test split; left alone"
    continue
  fi
  if [[ -f "$run/config.yaml" ]]; then
    echo ">> $run: continuing (--resume)"
    "$python" "$repo/tools/train.py" --resume "$run" >> "$run.out" 2>&1
  else
    echo ">> $run: training 5 folds"
    "$python" "$repo/tools/train.py" --config "$repo/cfgs/ptbxl/$name.yaml" --folds 5 --work-dir "$run" \
      --opts data.root="$data" train.tensorboard=false > "$run.out" 2>&1
  fi
  echo ">> $run: scoring the folds and their ensembles on the test split (once)"
  "$python" "$repo/tools/evaluate.py" --ckpt "$run" > "${run}_eval.out" 2>&1
  tail -n 1 "${run}_eval.out"
done
