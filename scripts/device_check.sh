#!/usr/bin/env bash
# One device check on one H100 / H200 (80 GB or more), nothing downloaded (random weights): real peak memory
# (torch.cuda.max_memory_allocated / _reserved) and time of the trainer's own micro-step of each training stage
# and of the sample stage's pipeline call, each beside the plan row of the same launch (one process, the
# stage's micro-batch, precision / dtype, VAE tiling) as a ratio; exits 1 if a ratio is outside 1.5x or a row
# does not match. Write the plan first (CPU, no GPU needed) from the same params files:
#   ingredients plan --params params.yaml profiles/full.yaml --json outputs/plan/full.json
#   bash scripts/device_check.sh --plan outputs/plan/full.json
# Without a plan JSON the lines say "no plan". On a CPU: bash scripts/device_check.sh --size rehearsal
# (the test suite runs it so). Arguments go to `python -m instruments.speed.device_check` (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout "${DEVICE_CHECK_TIMEOUT_S:-480}" "$PY" -m instruments.speed.device_check "$@"
