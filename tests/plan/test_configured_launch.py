"""The plan row of a configured launch (ingredients/plan/configured_launch.py) and the plan stage's
loud line when that row does not fit."""

from __future__ import annotations

from pathlib import Path

from ingredients.launch_params import StageLaunch
from ingredients.plan.configured_launch import launch_accelerate_config, mark_configured
from ingredients.plan.plan import configured_misfits
from ingredients.plan.sharding import read_accelerate_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_each_engine_maps_to_the_row_it_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    configs = [read_accelerate_config(f) for f in CONFIGS]
    local = launch_accelerate_config(StageLaunch())
    assert (local.kind, local.num_processes) == ("single", 1)
    assert mark_configured(configs, local) == (configs, "cpu_single")  # the one-process config's row
    eight = launch_accelerate_config(StageLaunch(engine="accelerate", accelerate_config="configs/accelerate/multi_gpu_ddp.yaml",
                                                 num_processes=8))
    assert mark_configured(configs, eight) == (configs, "multi_gpu_ddp")
    four = launch_accelerate_config(StageLaunch(engine="accelerate", accelerate_config="configs/accelerate/multi_gpu_ddp.yaml",
                                                num_processes=4))
    rows, name = mark_configured(configs, four)  # no config file has 4 processes: a row of its own
    assert name == "multi_gpu_ddp x4 (launch)" and rows[-1].num_processes == 4 and rows[-1].kind == "ddp"
    ray = launch_accelerate_config(StageLaunch(engine="ray", num_processes=16))
    assert (ray.kind, ray.num_processes) == ("ddp", 16)
    zero3 = launch_accelerate_config(StageLaunch(engine="accelerate", accelerate_config="configs/accelerate/deepspeed_zero3.yaml",
                                                 num_processes=8))
    assert zero3.kind == "zero3"


def test_a_configured_row_that_does_not_fit_is_named_with_its_fixes():
    plan = {"settings": {"gpu_memory_gib": 80.0}, "stages": {
        "train_stage2": {"configs": {
            "cpu_single": {"configured": True, "fits": False, "total_gib": 84.0, "to_fit": ["accelerate config multi_gpu_ddp (36.6 GiB per device)"]},
            "multi_gpu_ddp": {"fits": True, "total_gib": 36.6}}},
        "sample": {"configs": {"offload_none": {"configured": True, "fits": True, "total_gib": 28.2}}}}}
    assert configured_misfits(plan) == [
        "train_stage2: the configured cpu_single needs 84.0 GiB of 80 GiB per device; would fit with: "
        "accelerate config multi_gpu_ddp (36.6 GiB per device)"]
    from ingredients.plan.plan import markdown_table

    plan["settings"].update(profile="full", backbone_only=False, mfu=0.4, gpu_peak_tflops=989.0, allowance="0.5 GiB")
    plan["stages"] = {"train_stage2": {"configs": {"cpu_single": {
        **plan["stages"]["train_stage2"]["configs"]["cpu_single"], "kind": "single", "num_processes": 1, "micro_batch": 8,
        "peak_gib": 76.0, "seconds_per_step": 1.0, "gpu_hours": 1.0,
        "memory_gib": {"weights_gib": 1.0, "gradients_gib": 1.0, "gradient_buckets_gib": 0.0, "optimizer_gib": 1.0,
                       "ema_gib": 0.0, "activations_gib": 73.0, "encode_gib": 1.0,
                       "optimizer_step_gib": 1.0, "precompute_gib": 0.0, "peak_gib": 76.0}}}}}
    table = markdown_table(plan)
    assert "| no (configured) |" in table
    assert "**DOES NOT FIT: train_stage2: the configured cpu_single needs 84.0 GiB" in table
