"""Speed and memory of sampling: benchmark models and inputs, the timed denoising loop, speed switches,
the step cache (First-Block Cache / TeaCache port) and its quality guard. See docs/speed.md.

The runtime switches a user sets when sampling (step cache, identity SDPA / fused injection, compile,
VAE tiling / slicing and CPU offload) live beside the pipeline in `ingredients.pipelines` and are
re-exported here. Names are imported on first use (PEP 562), so importing the package loads nothing heavy. Peak
memory of a process is measured by `ingredients.peak_memory` (training and evaluation use it too).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "timed_models": ("MODEL_KINDS", "SIZES", "BenchSize", "build_model", "model_config", "num_parameters"),
    "denoise_loop": ("ID_TOKEN_MODES", "LoopResult", "denoise", "identity_kwargs", "make_scheduler", "warmup_forwards"),
    "ingredients.pipelines.pipeline_memory": ("apply_memory_switches",),
    "quality": ("decode_frames", "frame_psnr", "generate_latents", "latent_mse", "step_cache_quality", "tiny_call_kwargs"),
    "sampling_inputs": ("SamplingInputs", "make_sampling_inputs", "rotary_embedding"),
    "ingredients.pipelines.step_cache": ("SIGNALS", "StepCache", "StepCacheConfig", "StepCacheStats", "disable_step_cache", "enable_step_cache"),
    "ingredients.pipelines.switches": ("COMPILE_MODES", "compile_transformer", "set_fused_identity_injection", "set_identity_sdpa"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _MODULE_OF[name]
    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
