#!/usr/bin/env bash
# Train the bundled models side by side on one GPU, each for the same training-time budget (the
# schedule, cosine decay and stage switch, spans the budget). MODELS picks which (default: the
# fluorescence models first, as a lent GPU's time goes to them first, then the other four).
#
#   scripts/train-gpu.sh DATA_DIR OUT_DIR [MINUTES]
#
# DATA_DIR is laid out as ../shared/data (train/, microscopy/); OUT_DIR receives NAME.pt and
# NAME.log for each model. DEVICE=cpu (with a tiny MINUTES) checks the script without a GPU.
# INIT_DIR=DIR continues from DIR/NAME.pt; TRAIN_ARGS adds options (e.g. "--lr 1e-4"). Existing
# models in OUT_DIR are not replaced unless FORCE=1.
# The four photo/grey models start from scratch. The fluorescence recipes are the last stage of a
# chain (recipes.py): they start from the earlier stage's export, runs/<stage>/<stage>.pt under
# the current folder, and draw real specimens from DATA_DIR/train and
# DATA_DIR/microscopy/nuclei3d_cells3d.tif. Without those exports, give INIT_DIR (e.g. a folder
# holding copies of the bundled dan-x2-fluo.pt / dan-x4-fluo.pt) or leave them out of MODELS;
# the script checks this before it starts anything.
# The recipes (napari-dan train --recipe NAME) say everything else, including the benchmark image
# left out of the training data.
set -u
DATA=${1:?DATA_DIR}; OUT=${2:?OUT_DIR}; MIN=${3:-7}; DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
MODELS=${MODELS:-dan-x2-fluo dan-x4-fluo dan-x4-rgb dan-x2-rgb dan-x4-gray dan-x2-gray}
for name in $MODELS; do
  if [ -e "$OUT/$name.pt" ] && [ -z "${FORCE:-}" ]; then
    echo "error: $OUT/$name.pt exists; use another OUT_DIR or FORCE=1 to replace it" >&2; exit 2
  fi
done
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
for name in $MODELS; do  # every model's starting weights exist, before anything starts
  if [ -n "${INIT_DIR:-}" ]; then inits="$INIT_DIR/$name.pt"
  else inits=$(python3 -c "from napari_dan.training.recipes import recipe
i = recipe('$name').init_from or []
print(' '.join([i] if isinstance(i, str) else i))") || exit 2
  fi
  for f in $inits; do
    if [ ! -e "$f" ]; then
      echo "error: $name starts from $f, which is not here: train its earlier stage first" \
        "(napari-dan train --recipe $(basename "$f" .pt)), set INIT_DIR=DIR with DIR/$name.pt," \
        "or leave $name out of MODELS" >&2; exit 2
    fi
  done
done
GRAY=("$DATA/train" "$DATA/microscopy/nuclei3d_cells3d.tif" "$DATA/microscopy/Bead_Image1_crop.tif")

run() {
  local name=$1; shift
  case " $MODELS " in *" $name "*) ;; *) return ;; esac
  local data=()
  [ $# -gt 0 ] && data=(--data "$@")
  python3 -m napari_dan.cli train --recipe "$name" --device "$DEVICE" --steps 1000000 \
    --budget-minutes "$MIN" --threads "${THREADS:-4}" --run-dir "${RUNS:-/tmp/runs}/$name" \
    --output "$OUT/$name.pt" ${INIT_DIR:+--init-from "$INIT_DIR/$name.pt"} ${TRAIN_ARGS:-} \
    "${data[@]}" >"$OUT/$name.log" 2>&1 &
}
FLUO=("$DATA/train" "$DATA/microscopy/nuclei3d_cells3d.tif")  # the recipes' real specimens
run dan-x2-fluo "${FLUO[@]}"
run dan-x4-fluo "${FLUO[@]}"
run dan-x4-rgb "$DATA/train"
run dan-x2-rgb "$DATA/train"
run dan-x4-gray "${GRAY[@]}"
run dan-x2-gray "${GRAY[@]}"
wait
for f in "$OUT"/*.log; do echo "== $f"; grep -v '^{"step": [0-9]*[1-9]25,\|^{"step": [0-9]*[1-9]75,' "$f" | tail -n 3; done
