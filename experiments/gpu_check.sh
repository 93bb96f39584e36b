#!/usr/bin/env bash
# The GPU path in one call (see experiments/gpu_check.py): writes gpu_check.json and gpu_check.md to $OUT.
#   experiments/gpu_check.sh                                        # trainer=gpu, full sizes, < 8 min on one GPU
#   GPU_CHECK_TRAINER=cpu GPU_CHECK_TINY=1 experiments/gpu_check.sh  # its CPU twin (tests/test_gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then source .venv/bin/activate; fi
exec python experiments/gpu_check.py "$@"
