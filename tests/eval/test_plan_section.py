"""The report's plan section from a plan JSON as the plan stage writes it."""

from __future__ import annotations

import json

from eval.plan_section import plan_section


def plan(profile: str) -> dict:
    return {"settings": {"profile": profile, "allowance": "0.5 GiB CUDA context + 10% of the counted peak",
                         "gpu_memory_gib": 80.0, "mfu": 0.4, "gpu_peak_tflops": 989.0},
            "stages": {"train_stage2": {"configs": {
                "deepspeed_zero2": {"num_processes": 8, "peak_gib": 30.0, "total_gib": 33.4, "fits": True, "gpu_hours": 28.1},
                "cpu_ddp": {"num_processes": 3, "peak_gib": None, "fits": False, "error": "batch_size 8 is not divisible by 3"}}},
                "sample": {"cases": 100, "configs": {
                    "offload_none": {"peak_gib": 72.3, "total_gib": 80.1, "fits": False, "configured": True, "gpu_hours": 9.7}}}}}


def test_rows_per_stage_and_config(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan("full")))
    text = "\n".join(plan_section(path))
    assert "<h2>What this study costs at full size</h2>" in text
    assert "<td>train_stage2</td><td>deepspeed_zero2</td><td>8</td><td>33.4</td><td>yes</td><td>28.1</td>" in text
    assert "batch_size 8 is not divisible by 3" in text
    assert "<td>no (configured)</td><td>9.7</td>" in text


def test_tiny_profile_is_named_and_a_missing_plan_says_so(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan("tiny")))
    assert "profile tiny" in plan_section(path)[0]
    assert "does not exist" in "".join(plan_section(tmp_path / "none.json"))
    assert plan_section(None) == []
