#!/usr/bin/env bash
# Train dan-x4-fluo's LR-only Estimator further on a lent GPU, fine-tune its Restorer on the new
# Estimator's kernels, and combine the new Estimator into an x2 candidate as session 29 did
# (issue 13's x4 PSF target is the Estimator's: docs/models.md, top):
#
#   scripts/estimator-gpu.sh OUT_DIR [ESTIMATOR_MINUTES] [RESTORER_MINUTES]   (default 6 and 3)
#
# OUT_DIR receives dan-x4-fluo.pt (new Estimator and Restorer), dan-x2-fluo.pt (session 25's x2
# model reading its kernel with the new Estimator from the image binned 2 x 2; only where git
# can read that model from the history) and the logs. Run states go to RUNS (default
# /tmp/estimator-runs; a second call with larger minutes resumes them). EST_ARGS adds
# lr_estimator options (e.g. "--shape-weight 10 --astigmatism 0.75 1.5"). The device is the
# recipes' "auto" (CUDA when there is one); the fields are drawn by WORKERS processes (default:
# every core). Check it on a CPU first with: scripts/estimator-gpu.sh /tmp/check 0.1 0.1
# Then, on any machine, judge the candidates by the adoption rule (docs/models.md, Session 33):
#   python benchmarks/microscopy.py --model dan-x4-fluo OUT_DIR/dan-x4-fluo.pt ...
#   python benchmarks/sample_reading.py --model dan-x4-fluo OUT_DIR/dan-x4-fluo.pt ...
set -euo pipefail
OUT=${1:?OUT_DIR}; EMIN=${2:-6}; RMIN=${3:-3}; RUNS=${RUNS:-/tmp/estimator-runs}
BATCH=${BATCH:-64}; PATCH=${PATCH:-48}; LR=${LR:-1.5e-4}; SEED=${SEED:-35}
WORKERS=${WORKERS:-$(nproc)}; EST_ARGS=${EST_ARGS:-}
S25=bb7aeb7  # the commit whose dan-x2-fluo.pt is session 25's (docs/models.md, Session 29)
mkdir -p "$OUT" "$RUNS"
for f in dan-x4-fluo.pt dan-x2-fluo.pt; do
  if [ -e "$OUT/$f" ]; then echo "error: $OUT/$f exists; use another OUT_DIR" >&2; exit 2; fi
done
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
here=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
# shellcheck disable=SC2086  # EST_ARGS is a list of options
python3 -m napari_dan.training.lr_estimator train --recipe dan-x4-fluo --init-from dan-x4-fluo \
  --batch "$BATCH" --lr-patch "$PATCH" --lr "$LR" --minutes "$EMIN" --seed "$SEED" \
  --data-workers "$WORKERS" --run-dir "$RUNS/x4-estimator" $EST_ARGS >"$OUT/x4-estimator.log" 2>&1
rm -f "$RUNS/x4-estimator.pt"
python3 -m napari_dan.training.lr_estimator export --run-dir "$RUNS/x4-estimator" \
  --base dan-x4-fluo --name dan-x4-fluo --out "$RUNS/x4-estimator.pt" \
  --base-label "dan-x4-fluo as bundled at $here" >>"$OUT/x4-estimator.log" 2>&1
python3 -m napari_dan.training.restorer train --base "$RUNS/x4-estimator.pt" --recipe dan-x4-fluo \
  --loss l2 --batch "$(( BATCH / 2 ))" --lr 1e-4 --minutes "$RMIN" --val-every 500 --seed "$SEED" \
  --data-workers "$WORKERS" --run-dir "$RUNS/x4-restorer" >"$OUT/x4-restorer.log" 2>&1
python3 -m napari_dan.training.restorer export --run-dir "$RUNS/x4-restorer" --name dan-x4-fluo \
  --out "$OUT/dan-x4-fluo.pt" --base-label "dan-x4-fluo at $here with the new Estimator" \
  >>"$OUT/x4-restorer.log" 2>&1
if git show "$S25:src/napari_dan/model/weights/dan-x2-fluo.pt" >"$RUNS/dan-x2-fluo-s25.pt" 2>/dev/null; then
  python3 -m napari_dan.training.lr_estimator combine --base "$RUNS/dan-x2-fluo-s25.pt" \
    --coarse "$OUT/dan-x4-fluo.pt" --share 1 --name dan-x2-fluo --out "$OUT/dan-x2-fluo.pt" \
    --base-label "dan-x2-fluo of session 25 ($S25)" --coarse-label "$OUT/dan-x4-fluo.pt" \
    >"$OUT/x2-combine.log" 2>&1
else
  echo "no git history here: the x2 candidate is left out (combine it later: docs/cli.md)"
fi
for f in x4-estimator x4-restorer; do echo "== $f"; tail -n 2 "$OUT/$f.log"; done
ls -l "$OUT"
