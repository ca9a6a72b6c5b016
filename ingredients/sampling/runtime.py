"""Runtime settings of sampling: what a user switches when generating, applied to a loaded pipeline.

The `sample:` keys `dtype`, `vae_tiling`, `vae_slicing`, `offload`, `compile`, `step_cache`,
`step_cache_threshold`, `identity_sdpa` and `fused_identity_injection` (schema in
`ingredients.sampling.sample.SampleParams`) are read by the sample stage and by `ingredients generate`.
Full size needs them: the 6.4 B transformer and T5-XXL in float32 are 25 + 19 GB where bf16 holds
half, and the VAE decode of 49 x 480 x 720 is the largest single activation unless tiled.
The switches live beside the pipeline (`ingredients.pipelines`: step_cache, switches,
pipeline_memory; the speed tools measure them); this module is where sampling sets them.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch

from ingredients.pipelines.pipeline_memory import apply_memory_switches
from ingredients.pipelines.step_cache import StepCacheConfig, enable_step_cache
from ingredients.pipelines.switches import compile_transformer, set_fused_identity_injection, set_identity_sdpa

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DType = Literal["float32", "bfloat16", "float16"]
Offload = Literal["none", "model", "sequential"]
StepCacheSignal = Literal["off", "first_block", "modulated_input"]
RUNTIME_KEYS = ("dtype", "vae_tiling", "vae_slicing", "offload", "compile", "step_cache", "step_cache_threshold",
                "identity_sdpa", "fused_identity_injection")


def check_runtime(params: Any, device: torch.device | str) -> None:
    """Settings that cannot work on `device` or together, named with their fix."""
    device = torch.device(device)
    if params.offload != "none" and device.type == "cpu":
        raise ValueError(f"sample.offload is {params.offload!r} but sampling runs on the CPU: CPU offload moves "
                         "weights between a GPU and the CPU; set sample.offload: none")
    if params.dtype == "float16" and device.type == "cpu":
        raise ValueError("sample.dtype 'float16' needs a GPU; use bfloat16 or float32 on the CPU")
    if params.compile and params.offload == "sequential":
        raise ValueError("sample.compile with sample.offload: sequential: sequential offload moves every weight at "
                         "each call, which a compiled graph cannot hold; use offload: model or compile: false")


def configure_pipeline(pipe, params: Any, device: torch.device | str):
    """Apply the runtime settings to a pipeline loaded in `DTYPES[params.dtype]`; returns it on `device`
    (or offloaded). Order: identity switches, step cache, compile, then VAE switches and placement
    (offload hooks wrap whatever forward they find, so they come last)."""
    check_runtime(params, device)
    model = pipe.transformer
    if params.identity_sdpa is not None:
        set_identity_sdpa(model, params.identity_sdpa)
    if params.fused_identity_injection is not None:
        set_fused_identity_injection(model, params.fused_identity_injection)
    if params.step_cache != "off":
        enable_step_cache(model, StepCacheConfig(threshold=params.step_cache_threshold, signal=params.step_cache))
    if params.compile:
        # whole model in one graph (no graph break: tests/models/test_transformer.py); with a step cache
        # its Python decisions stay eager and each block is compiled instead
        compile_transformer(model, "regional" if params.step_cache != "off" else "full", fullgraph=True)
    if params.offload == "sequential":
        apply_memory_switches(pipe, params.vae_tiling, params.vae_slicing, cpu_offload=False, device="cpu")
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        apply_memory_switches(pipe, params.vae_tiling, params.vae_slicing, cpu_offload=params.offload == "model",
                              device=device)
    logger.info("sampling runtime: %s", {k: getattr(params, k) for k in RUNTIME_KEYS})
    return pipe
