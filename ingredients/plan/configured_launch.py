"""The accelerate config the plan holds a stage's configured launch (params `launch:`) against: the
row the plan table marks `(configured)` and the one the pre-flight checks before training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ingredients.launch_params import StageLaunch
from ingredients.plan.sharding import AccelerateConfig, read_accelerate_config


def launch_accelerate_config(launch: StageLaunch) -> AccelerateConfig:
    """`local`: one process; `accelerate`: its config file at `num_processes`; `ray`: DDP over its
    workers (Ray Train runs accelerate's default DDP, one worker per device)."""
    if launch.engine == "local":
        return AccelerateConfig(name="local", kind="single", num_processes=1, offload_optimizer=False, offload_params=False)
    if launch.engine == "ray":
        return AccelerateConfig(name="ray_train", kind="ddp" if launch.num_processes > 1 else "single",
                                num_processes=launch.num_processes, offload_optimizer=False, offload_params=False)
    cfg = read_accelerate_config(Path(launch.accelerate_config))
    kind = cfg.kind
    if kind in ("single", "ddp"):  # `accelerate launch --num_processes N` with a DDP or single config
        kind = "ddp" if launch.num_processes > 1 else "single"
    return dataclasses.replace(cfg, kind=kind, num_processes=launch.num_processes)


def mark_configured(configs: list[AccelerateConfig], configured: AccelerateConfig) -> tuple[list[AccelerateConfig], str]:
    """`configs` with the configured launch among them (appended when none of them is it); returns the
    list and the configured row's name."""
    same = [c for c in configs if dataclasses.replace(c, name=configured.name) == configured]
    for cfg in sorted(same, key=lambda c: c.name != configured.name):  # the same file first
        return configs, cfg.name
    named = dataclasses.replace(configured, name=f"{configured.name} x{configured.num_processes} (launch)")
    return [*configs, named], named.name
