"""Pre-flight of a training stage: the plan of its configured launch (micro-batch per process,
dtypes, checkpointing, sharding; ingredients/plan/) against the memory of one device, before any
model is loaded. A launch that cannot fit is refused with the plan's fixes; one that fits returns its
planned peak, which the trainer logs beside the measured one (MLflow `planned_peak_memory_mb`).

The device's memory is `launch.device_memory_gib`, else the GPU's own; without a GPU and without the
setting there is nothing to hold the plan against (CPU memory is not what the plan counts) and the
pre-flight says so and passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import torch

from ingredients.config import section, validate_model
from ingredients.launch_params import LaunchParams, StageLaunch

logger = logging.getLogger(__name__)

GIB = float(2**30)


class PreflightError(RuntimeError):
    """The configured launch does not fit the device (the message names the plan's fixes)."""


def device_memory_gib(launch: LaunchParams) -> float | None:
    """`launch.device_memory_gib`, else the total memory of this process's GPU, else None (no GPU)."""
    if launch.device_memory_gib is not None:
        return launch.device_memory_gib
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB
    return None


def plan_launch(params: Mapping[str, Any], stage: str, chosen: StageLaunch, memory_gib: float) -> dict[str, Any]:
    """The plan's row of `chosen` for training `stage` (train_stage1 | train_stage2) on a device of
    `memory_gib`: its memory terms, `fits`, `to_fit` (see ingredients/plan/plan.py)."""
    from ingredients.plan.configured_launch import launch_accelerate_config
    from ingredients.plan.model_configs import profile_models
    from ingredients.plan.plan import TRAIN_STAGES, Settings, plan_training
    from ingredients.plan.plan_params import PlanParams
    from ingredients.training.stage_spec import build_stage_spec

    spec = build_stage_spec(section(params, "train", required=True), TRAIN_STAGES[stage])
    plan_params = validate_model(PlanParams, {**section(params, "plan"), "gpu_memory_gib": memory_gib}, "plan")
    cfg = launch_accelerate_config(chosen)
    k = spec.identities.max or int(section(params, "benchmark").get("max_identities", 2))
    planned = plan_training(spec, profile_models(section(params, "prepare")), [cfg], Settings(plan_params), k)
    return planned["configs"][cfg.name]


def preflight(params: Mapping[str, Any], stage: str, chosen: StageLaunch, launch: LaunchParams) -> float | None:
    """Refuse (PreflightError) a launch the plan says cannot fit; else its planned peak in GiB (None
    when there is no device memory to hold it against)."""
    memory = device_memory_gib(launch)
    if memory is None:
        logger.info("pre-flight of %s: no GPU here and launch.device_memory_gib is null: nothing to hold the plan against",
                    stage)
        return None
    t0 = time.perf_counter()
    row = plan_launch(params, stage, chosen, memory)
    what = f"{chosen.engine} launch with {chosen.num_processes} process(es)"
    if not row["fits"]:
        need = f"{row['total_gib']:.2f} GiB per device" if row.get("total_gib") is not None else row.get("error", "")
        fixes = "; ".join(row.get("to_fit") or []) or "none the plan knows: a device with more memory"
        raise PreflightError(
            f"pre-flight of {stage}: the {what} needs {need} (plan: `ingredients plan`), the device has "
            f"{memory:.2f} GiB (launch.device_memory_gib or the GPU's own). It would fit with: {fixes}")
    logger.info("pre-flight of %s: the %s plans a peak of %.2f GiB (%.2f GiB with the allowance) of %.2f GiB (%.1f s)",
                stage, what, row["peak_gib"], row["total_gib"], memory, time.perf_counter() - t0)
    return float(row["peak_gib"])
