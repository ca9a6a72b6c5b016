"""The `ray` engine of ingredients/launch.py: Ray Train runs a stage module's `main(args)` on N workers.

`TorchTrainer` (Ray's documented Accelerate integration) starts one worker per process on the Ray
cluster `compute.address` names (null: a local instance, `compute.num_cpus` CPUs) and sets up the
process group (gloo on CPU, NCCL with `launch.ray.use_gpu`); inside, the module's own `Accelerator` /
`PartialState` joins it, so the trainer and the sampler run unchanged. A lost worker or node fails the
group and Ray Train restarts it, up to `launch.ray.max_failures` times; the module then resumes by
itself (training: `--resume auto` finds its last checkpoint; sampling skips finished videos). Workers
read and write the stage's paths from the launching directory, so on several nodes that directory
must be on a filesystem every node shares.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ingredients.compute import ComputeParams, ray_session
from ingredients.launch_params import PLANNED_PEAK_ENV, LaunchParams, StageLaunch

logger = logging.getLogger(__name__)

# passed to the workers, which on a cluster do not inherit the launching process's environment: the
# planned peak, threads, MLflow settings and the DVC experiment name its runs are tagged with
FORWARDED_ENV = (PLANNED_PEAK_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MLFLOW_DISABLE_TELEMETRY",
                 "MLFLOW_TRACKING_URI", "DVC_EXP_NAME")


def worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the module's `main(args)` in the launching directory."""
    os.chdir(config["cwd"])
    os.environ.update(config["env"])
    if config.get("preflight") is not None:  # GPUs on other nodes: plan against this worker's device
        from ingredients.preflight import preflight

        params, stage, chosen, launch = config["preflight"]
        planned = preflight(params, stage, chosen, launch)
        if planned is not None:
            os.environ[PLANNED_PEAK_ENV] = repr(planned)
    module = importlib.import_module(config["module"])
    module.main(list(config["args"]))


def run_ray_train(module: str, module_args: list[str], chosen: StageLaunch, launch: LaunchParams,
                  compute: ComputeParams, params: dict[str, Any], stage: str) -> None:
    """Run `module.main(module_args)` on `chosen.num_processes` Ray Train workers; raises when the
    group failed more than `launch.ray.max_failures` times."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not callable(getattr(importlib.import_module(module), "main", None)):
        raise ValueError(f"launch engine 'ray' runs {module}.main(args); {module} has no main()")
    ray_cfg = launch.ray
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    in_worker = (params, stage, chosen, launch) if (
        stage.startswith("train_") and ray_cfg.use_gpu and PLANNED_PEAK_ENV not in env
        and launch.device_memory_gib is None) else None
    storage = ray_cfg.storage_path or tempfile.mkdtemp(prefix="ingredients_ray_train_")
    try:
        with ray_session(compute):
            trainer = TorchTrainer(
                worker_loop,
                train_loop_config={"module": module, "args": list(module_args), "cwd": str(Path.cwd()), "env": env,
                                   "preflight": in_worker},
                torch_config=TorchConfig(backend="nccl" if ray_cfg.use_gpu else "gloo"),
                scaling_config=ScalingConfig(num_workers=chosen.num_processes, use_gpu=ray_cfg.use_gpu,
                                             resources_per_worker={"CPU": ray_cfg.cpus_per_worker}),
                run_config=RunConfig(name=stage, storage_path=storage,
                                     failure_config=FailureConfig(max_failures=ray_cfg.max_failures)),
            )
            trainer.fit()
    finally:
        if ray_cfg.storage_path is None:
            shutil.rmtree(storage, ignore_errors=True)
    logger.info("%s: %s finished on %d Ray Train workers", stage, module, chosen.num_processes)
