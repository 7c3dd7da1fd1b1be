#!/usr/bin/env bash
# The one GPU check: tools/gpu_check.sh OUT_DIR [--budget SECONDS] [--dry-run]   (see tools/gpu_check.py)
# Runs from the repository root with i2i importable from it (no install needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
exec python3 tools/gpu_check.py "$@"
