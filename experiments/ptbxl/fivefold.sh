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
# PROCESSES=P (default 1) trains the folds in P processes at once (train.py --only-folds; process i takes
# folds i, i+P, ...; their logs: NAME_5fold.out, NAME_5fold.p1.out, ...): on C cores, P processes of
# OMP_NUM_THREADS=C/P threads finish the 5 models sooner than one process of C threads.
# OPTS="key=value ..." adds --opts to a run's start (e.g. OPTS="train.amp=false" for an ablation); a continued
# run keeps the options it was started with.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 PTBXL_DIR RUNS_DIR NAME [NAME ...]" >&2
  exit 2
fi
data=$1 runs=$2
shift 2
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python}
processes=${PROCESSES:-1}
[[ $processes =~ ^[1-5]$ ]] || { echo "error: PROCESSES=$processes: give 1 to 5 (one fold or more each)" >&2; exit 2; }
read -ra opts <<< "${OPTS:-}"    # split on spaces (write a list as [1,2]), without glob expansion
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
  pids=()
  for ((i = 0; i < processes; i++)); do
    log=$run.out; [[ $i -gt 0 ]] && log=$run.p$i.out
    only=(); [[ $processes -gt 1 ]] && only=(--only-folds $(seq $i "$processes" 4))
    if [[ -f "$run/config.yaml" ]]; then
      echo ">> $run: continuing (--resume ${only[*]})"
      "$python" "$repo/tools/train.py" --resume "$run" "${only[@]}" >> "$log" 2>&1 &
    else
      echo ">> $run: training 5 folds ${only[*]}"
      "$python" "$repo/tools/train.py" --config "$repo/cfgs/ptbxl/$name.yaml" --folds 5 --work-dir "$run" \
        "${only[@]}" --opts data.root="$data" train.tensorboard=false "${opts[@]}" > "$log" 2>&1 &
      # the others resume the run this one starts, once its split is written (the data read and cached once)
      while [[ ! -f "$run/splits.json" ]]; do
        kill -0 $! 2>/dev/null || { wait $! || true; echo "error: $run: training stopped before the split; see $log" >&2; exit 1; }
        sleep 5
      done
    fi
    pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [[ $failed -eq 0 ]] || { echo "error: $run: a training process failed or was stopped; see $run*.out" >&2; exit 1; }
  echo ">> $run: scoring the folds and their ensembles on the test split (once)"
  "$python" "$repo/tools/evaluate.py" --ckpt "$run" > "${run}_eval.out" 2>&1
  tail -n 1 "${run}_eval.out"
done
