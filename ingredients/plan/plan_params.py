"""The `plan:` section of params.yaml: the GPU the plan is made for and the stated allowances."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PlanParams(BaseModel):
    """gpus: processes of every multi-process accelerate config (None: each config's own);
    gpu_memory_gib: one device's memory; gpu_peak_tflops: its dense bf16 peak (H100 / H200 SXM: 989);
    mfu: the model FLOPs utilisation assumed for time; cuda_context_gib and allocator_fraction: the
    allowance added to the counted peak (CUDA context, and the caching allocator's reserve beyond what
    tensors hold, as a fraction of the peak); configs: the folder of accelerate configs;
    sample_cases: benchmark cases the sample stage's GPU-hours are given for."""

    model_config = ConfigDict(extra="forbid")

    gpus: int | None = Field(None, ge=1)
    gpu_memory_gib: float = Field(80.0, gt=0)
    gpu_peak_tflops: float = Field(989.0, gt=0)
    mfu: float = Field(0.4, gt=0, le=1)
    cuda_context_gib: float = Field(0.5, ge=0)
    allocator_fraction: float = Field(0.1, ge=0)
    configs: str = "configs/accelerate"
    sample_cases: int = Field(100, ge=1)
