#!/usr/bin/env bash
# One device check of the full-size model on one H100 / H200 (80 GB or more), at most 8 minutes, nothing
# downloaded (random weights): real peak memory (torch.cuda.max_memory_allocated / _reserved) and time of
# the stage-2 training step and of guided sampling steps (bare vs ours, eager vs compiled), each beside
# the cost plan's prediction as a ratio. Write the plan first (CPU, no GPU needed):
#   ingredients plan --params params.yaml profiles/full.yaml --json outputs/plan/full.json
#   bash scripts/device_check.sh --plan outputs/plan/full.json
# Without a plan JSON the lines say "no plan". On a CPU: bash scripts/device_check.sh --size rehearsal
# (the test suite runs it so). Arguments go to `python -m instruments.speed.device_check` (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout "${DEVICE_CHECK_TIMEOUT_S:-480}" "$PY" -m instruments.speed.device_check "$@"
