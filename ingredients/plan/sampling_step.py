"""Sampling one video, run fake in its phases: text encoding, identity tokens, one guided denoising
step, the VAE decode (tiled or not), each measured over the weights (peak bytes, FLOPs).

The phases are the pipeline's (`IngredientsPipeline.__call__`): the prompt and the negative prompt
through the text encoder (batch 1 each), `encode_identities` once, the transformer on the guided
batch (2 x 1 with CFG) with the precomputed ID tokens, then `vae.decode` of the final latents
(`enable_tiling()` when tiled). Weights are in the sampling dtype. Where weights live during each
phase is the offload mode's business (`sampling_memory`): none keeps all on the device, `model`
(diffusers' model CPU offload) one component at a time, `sequential` one leaf module at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
from torch import nn

from ingredients.models import IngredientsTransformer3DModel
from ingredients.plan.fake_run import FakeRun, build_on_meta
from ingredients.plan.model_configs import ProfileModels, input_vit_scales
from ingredients.plan.training_step import build_text_encoder, full_transformer_config, rotary_embedding

COMPONENTS = ("text_encoder", "transformer", "vae")
GIB = float(2**30)


@dataclass
class SampleMeasurement:
    """Bytes and FLOPs of the phases of one sampled video (batch 1)."""

    parameters: dict[str, int]              # numel per component
    weight_bytes: dict[str, int]            # per component, in the sampling dtype
    largest_module_bytes: dict[str, int]    # per component: the biggest module holding parameters itself
    phase_peak_bytes: dict[str, int]        # text, identities, denoise, decode, decode_tiled: over the weights
    phase_flops: dict[str, int]
    flops_by_op: dict[str, int] = field(default_factory=dict)  # of one denoising step


def measure_sampling(models: ProfileModels, dtype: torch.dtype, num_identities: int, guidance_scale: float,
                     num_frames: int, height: int, width: int, backbone_only: bool = False) -> SampleMeasurement:
    """Run the phases fake (see the module docstring); decode both untiled and tiled."""
    config = full_transformer_config(models, backbone_only)
    cls = CogVideoXTransformer3DModel if backbone_only else IngredientsTransformer3DModel
    parts: dict[str, nn.Module] = {
        "text_encoder": build_text_encoder(models).to(dtype),
        "transformer": build_on_meta(cls, **config).to(dtype),
        "vae": build_on_meta(AutoencoderKLCogVideoX, **models.vae).to(dtype),
    }
    latent_frames = (num_frames - 1) // 4 + 1
    rotary = rotary_embedding(config, height, width, latent_frames) if config["use_rotary_positional_embeddings"] else None
    guided = 2 if guidance_scale > 1.0 else 1
    peaks: dict[str, int] = {}
    flops: dict[str, int] = {}
    with FakeRun() as run, torch.no_grad():
        for part in parts.values():
            run.materialise(part).eval().requires_grad_(False)
        text_len = int(config["max_text_seq_length"])
        with run.phase() as p:
            parts["text_encoder"](torch.zeros(1, text_len, dtype=torch.long))[0]
        peaks["text"], flops["text"] = p.peak_bytes, p.flops * guided
        prompt = torch.empty(guided, text_len, int(config["text_embed_dim"]), dtype=dtype)
        identities = None
        if not backbone_only:
            with run.phase() as p:
                identities = parts["transformer"].encode_identities(
                    torch.empty(1, num_identities, int(config["id_embed_dim"])),
                    [torch.empty(1, num_identities, models.vit_tokens, int(config["vit_dim"]))
                     for _ in range(input_vit_scales(config))],
                    torch.ones(1, num_identities, dtype=torch.bool), batch_size=guided)
            peaks["identities"], flops["identities"] = p.peak_bytes, p.flops
        c, h, w = int(config["in_channels"]) // 2, height // 8, width // 8
        latents = torch.empty(1, latent_frames, c, h, w, dtype=dtype)
        with run.phase() as p:
            x = torch.cat([torch.cat([latents] * guided), torch.cat([torch.empty_like(latents)] * guided)], dim=2)
            kwargs = {} if backbone_only else {"identities": identities}
            noise = parts["transformer"](hidden_states=x, encoder_hidden_states=prompt,
                                         timestep=torch.zeros(guided, dtype=torch.long), image_rotary_emb=rotary,
                                         return_dict=False, **kwargs)[0].float()
            if guided == 2:
                uncond, text = noise.chunk(2)
                noise = uncond + guidance_scale * (text - uncond)
            del x, noise
        peaks["denoise"], flops["denoise"] = p.peak_bytes, p.flops
        denoise_ops = p.flops_by_op
        vae = parts["vae"]
        z = latents.permute(0, 2, 1, 3, 4)  # [B, F, C, h, w] -> [B, C, F, h, w]
        for name, tiled in (("decode", False), ("decode_tiled", True)):
            vae.enable_tiling() if tiled else vae.disable_tiling()
            with run.phase() as p:
                vae.decode(z / vae.config.scaling_factor).sample
            peaks[name], flops[name] = p.peak_bytes, p.flops
    return SampleMeasurement(
        parameters={k: sum(q.numel() for q in m.parameters()) for k, m in parts.items()},
        weight_bytes={k: sum(q.numel() * q.element_size() for q in m.parameters()) for k, m in parts.items()},
        largest_module_bytes={k: _largest_module(m) for k, m in parts.items()},
        phase_peak_bytes=peaks, phase_flops=flops, flops_by_op=denoise_ops,
    )


def _largest_module(module: nn.Module) -> int:
    return max((sum(p.numel() * p.element_size() for p in m.parameters(recurse=False)) for m in module.modules()), default=0)


PHASE_COMPONENT = {"text": "text_encoder", "identities": "transformer", "denoise": "transformer", "decode": "vae"}


def sampling_peak_bytes(m: SampleMeasurement, offload: str, vae_tiling: bool) -> tuple[float, str]:
    """Peak device bytes of one video under an offload mode (none | model | sequential), and the phase."""
    decode = "decode_tiled" if vae_tiling else "decode"
    phases = {k: v for k, v in m.phase_peak_bytes.items() if not k.startswith("decode")}
    phases["decode"] = m.phase_peak_bytes[decode]
    best, where = 0.0, ""
    for phase, act in phases.items():
        comp = PHASE_COMPONENT[phase]
        if offload == "none":
            resident = sum(m.weight_bytes.values())
        elif offload == "model":
            resident = m.weight_bytes[comp]
        elif offload == "sequential":
            resident = m.largest_module_bytes[comp]
        else:
            raise ValueError(f"sample offload {offload!r}: none, model or sequential")
        if resident + act > best:
            best, where = resident + act, phase
    return best, where


def video_flops(m: SampleMeasurement, steps: int, vae_tiling: bool) -> int:
    """FLOPs of one video: text, identities, `steps` guided denoising steps, decode."""
    f = m.phase_flops
    return f["text"] + f.get("identities", 0) + steps * f["denoise"] + f["decode_tiled" if vae_tiling else "decode"]
