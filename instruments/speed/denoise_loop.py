"""The guided denoising loop of `IngredientsPipeline.__call__`, on the transformer alone, timed per step.

Text encoder and VAE are left out (they need weights and run once per video); what is timed is what
runs `num_inference_steps` times: guidance batch [negative, positive], the transformer forward, the
guidance mix and the `CogVideoXDPMScheduler` step. ID tokens are computed once per generation
(`model.encode_identities`) or, to measure what that saves, recomputed inside every forward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import CogVideoXDPMScheduler
from torch import nn

from ingredients.models import IdentityBatch, IngredientsTransformer3DModel
from ingredients.model_folder.tiny import SCHEDULER_CONFIG
from instruments.speed.sampling_inputs import SamplingInputs

ID_TOKEN_MODES = ("once", "per_step")


@dataclass
class LoopResult:
    """Final latents [1, F, C, h, w] and the seconds of each measured step."""

    latents: torch.Tensor
    step_seconds: list[float]


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A barrier that makes wall-clock times include queued GPU work (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def identity_kwargs(
    model: nn.Module, inputs: SamplingInputs, id_tokens: str = "once", guidance: bool = True
) -> tuple[dict[str, Any], float | None]:
    """Forward kwargs that carry the identities, and the seconds spent making ID tokens up front.

    ours, 'once': ID tokens from `encode_identities` (batch 1, repeated for both guidance branches, as
    the pipeline does); ours, 'per_step': photo features, so every forward reruns the projector;
    ConsisID: its single-identity photo features (its forward always reruns its extractor);
    bare backbone: none.
    """
    if id_tokens not in ID_TOKEN_MODES:
        raise ValueError(f"id_tokens must be one of {ID_TOKEN_MODES}, got {id_tokens!r}")
    if isinstance(model, IngredientsTransformer3DModel):
        if id_tokens == "per_step":
            return {"id_cond": inputs.id_cond, "id_vit_hidden": inputs.id_vit_hidden}, None
        sync = synchronizer(inputs.latents.device)
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            ids = model.encode_identities(inputs.id_cond, inputs.id_vit_hidden, batch_size=1)
        sync()
        seconds = time.perf_counter() - start
        if guidance:
            ids = IdentityBatch(torch.cat([ids.tokens] * 2), torch.cat([ids.mask] * 2))
        return {"identities": ids}, seconds
    if getattr(model.config, "is_train_face", False):
        id_cond, id_vit = inputs.first_identity()
        return {"id_cond": id_cond, "id_vit_hidden": id_vit}, None
    return {}, None


def make_scheduler() -> CogVideoXDPMScheduler:
    """CogVideoX-5B's DPM scheduler (v-prediction, zero-SNR, trailing spacing), as the tiny profile uses."""
    return CogVideoXDPMScheduler(**SCHEDULER_CONFIG)


def model_input(latents: torch.Tensor, image_latents: torch.Tensor, t: torch.Tensor, scheduler, guidance: bool) -> torch.Tensor:
    """[B, F, C, h, w] noisy latents (doubled under guidance) ⊕ image latents on the channel axis -> [B', F, 2C, h, w]."""
    latent_in = torch.cat([latents] * 2) if guidance else latents
    latent_in = scheduler.scale_model_input(latent_in, t)
    image_in = torch.cat([image_latents] * 2) if guidance else image_latents
    return torch.cat([latent_in, image_in], dim=2)


@torch.no_grad()
def warmup_forwards(model: nn.Module, inputs: SamplingInputs, extra: dict[str, Any], count: int, guidance: bool = True) -> list[float]:
    """`count` forwards at the first timestep, not advancing any sampler (compilation, allocator, autotuning)."""
    sync = synchronizer(inputs.latents.device)
    scheduler = make_scheduler()
    scheduler.set_timesteps(50, device=inputs.latents.device)
    t = scheduler.timesteps[0]
    latent_in = model_input(inputs.latents, inputs.image_latents, t, scheduler, guidance)
    prompt = inputs.prompt_embeds if guidance else inputs.prompt_embeds[1:]
    seconds = []
    for _ in range(count):
        sync()
        start = time.perf_counter()
        model(
            hidden_states=latent_in, encoder_hidden_states=prompt, timestep=t.expand(latent_in.shape[0]),
            image_rotary_emb=inputs.rotary, return_dict=False, **extra,
        )
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


@torch.no_grad()
def denoise(
    model: nn.Module,
    inputs: SamplingInputs,
    extra: dict[str, Any],
    num_inference_steps: int = 50,
    run_steps: int | None = None,
    guidance_scale: float = 6.0,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> LoopResult:
    """Run the first `run_steps` (default all) of a `num_inference_steps` guided DPM sampling run.

    `extra` are the identity kwargs from `identity_kwargs`. The scheduler's noise comes from `generator`
    (default: a fresh one seeded with `seed`). Each step is timed from the guidance batch to the
    scheduler update, with device synchronisation on both ends.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    run_steps = num_inference_steps if run_steps is None else run_steps
    if not 1 <= run_steps <= num_inference_steps:
        raise ValueError(f"run_steps must be in 1..{num_inference_steps}, got {run_steps}")
    device, dtype = inputs.latents.device, inputs.latents.dtype
    guidance = guidance_scale > 1.0
    sync = synchronizer(device)
    scheduler = make_scheduler()
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(seed)
    prompt = inputs.prompt_embeds if guidance else inputs.prompt_embeds[1:]
    latents = inputs.latents.clone()
    old_pred = None
    step_seconds = []
    for i, t in enumerate(timesteps[:run_steps]):
        sync()
        start = time.perf_counter()
        latent_in = model_input(latents, inputs.image_latents, t, scheduler, guidance)
        noise_pred = model(
            hidden_states=latent_in, encoder_hidden_states=prompt, timestep=t.expand(latent_in.shape[0]),
            image_rotary_emb=inputs.rotary, return_dict=False, **extra,
        )[0].float()
        if guidance:
            noise_uncond, noise_text = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
        latents, old_pred = scheduler.step(
            noise_pred, old_pred, t, timesteps[i - 1] if i > 0 else None, latents, generator=generator, return_dict=False
        )
        latents = latents.to(dtype)
        sync()
        step_seconds.append(time.perf_counter() - start)
    return LoopResult(latents=latents, step_seconds=step_seconds)
