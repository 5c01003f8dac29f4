#!/usr/bin/env bash
# The GPU check of issue 14 (see benchmarks/GPU.md and benchmarks/gpu_check.py).
#   bash benchmarks/gpu_check.sh --device cuda --out "$OUT" --wheels .whl   # on the GPU machine
#   bash benchmarks/gpu_check.sh --device cpu --out DIR --wheels .whl        # the CPU rehearsal
#   bash benchmarks/gpu_check.sh --device cpu --out DIR --fast               # its fast part
#   bash benchmarks/gpu_check.sh --check-wheels --wheels .whl --out DIR      # the wheel folder only
# PYTHON selects the interpreter (default python3). Exit status 1 when a phase failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m benchmarks.gpu_check "$@"
