#!/usr/bin/env bash
# Sets up .venv with everything the harness needs, offline-capable afterwards. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.ingredients-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi
$VPY -m pip install -q --upgrade pip 'setuptools<81' wheel
# torch and torchvision must be installed as this matching pair: the CPU-only torch 2.13.0 breaks
# torchvision (`operator torchvision::nms does not exist`), and through it transformers, diffusers, open_clip and timm.
$VPY -m pip install -q torch==2.14.1 torchvision==0.29.1
$VPY -m pip install -q -e '.[dev]'
# insightface pins the GUI opencv-python, which collides with opencv-python-headless; scenedetect
# and facexlib require opencv-python too. Their real needs are listed in pyproject.toml.
$VPY -m pip install -q --no-deps 'insightface==2.1' 'scenedetect==0.7.2' 'facexlib==0.3.0'
# headless Chromium for the browser tests (MLflow compare view, report page): Debian's package
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium; the browser tests will fail" >&2
fi
rm -f .venv/.ingredients-setup-*
touch "$stamp"
echo "setup: done"
