#!/usr/bin/env bash
# The PTB-XL 5-fold ensembles of experiments/ptbxl/README.md ("5-fold ensembles per task, side by side"):
# for each config name, train 5 fold models on folds 1-9 (or continue a cut run with --resume), then score
# the ensemble on fold 10 once.
#
#   experiments/ptbxl/fivefold.sh DATA_DIR RUNS_DIR NAME [NAME ...]
#   e.g. OMP_NUM_THREADS=1 PROCESSES=2 experiments/ptbxl/fivefold.sh data/ptbxl runs/ptbxl_full resnet1d_rhythm xresnet1d101_rhythm
#
# NAME is a config in cfgs/ptbxl/ without .yaml, or the path of any config file (NAME.yaml; e.g.
# cfgs/mitdb/cnn1d_kaggle_beats_rr.yaml with DATA_DIR the mitdb folder: DATA_DIR becomes data.root). The run goes
# to RUNS_DIR/NAME_5fold. A run whose test report
# exists is left alone (the test split is read once per run); a run is scored only when all 5 folds are trained,
# and a failed or stopped training starts nothing more (the same command continues from where it stopped).
# PROCESSES=P (default 1) workers train P folds at once, each taking the next untrained fold of the named runs
# in order (train.py --only-folds K; the models are those one process would train, as a fold's seed depends on
# its number alone): a worker that is done with one run's folds goes on to the next run's instead of waiting
# for the others, and whoever trains a run's last fold scores it. Worker i logs to NAME_5fold.out (i = 0) or
# NAME_5fold.p<i>.out. On C cores, P processes of OMP_NUM_THREADS=C/P threads finish sooner than one of C.
# One invocation at a time trains in a RUNS_DIR: a second one is refused while the first runs.
# OPTS="key=value ..." adds --opts to a run's start (e.g. OPTS="train.amp=false" for an ablation); a continued
# run keeps the options it was started with.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 DATA_DIR RUNS_DIR NAME [NAME ...]" >&2
  exit 2
fi
data=$1 runs=$2
shift 2
repo=$(realpath "$(dirname "$0")/../..")
python=${PYTHON:-python}
processes=${PROCESSES:-1}
[[ $processes =~ ^[1-5]$ ]] || { echo "error: PROCESSES=$processes: give 1 to 5 (one fold or more each)" >&2; exit 2; }
read -ra opts <<< "${OPTS:-}"    # split on spaces (write a list as [1,2]), without glob expansion
declare -A config    # NAME -> its config file
names=()
for arg in "$@"; do
  if [[ $arg == *.yaml ]]; then
    name=$(basename "$arg" .yaml) path=$arg
  else
    name=$arg path=$repo/cfgs/ptbxl/$arg.yaml
  fi
  [[ -f $path ]] || { echo "error: $path: no such config" >&2; exit 2; }
  [[ -z ${config[$name]:-} ]] ||
    { echo "error: $arg: a second config named $name (both would train $runs/${name}_5fold)" >&2; exit 2; }
  config[$name]=$(realpath "$path")
  names+=("$name")
done
mkdir -p "$runs"
# An invocation's claims (below) go with it, but a session's end or kill -9 skips its EXIT trap: remove the
# claims of invocations that are gone, and refuse to run beside one that is still here (both would train the
# same folds into the same files).
for other in "$runs"/.fivefold.*; do
  [[ -d $other ]] || continue
  pid=$(cat "$other/pid" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && ps -p "$pid" -o args= 2>/dev/null | grep -q fivefold; then
    echo "error: $runs: another fivefold.sh (pid $pid) is training here; wait for it to end, or stop it" >&2
    exit 2
  fi
  rm -rf "$other"
done

todo=()
for name in "${names[@]}"; do
  if [[ -f "$runs/${name}_5fold/eval/test/metrics.json" ]]; then
    echo ">> $runs/${name}_5fold: already evaluated on the test split; left alone"
  else
    todo+=("$name")
  fi
done
[[ ${#todo[@]} -gt 0 ]] || exit 0
# this invocation's claims: mkdir is atomic, so each fold (and each run's start and scoring) goes to one worker
claims=$(mktemp -d "$runs/.fivefold.XXXXXX")
trap 'rm -rf "$claims"' EXIT
echo $$ > "$claims/pid"

# train fold K of NAME -> 0 trained, 1 failed, 3 not started because another worker's training failed
train_fold() {
  local worker=$1 name=$2 k=$3 log=$4 run=$runs/${2}_5fold
  if mkdir "$claims/$name.start" 2>/dev/null; then
    if [[ ! -f "$run/config.yaml" ]]; then
      echo ">> $run: training fold $k, starting the run (worker $worker)"
      "$python" "$repo/tools/train.py" --config "${config[$name]}" --folds 5 --work-dir "$run" \
        --only-folds "$k" --opts data.root="$data" train.tensorboard=false "${opts[@]}" >> "$log" 2>&1
      return
    fi
  else
    # another worker starts this run: resume it once its split is written (the data read and cached once)
    while [[ ! -f "$run/splits.json" ]]; do
      [[ -e "$claims/failed" ]] && return 3
      sleep 5
    done
  fi
  echo ">> $run: training fold $k (--resume --only-folds $k, worker $worker)"
  "$python" "$repo/tools/train.py" --resume "$run" --only-folds "$k" >> "$log" 2>&1
}

worker() {
  local worker=$1 name run log k rc trained
  for name in "${todo[@]}"; do
    run=$runs/${name}_5fold
    log=$run.out; [[ $worker -gt 0 ]] && log=$run.p$worker.out
    for k in 0 1 2 3 4; do
      [[ -e "$claims/failed" ]] && return 0
      mkdir "$claims/$name.fold$k" 2>/dev/null || continue
      rc=0; train_fold "$worker" "$name" "$k" "$log" || rc=$?
      [[ $rc -eq 3 ]] && return 0
      if [[ $rc -ne 0 ]]; then
        touch "$claims/failed"
        echo "error: $run: fold $k's training failed or was stopped; see $log" >&2
        return 0
      fi
      touch "$claims/$name.trained$k"
      trained=("$claims/$name".trained[0-4])    # matches at least the one just made
      if [[ ${#trained[@]} -eq 5 ]] && mkdir "$claims/$name.scored" 2>/dev/null; then
        echo ">> $run: scoring the folds and their ensembles on the test split (once)"
        if ! "$python" "$repo/tools/evaluate.py" --ckpt "$run" > "${run}_eval.out" 2>&1; then
          touch "$claims/failed"
          echo "error: $run: evaluate.py failed; see ${run}_eval.out" >&2
          return 0
        fi
        tail -n 1 "${run}_eval.out"
      fi
    done
  done
}

pids=()
for ((i = 0; i < processes; i++)); do
  worker "$i" &
  pids+=($!)
done
wait "${pids[@]}"
if [[ -e "$claims/failed" ]]; then
  echo "error: stopped after a failure (above); the same command continues the runs that are not scored" >&2
  exit 1
fi
