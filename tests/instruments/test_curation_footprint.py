"""The curation footprint measurement (docs/measurements.md, issue 30) at test size: it makes its
single-shot video and reports the curate stage's peak memory, time and clips."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow  # 25 s idle: the tiny data's first video synthesised, then one curate stage run
def test_a_short_single_shot_reports_memory_time_and_its_clip(tmp_path):
    cmd = "python -m instruments.curation_footprint --width 384 --height 216 --seconds 2 --work WORK"
    out = subprocess.run([sys.executable, *cmd.replace("WORK", str(tmp_path)).split()[1:]], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["video"] == "384x216_2s" and result["returncode"] == 0
    assert result["clips"] == 1 and result["frames"] == 50
    assert 0.2 < result["peak_rss_gib"] < 4 and result["wall_s"] > 0 and result["cpu_s"] > 0
