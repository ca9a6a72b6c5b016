"""Speed and memory of sampling: benchmark models and inputs, the timed denoising loop, speed switches,
the step cache (First-Block Cache / TeaCache port) and its quality guard. See docs/speed.md."""

from .bench_models import MODEL_KINDS, SIZES, BenchSize, build_model, model_config, num_parameters
from .denoise_loop import ID_TOKEN_MODES, LoopResult, denoise, identity_kwargs, make_scheduler, warmup_forwards
from .peak_memory import peak_bytes, peak_memory, reset_peak_memory
from .pipeline_memory import apply_memory_switches
from .quality import decode_frames, frame_psnr, generate_latents, latent_mse, step_cache_quality, tiny_call_kwargs
from .sampling_inputs import SamplingInputs, make_sampling_inputs, rotary_embedding
from .step_cache import SIGNALS, StepCache, StepCacheConfig, StepCacheStats, disable_step_cache, enable_step_cache
from .switches import COMPILE_MODES, compile_transformer, set_fused_identity_injection, set_identity_sdpa

__all__ = [
    "COMPILE_MODES", "ID_TOKEN_MODES", "MODEL_KINDS", "SIGNALS", "SIZES", "BenchSize", "LoopResult", "SamplingInputs",
    "StepCache", "StepCacheConfig", "StepCacheStats", "apply_memory_switches", "build_model", "compile_transformer",
    "decode_frames", "denoise", "generate_latents", "disable_step_cache", "enable_step_cache", "frame_psnr", "identity_kwargs",
    "latent_mse", "make_sampling_inputs", "make_scheduler", "model_config", "num_parameters", "peak_bytes",
    "peak_memory", "reset_peak_memory", "rotary_embedding", "set_fused_identity_injection", "set_identity_sdpa",
    "step_cache_quality", "tiny_call_kwargs", "warmup_forwards",
]
