"""scripts/device_check.sh at rehearsal size on the CPU: the same code the GPU check runs, its output
lines, and the plan comparison (ratios with a plan JSON, "no plan" without)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest

from tests.training.conftest import REPO_ROOT

LINE = re.compile(r"^RESULT (\S+) (.*)$")


DOCUMENTED = "bash scripts/device_check.sh --size rehearsal"  # docs/speed.md


def _run(*args: str, timeout: float = 600) -> dict[str, dict[str, str]]:
    proc = subprocess.run([*shlex.split(DOCUMENTED), "--steps", "1", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("DEVICE cpu size=rehearsal")
    results = {}
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if m:
            results[m.group(1)] = dict(kv.split("=", 1) for kv in re.findall(r"(\w+=(?:no plan|not in plan|\S+))", m.group(2)))
    return results


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_rehearsal_without_a_plan(tmp_path):
    results = _run("--compile", "off", "--plan", str(tmp_path / "absent.json"))
    assert list(results) == ["train_stage2", "sample_bare_eager", "sample_ours_eager"]
    for values in results.values():
        assert float(values["seconds"]) > 0 and float(values["peak_rss_gib"]) > 0
        assert values["plan"] == "no plan"


def test_rehearsal_against_a_plan_prints_ratios(tmp_path):
    plan = {"stages": {
        "train_stage2": {"parameters": 1, "trainable_parameters": 1, "flops_per_step": 1.0, "configs": {
            "multi_gpu_ddp": {"num_processes": 8, "peak_gib": 50.0, "fits": True, "seconds_per_step": 9.0, "grad_accum": 1},
            "single_gpu": {"num_processes": 1, "peak_gib": 2.0, "fits": True, "seconds_per_step": 4.0, "grad_accum": 2}}},
        "sample": {"parameters": 1, "trainable_parameters": 0, "flops_per_step": 1.0, "steps": 50,
                   "phase_peak_gib": {"denoise": 0.5}, "configs": {
                       "offload_none_tiled": {"configured": True, "peak_gib": 3.0, "fits": True, "seconds_per_video": 100.0}}},
    }}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    results = _run("--compile", "off", "--plan", str(tmp_path / "plan.json"))
    train = results["train_stage2"]
    assert float(train["plan_peak_gib"]) == 2.0 and float(train["plan_seconds"]) == 2.0  # the 1-process config, per micro-step
    assert float(train["peak_ratio"]) == pytest.approx(float(train["peak_rss_gib"]) / 2.0, abs=2e-3)
    assert float(train["seconds_ratio"]) == pytest.approx(float(train["seconds"]) / 2.0, abs=2e-3)
    ours = results["sample_ours_eager"]
    assert float(ours["plan_peak_gib"]) == 0.5 and float(ours["plan_seconds"]) == 2.0  # denoise phase; 100 s / 50 steps
    assert results["sample_bare_eager"]["plan"] == "not in plan"


@pytest.mark.slow  # inductor compiles the blocks on the CPU: minutes on 2 busy cores
def test_rehearsal_with_compiled_sampling():
    results = _run("--compile", "regional", "--plan", "/nonexistent.json", timeout=1200)
    assert {"sample_bare_compiled", "sample_ours_compiled"} <= set(results)
