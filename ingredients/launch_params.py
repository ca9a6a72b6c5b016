"""The `launch:` section of params.yaml: how each GPU stage (train_stage1, train_stage2, sample) gets
its processes. `ingredients/launch.py` runs it; docs/scaling.md says what runs where.

```yaml
launch:
  train:                    # train_stage1 and train_stage2
    engine: local           # local | accelerate | ray
    accelerate_config: configs/accelerate/cpu_single.yaml
    num_processes: 1
  sample: {engine: local, accelerate_config: configs/accelerate/cpu_single.yaml, num_processes: 1}
  ray: {use_gpu: false, cpus_per_worker: 1, max_failures: 2, storage_path: null}
  device_memory_gib: null
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ENGINES = ("local", "accelerate", "ray")
# the dvc.yaml stages a launch serves, and the `launch:` entry each reads
STAGE_LAUNCH = {"train_stage1": "train", "train_stage2": "train", "sample": "sample"}


class StageLaunch(BaseModel):
    """One GPU stage's launch. `local`: one process, this one (the tiny default); `accelerate`:
    `accelerate launch --config_file ACCELERATE_CONFIG --num_processes N` on this machine (one process
    per GPU); `ray`: Ray Train, N workers on the Ray cluster of `compute.address` (DDP through
    accelerate; `accelerate_config` is not read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["local", "accelerate", "ray"] = "local"
    accelerate_config: str = Field("configs/accelerate/cpu_single.yaml",
                                   description="accelerate: the config file (configs/accelerate/*.yaml)")
    num_processes: int = Field(1, ge=1, description="accelerate: processes on this machine; ray: workers")

    def model_post_init(self, _context: Any) -> None:
        if self.engine == "local" and self.num_processes != 1:
            raise ValueError(f"num_processes {self.num_processes} with engine 'local' (one process): "
                             "use engine 'accelerate' (this machine) or 'ray' (a cluster)")
        if self.engine == "accelerate" and not Path(self.accelerate_config).is_file():
            raise ValueError(f"accelerate_config {self.accelerate_config!r}: no such file "
                             "(the configs are in configs/accelerate/)")


class RayLaunch(BaseModel):
    """Ray Train settings of `engine: ray` (the cluster itself is `compute.address`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); false: CPU workers (gloo)")
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0, description="restarts of the worker group after a lost worker or node; "
                                                   "training resumes from its last checkpoint, sampling per case")
    storage_path: str | None = Field(None, description="Ray Train's run folder (null: a temporary folder); "
                                                       "on several nodes a path every node sees")


class LaunchParams(BaseModel):
    """The `launch:` section (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: StageLaunch = Field(default_factory=StageLaunch)
    sample: StageLaunch = Field(default_factory=StageLaunch)
    ray: RayLaunch = Field(default_factory=RayLaunch)
    device_memory_gib: float | None = Field(
        None, gt=0, description="pre-flight: memory of one device in GiB (null: the GPU's own; no GPU: no pre-flight)")

    def for_stage(self, stage: str) -> StageLaunch:
        """The launch of a dvc.yaml stage (train_stage1, train_stage2, sample)."""
        if stage not in STAGE_LAUNCH:
            raise ValueError(f"no launch for stage {stage!r}; GPU stages: {', '.join(STAGE_LAUNCH)}")
        return getattr(self, STAGE_LAUNCH[stage])

# the pre-flight's planned peak (GiB) for the trainer to log beside the measured one (set by the launcher)
PLANNED_PEAK_ENV = "INGREDIENTS_PLANNED_PEAK_GIB"
