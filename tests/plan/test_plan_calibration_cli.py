"""docs/plan.md's calibration command, `ingredients plan --params params.yaml profiles/full.yaml
configs/plan/<file>.yaml --backbone-only --stage sample`, test-sized: the tiny profile's params with a
2-block transformer instead of profiles/full.yaml, and a calibration file's sampling settings
(49 x 480 x 720, bf16, 50 steps, CFG 6). The plan of the bare backbone's sampling comes out, nothing else.

Slow: fake sampling steps at 480 x 720 (minutes on 2 cores); the plan's numbers are tested in
tests/plan/ on smaller shapes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = "prepare:\n  transformer: {num_layers: 2, extractor_depth: 5}\n"


@pytest.mark.slow
def test_the_backbone_only_plan_of_a_calibration_file(tmp_path):
    (tmp_path / "small.yaml").write_text(SMALL)
    exe = Path(sys.executable).parent / "ingredients"
    done = subprocess.run([str(exe), "plan", "--params", "params.yaml", str(tmp_path / "small.yaml"),
                           "configs/plan/consisid_inference.yaml", "--backbone-only", "--stage", "sample",
                           "--json", str(tmp_path / "p.json")], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads((tmp_path / "p.json").read_text())
    assert set(plan["stages"]) == {"sample"}
    assert any((config.get("peak_gib") or 0) > 0 for config in plan["stages"]["sample"]["configs"].values())
