#!/usr/bin/env bash
# Runs the whole test suite (what CI runs); GUI tests need a (virtual) X server, so Xvfb is used
# when there is no display.
#   bash scripts/test.sh            everything
#   bash scripts/test.sh --fast     the fast lane: no GUI and no tests marked slow (384 of the
#                                   462 tests, session 31; run the whole suite before pushing)
# Other arguments go to pytest (e.g. bash scripts/test.sh --fast -x tests/engine/test_engine.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
args=()
if [ "${1:-}" = "--fast" ]; then
  shift
  args=(-q -m "not slow and not gui")
fi
# some tests outside the gui mark still touch Qt (the manifest), so Xvfb serves both lanes
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1280x1024x24" python3 -m pytest "${args[@]}" "$@"
fi
exec python3 -m pytest "${args[@]}" "$@"
