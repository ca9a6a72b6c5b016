"""One training (or validation) forward pass: encoded clips -> model inputs -> losses.

Per sample, in this order, from the sample's own generator: the timestep (uniform over the
scheduler's training steps), the text and identity dropout draws, the clip-latent sample, the
canvas-latent sample and the noise. Text dropout swaps in the empty prompt's embedding; identity
dropout turns the sample's identities off (id_mask False: no identity residual) and ignores its
routing labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ingredients.models import routing_loss

from ingredients.training.clip_encoding import EncodedClip, canvas_latents, sample_video_latents
from ingredients.training.diffusion_loss import diffusion_loss, face_region_weights
from ingredients.training.sample_randomness import PERMUTATION_STREAM, sample_generators
from ingredients.training.stage_spec import LossSpec, Routing


@dataclass
class StepInputs:
    """latents/noisy/image_latents [B, F, C, h, w]; prompt_embeds [B, T, D]; timesteps [B] long;
    id_cond [B, K, D]; id_vit_hidden scales x [B, K, Tv, Dv]; id_mask [B, K] bool; index_mask [B, N]."""

    latents: torch.Tensor
    noisy: torch.Tensor
    image_latents: torch.Tensor
    prompt_embeds: torch.Tensor
    timesteps: torch.Tensor
    id_cond: torch.Tensor
    id_vit_hidden: list[torch.Tensor]
    id_mask: torch.Tensor
    index_mask: torch.Tensor

    @property
    def model_input(self) -> torch.Tensor:
        return torch.cat([self.noisy, self.image_latents], dim=2)  # [B, F, C, h, w] x 2 -> [B, F, 2C, h, w]


@dataclass
class StepLosses:
    """total and diffusion (scalars), per_sample diffusion [B], routing (scalar or None without a
    router), routing_logits (one [B, N, K] per injection point)."""

    total: torch.Tensor
    diffusion: torch.Tensor
    per_sample: torch.Tensor
    routing: torch.Tensor | None
    routing_logits: list[torch.Tensor]


def build_step_inputs(
    encoded: list[EncodedClip],
    index_mask: torch.Tensor,
    generators: list[torch.Generator],
    scheduler,
    vae_scaling_factor: float,
    empty_prompt_embeds: torch.Tensor,
    text_dropout: float = 0.0,
    identity_dropout: float = 0.0,
    timesteps: torch.Tensor | None = None,
    invert_scale_latents: bool = False,
    device: torch.device | str = "cpu",
) -> StepInputs:
    """Draw the random parts of a step for a same-K batch of encoded clips (see the module docstring).

    `timesteps` [B] fixes the timesteps (validation); the generators are still consumed identically.
    """
    b = len(encoded)
    if len(generators) != b or index_mask.shape[0] != b:
        raise ValueError(f"{b} clips, {len(generators)} generators, index mask batch {index_mask.shape[0]}")
    ks = {e.num_identities for e in encoded}
    if len(ks) != 1:
        raise ValueError(f"batch mixes identity counts {sorted(ks)}")
    num_train_timesteps = int(scheduler.config.num_train_timesteps)
    drawn_t, text_drop, id_drop = [], [], []
    for g in generators:
        drawn_t.append(torch.randint(0, num_train_timesteps, (1,), generator=g))
        u = torch.rand(2, generator=g)
        text_drop.append(bool(u[0] < text_dropout))
        id_drop.append(bool(u[1] < identity_dropout))
    t = torch.cat(drawn_t) if timesteps is None else timesteps.to(torch.long).cpu()
    video_dist = torch.stack([e.video_dist for e in encoded])  # [B, 2C, F, h, w]
    latents = sample_video_latents(video_dist, generators, vae_scaling_factor)  # [B, F, C, h, w]
    image_latents = canvas_latents(torch.stack([e.canvas_dist for e in encoded]), generators, latents.shape[1],
                                   vae_scaling_factor, invert_scale_latents)
    noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators])
    noisy = scheduler.add_noise(latents, noise, t)

    prompt = torch.stack([empty_prompt_embeds if drop else e.prompt_embeds for e, drop in zip(encoded, text_drop)])
    id_cond = torch.stack([e.id_cond for e in encoded])  # [B, K, D]
    id_vit = [torch.stack([e.id_vit_hidden[s] for e in encoded]) for s in range(len(encoded[0].id_vit_hidden))]
    keep = torch.tensor([not d for d in id_drop])
    id_mask = keep[:, None].expand(b, id_cond.shape[1]).clone()  # [B, K]
    index_mask = torch.where(keep[:, None], index_mask.cpu(), torch.full_like(index_mask.cpu(), -1))

    def dev(x):
        return x.to(device)

    return StepInputs(
        latents=dev(latents), noisy=dev(noisy), image_latents=dev(image_latents), prompt_embeds=dev(prompt),
        timesteps=dev(t), id_cond=dev(id_cond), id_vit_hidden=[dev(v) for v in id_vit], id_mask=dev(id_mask),
        index_mask=dev(index_mask),
    )


def identity_permutations(seed: int, step: int, indices: range, num_identities: int) -> list[torch.Tensor]:
    """One random order of the K identities per sample, from its own stream (see sample_randomness)."""
    return [torch.randperm(num_identities, generator=g)
            for g in sample_generators(seed, step, indices, PERMUTATION_STREAM)]


def permute_identities(batch: dict, perms: list[torch.Tensor]) -> dict:
    """A copy of a collated batch whose identities are reordered per sample: new identity j is old
    identity perm[j] (reference paths, boxes and index-mask labels together).

    The model treats identities as a set (routing is permutation-invariant), so this changes no
    target; it stops a fixed manifest order (e.g. always left to right) from becoming a position
    shortcut for the router, and the canvas, built in reference order, is reordered with it.
    """
    index_mask = batch["index_mask"].clone()
    for i, perm in enumerate(perms):
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(len(perm))  # old label -> new label
        labelled = index_mask[i] >= 0
        index_mask[i, labelled] = inverse[index_mask[i, labelled]]
    return {
        **batch,
        "index_mask": index_mask,
        "reference_paths": [[paths[j] for j in perm.tolist()] for paths, perm in zip(batch["reference_paths"], perms)],
        "boxes": torch.stack([b[perm] for b, perm in zip(batch["boxes"], perms)]),
    }


def compute_losses(
    model,
    inputs: StepInputs,
    scheduler,
    image_rotary_emb,
    patch_size: int,
    loss: LossSpec = LossSpec(),
    routing: Routing = Routing(),
) -> StepLosses:
    """Forward `model` (plain or wrapped by accelerate) and compute the stage's losses, weighted as
    `loss` and `routing` say.

    The routing loss (of kind `routing.kind`) is computed whenever the model routes (it is logged even
    at weight 0); it enters the total only with routing.weight > 0.
    """
    out = model(
        hidden_states=inputs.model_input,
        encoder_hidden_states=inputs.prompt_embeds,
        timestep=inputs.timesteps,
        image_rotary_emb=image_rotary_emb,
        id_cond=inputs.id_cond,
        id_vit_hidden=inputs.id_vit_hidden,
        id_mask=inputs.id_mask,
        return_routing_logits=True,
        return_dict=True,
    )
    weights = None
    if loss.face_weight > 0:
        weights = face_region_weights(inputs.index_mask, tuple(inputs.latents.shape), patch_size, loss.face_weight)
    per_sample = diffusion_loss(scheduler, out.sample, inputs.noisy, inputs.latents, inputs.timesteps, weights)
    diffusion = per_sample.mean()
    logits = list(out.routing_logits or [])
    routed = routing_loss(logits, inputs.index_mask, inputs.id_mask, routing.kind) if logits else None
    total = loss.diffusion_weight * diffusion
    if routed is not None and routing.weight > 0:
        total = total + routing.weight * routed
    return StepLosses(total=total, diffusion=diffusion, per_sample=per_sample, routing=routed, routing_logits=logits)


def routing_hits(logits: list[torch.Tensor], index_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Correct argmax-routing counts per injection point [P] and the number of labelled tokens.

    logits: one [B, N, K] per point; index_mask [B, N] (-1 = background, ignored).
    """
    labelled = index_mask >= 0
    hits = torch.stack([((z.argmax(-1) == index_mask) & labelled).sum() for z in logits]) if logits else torch.zeros(0)
    return hits.cpu(), int(labelled.sum())
