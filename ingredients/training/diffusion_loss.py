"""The diffusion loss as CogVideoX trains it: v-prediction turned into an x0 estimate, SNR-weighted.

    noisy   = scheduler.add_noise(x0, noise, t)
    pred_x0 = scheduler.get_velocity(model_out, noisy, t)     # = sqrt(ā) noisy - sqrt(1-ā) v
    loss    = mean(1 / (1 - ā_t) * (pred_x0 - x0)^2)

Optionally latent positions inside labelled face regions of the index mask get weight
(1 + face_weight); the weighted mean is normalised per sample, so the loss scale does not change.
"""

from __future__ import annotations

import torch


def face_region_weights(index_mask: torch.Tensor, latent_shape: tuple[int, ...], patch_size: int, face_weight: float) -> torch.Tensor:
    """Per-position loss weights [B, F, 1, H, W] from a token index mask [B, F*(H/p)*(W/p)].

    Tokens are frame-major, then row, then column (diffusers' CogVideoXPatchEmbed order); a token
    with an identity (>= 0) weights its p x p latent positions by 1 + face_weight, others by 1.
    """
    num_frames, _, height, width = latent_shape[-4:]
    h, w = height // patch_size, width // patch_size
    if index_mask.shape[-1] != num_frames * h * w:
        raise ValueError(
            f"index mask has {index_mask.shape[-1]} tokens, latents {tuple(latent_shape)} with patch {patch_size} "
            f"have {num_frames}*{h}*{w}"
        )
    face = (index_mask >= 0).float().reshape(-1, num_frames, h, w)  # [B, F*h*w] -> [B, F, h, w]
    face = face.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)  # [B, F, H, W]
    return (1.0 + face_weight * face).unsqueeze(2)  # [B, F, 1, H, W]


def diffusion_loss(
    scheduler,
    model_output: torch.Tensor,
    noisy_latents: torch.Tensor,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample loss [B] (float32) for v-prediction outputs [B, F, C, H, W] (see the module docstring).

    `weights` (broadcastable to the latents, e.g. from face_region_weights) turn the mean over
    positions into a weighted mean normalised by the weights' mean.
    """
    model_output, noisy_latents, latents = model_output.float(), noisy_latents.float(), latents.float()
    pred_x0 = scheduler.get_velocity(model_output, noisy_latents, timesteps)
    alphas_cumprod = scheduler.alphas_cumprod.to(device=latents.device, dtype=torch.float32)[timesteps.to(latents.device)]
    snr_weight = (1.0 / (1.0 - alphas_cumprod)).reshape(-1, *([1] * (latents.ndim - 1)))  # [B, 1, 1, 1, 1]
    err = snr_weight * (pred_x0 - latents) ** 2  # [B, F, C, H, W]
    if weights is None:
        return err.flatten(1).mean(1)
    weights = weights.to(err).expand_as(err)
    return (weights * err).flatten(1).mean(1) / weights.flatten(1).mean(1)
