#!/usr/bin/env bash
# Runs the whole test suite; GUI tests need a (virtual) X server, so use Xvfb when there is no display.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1280x1024x24" python3 -m pytest "$@"
fi
exec python3 -m pytest "$@"
