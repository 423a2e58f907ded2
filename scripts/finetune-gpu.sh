#!/usr/bin/env bash
# Fine-tune the bundled fluorescence models' Restorers on a lent GPU, both at once, on the
# squared error with their own (frozen) Estimators' kernels, as sessions 27-29 did on the CPU
# (python -m napari_dan.training.restorer; docs/cli.md), with 4x the CPU runs' batch:
#
#   scripts/finetune-gpu.sh OUT_DIR [MINUTES]      (default 8 minutes of training each)
#
# OUT_DIR receives dan-x4-fluo.pt, dan-x2-fluo.pt and their logs; the run states go to
# RUNS (default /tmp/finetune-runs; a second call with a larger MINUTES resumes them). The
# device is the recipes' "auto": CUDA when there is one, else the CPU (MINUTES=0.1 checks the
# script without a GPU). Nothing in OUT_DIR is replaced. Then, on any machine:
#   python benchmarks/microscopy.py --model dan-x2-fluo OUT_DIR/dan-x2-fluo.pt ...
set -euo pipefail
OUT=${1:?OUT_DIR}; MIN=${2:-8}; RUNS=${RUNS:-/tmp/finetune-runs}; BATCH=${BATCH:-32}
LR=${LR:-1e-4}
# the fields are drawn on the CPU: half the cores for each of the two runs, or the GPU waits
WORKERS=${WORKERS:-$(( ($(nproc) + 1) / 2 ))}
mkdir -p "$OUT" "$RUNS"
for name in dan-x4-fluo dan-x2-fluo; do
  if [ -e "$OUT/$name.pt" ]; then
    echo "error: $OUT/$name.pt exists; use another OUT_DIR" >&2; exit 2
  fi
done
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
train() {  # NAME EXTRA-ARGS...
  local name=$1; shift
  python3 -m napari_dan.training.restorer train --base "$name" --recipe "$name" --loss l2 \
    --batch "$BATCH" --lr "$LR" --minutes "$MIN" --val-every 500 --seed 30 \
    --data-workers "$WORKERS" \
    --run-dir "$RUNS/$name" "$@" >"$OUT/$name.log" 2>&1
}
train dan-x4-fluo & x4=$!
train dan-x2-fluo --lr-patch 48 & x2=$!
status=0
wait $x4 || status=1
wait $x2 || status=1
for name in dan-x4-fluo dan-x2-fluo; do
  python3 -m napari_dan.training.restorer export --run-dir "$RUNS/$name" --name "$name" \
    --out "$OUT/$name.pt" --base-label "$name as bundled at $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    >>"$OUT/$name.log" 2>&1 || status=1
  echo "== $name"; tail -n 3 "$OUT/$name.log"
done
exit $status
