"""`python -m instruments.bench_compute` (docs/measurements.md, "Compute engines"), test-sized: one video.

Slow: it starts and stops a local Ray instance twice (about a minute on 2 idle cores); the engines
themselves are in the default suite (tests/test_compute.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_documented_measurement_runs_every_engine_to_equal_manifests():
    run = subprocess.run([sys.executable, "-m", "instruments.bench_compute", "--videos", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(run.stdout)
    assert rows["videos"] == 1 and rows["manifests_equal"] is True
    for key in ("local_1", "local_pool_2", "ray_1_total", "ray_2_total"):
        assert rows[key] > 0, key
