#!/bin/bash
# The CUDA paths of ecgnet, end to end, on a machine with one NVIDIA GPU: what CI (CPU only) cannot run.
#   bash experiments/gpu/check.sh [OUT_DIR]        (from the repository root, with ecgnet importable)
# Each step's log goes to $OUT_DIR/steps.log, its last lines and wall time to stdout; a failed step is
# reported and the next one runs. Results measured with it are in experiments/gpu/README.md.
set -u
OUT_DIR=${1:-/tmp/ecgnet_gpu_check}
WORK=${WORK:-/tmp/ecgnet_gpu_runs}
PY=${PY:-python3}
rm -rf "$WORK"; mkdir -p "$WORK" "$OUT_DIR"
export PYTHONUNBUFFERED=1
failed=()

step() {  # name, command...
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$EPOCHREALTIME
  "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc wall=$(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $t0}") s"
  tail -n "${TAIL:-12}" "$WORK/$name.log"
  { echo "===== $name: $*  (rc=$rc)"; cat "$WORK/$name.log"; } >> "$OUT_DIR/steps.log"
  [ "$rc" = 0 ] || failed+=("$name")
}

nvidia-smi -L
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"

# 1. the README's main job on the GPU: 3 folds, train.device/amp/num_workers all 'auto' (cuda, bf16, workers)
step demo_auto $PY tools/train.py --config cfgs/demo.yaml --folds 3 --work-dir "$WORK/demo_auto"
step demo_eval $PY tools/evaluate.py --ckpt "$WORK/demo_auto"
# 2. the test suite with a GPU present (train.device: auto picks it in every CLI test); 2 threads per worker
# (16 threads in each of 8 workers ran 40 % of the suite in 225 s)
OMP_NUM_THREADS=2 TAIL=40 step pytest timeout 400 $PY -m pytest -q -n 8 -rfE --tb=short -p no:cacheprovider tests

# 3. fp16 autocast with GradScaler, and plain fp32, one fold each
step demo_fp16 $PY tools/train.py --config cfgs/demo.yaml --work-dir "$WORK/demo_fp16" --opts train.amp=fp16
step demo_fp32 $PY tools/train.py --config cfgs/demo.yaml --work-dir "$WORK/demo_fp32" --opts "train.amp='off'"
# 4. Ctrl-C mid-run, then --resume from the same directory on the GPU
cut_after_first_checkpoint() {  # Ctrl-C once the run has written its first last.pt
  $PY tools/train.py --config cfgs/demo.yaml --work-dir "$WORK/demo_resume" --opts train.epochs=30 &
  local pid=$!
  until ls "$WORK"/demo_resume/last.pt > /dev/null 2>&1 || ! kill -0 $pid 2> /dev/null; do sleep 0.5; done
  sleep 2; kill -INT $pid; wait $pid
}
step cut_run cut_after_first_checkpoint
step resume $PY tools/train.py --resume "$WORK/demo_resume"
# 5. torchrun, NCCL, one process per GPU, SyncBatchNorm
step torchrun_syncbn $PY -m torch.distributed.run --standalone --nproc_per_node 1 tools/train.py \
  --config cfgs/demo.yaml --work-dir "$WORK/demo_ddp" --opts train.sync_bn=true
# 6. torch.compile on CUDA (inductor/triton)
step compile $PY tools/train.py --config cfgs/demo.yaml --work-dir "$WORK/demo_compile" --opts train.compile=true
# 7. lazy full-length HDF5 on the GPU: pack a synthetic 500 Hz stand-in, train the full-length config
printf 'data: {type: synthetic, num_records: 300, fs: 500, duration_s: 20, records_per_patient: 2, seed: 0}\npreprocess: {fs: null, bandpass_hz: null}\n' > "$WORK/syn500.yaml"
step pack_hdf5 $PY tools/pack_hdf5.py --config "$WORK/syn500.yaml" --out "$WORK/syn500.h5"
step full_length $PY tools/train.py --config cfgs/pediatric/se_attention1d_19class_full.yaml --work-dir "$WORK/full_length" \
  --opts data.root="$WORK/syn500.h5" train.epochs=3 schedule.warmup_epochs=1 schedule.cooldown_epochs=1
step full_length_eval $PY tools/evaluate.py --ckpt "$WORK/full_length"
# 8. the benchmark table on this machine (CPU and CUDA columns)
TAIL=40 step benchmark $PY tools/benchmark.py --quick --json "$OUT_DIR/benchmark.json"
echo "=== failed steps: ${failed[*]:-none}"
