"""scripts/device_check.sh at rehearsal size on the CPU against a plan the real planner makes from the same
params: every figure within 1.5x of the plan row of its own launch, and a wrong row caught."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.training.conftest import REPO_ROOT

LINE = re.compile(r"^RESULT (\S+) (.*)$")
DOCUMENTED = "bash scripts/device_check.sh --size rehearsal"  # docs/speed.md
PARAMS = ["params.yaml", "profiles/full.yaml", "profiles/rehearsal.yaml"]


def _results(stdout: str) -> dict[str, dict[str, str]]:
    results = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            results[m.group(1)] = dict(re.findall(r"(\w+)=((?:mismatch|no plan|not in plan)[^=]*$|\S+)", m.group(2)))
    return results


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The rehearsal backbone's configs in a temporary folder, and the plan of that profile."""
    from instruments.rehearsal import write_backbone

    tmp = tmp_path_factory.mktemp("device_check")
    write_backbone(tmp / "CogVideoX-5b-I2V", 0)
    (tmp / "backbone.yaml").write_text(f"prepare:\n  full: {{backbone: {tmp / 'CogVideoX-5b-I2V'}}}\n")
    params = [*PARAMS, str(tmp / "backbone.yaml")]
    done = subprocess.run([sys.executable, "-m", "ingredients.plan.plan", "--params", *params, "--json", str(tmp / "plan.json")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, params


def _check(params: list[str], plan, *extra: str):
    return subprocess.run([*shlex.split(DOCUMENTED), "--steps", "1", "--params", *params, "--plan", str(plan), *extra],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)


# slow: 81 s at a load of 5 on 2 cores (the plan at rehearsal size 37 s, then three measured runs 44 s)
@pytest.mark.slow
def test_rehearsal_against_its_plan_is_within_1_5x(rehearsal):
    tmp, params = rehearsal
    done = _check(params, tmp / "plan.json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.startswith("DEVICE cpu size=rehearsal")
    results = _results(done.stdout)
    assert list(results) == ["train_stage1", "train_stage2", "sample"]
    plan = json.loads((tmp / "plan.json").read_text())["stages"]
    for name, values in results.items():
        assert values["within"] == "yes" and 1 / 1.5 <= float(values["peak_ratio"]) <= 1.5, (name, values)
        assert float(values["peak_ratio"]) == pytest.approx(
            float(values["peak_allocated_gib"]) / float(values["plan_peak_gib"]), abs=2e-3)
    # the rows of its own launch: one process at the stage's batch_size (1), offload none untiled
    assert results["train_stage2"]["plan_row"] == "cpu_single"
    assert float(results["train_stage2"]["plan_peak_gib"]) == pytest.approx(plan["train_stage2"]["configs"]["cpu_single"]["peak_gib"], abs=1e-4)
    assert results["sample"]["plan_row"] == "offload_none"


@pytest.mark.slow  # 36 s at a load of 5 (one stage measured twice) after the fixture
def test_a_wrong_row_is_caught(rehearsal):
    tmp, params = rehearsal
    plan = json.loads((tmp / "plan.json").read_text())
    row = plan["stages"]["train_stage2"]["configs"]["cpu_single"]
    # another launch's row (micro-batch 2): refused as a mismatch, not compared
    (tmp / "other_launch.json").write_text(json.dumps(plan).replace('"micro_batch": 1', '"micro_batch": 2'))
    done = _check(params, tmp / "other_launch.json", "--stage", "train_stage2")
    assert done.returncode == 1
    assert "plan=mismatch: the plan's one-process row cpu_single has micro-batch 2, this check ran 1" in done.stdout
    # the right launch with a wrong figure (the activations dropped, as before the plan counted its inputs)
    row["peak_gib"] = row["peak_gib"] / 3
    (tmp / "wrong_peak.json").write_text(json.dumps(plan))
    done = _check(params, tmp / "wrong_peak.json", "--stage", "train_stage2")
    assert done.returncode == 1 and _results(done.stdout)["train_stage2"]["within"] == "no"
