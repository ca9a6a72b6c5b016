"""Periodic validation: losses at fixed noise, routing accuracy, a sampled frame strip, routing maps.

The validation loss of a clip is the training loss at each of the validation timesteps with noise
and latent samples drawn from fixed per-(timestep, clip) generators, so two evaluations of the
same weights give the same number and a falling value means the model improved. Routing accuracy
is the share of labelled tokens (index mask >= 0) of multi-identity clips where the router's argmax
picks the identity whose face region the token lies in (chance: 1/K), pooled over clips and
timesteps, per injection point (`routing_acc/<n>`) and averaged over points (`routing_acc`); also
per timestep (`routing_acc_t<t>`, mean over points): at high noise (zero-terminal-SNR schedule:
SNR 0.06 at t = 700) the video tokens carry little of the faces, so accuracy falls with t.
Beside it, on the same labelled tokens and with the same pooling, two baselines a router must beat:
`routing_acc_majority` (always answering the identity that labels most tokens) and
`routing_acc_chance` (a uniform guess among the clip's K identities: the mean of 1/K).
A number that cannot be computed is missing, never 0: `val_routing_loss` without a multi-identity
clip with labelled tokens, and then `val_loss` too when the stage's routing weight is > 0. The image
condition is the clean canvas (no noise augmentation), as at sampling. Which clips these are (held
out or training) is the trainer's `split` label.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch

from ingredients.data.index_mask import index_mask_to_pixels
from ingredients.files.frames import to_uint8

from ingredients.training.clip_encoding import EncodedClip
from ingredients.training.sample_randomness import VALIDATION_STREAM, sample_generators
from ingredients.training.stage_spec import LossSpec, Routing
from ingredients.training.step import build_step_inputs, compute_losses, routing_hits

logger = logging.getLogger(__name__)

ROUTING_BASELINES = ("routing_acc_majority", "routing_acc_chance")

# one colour per identity (RGB), distinct on faces and backgrounds
IDENTITY_COLOURS = np.array(
    [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60)],
    dtype=np.float32,
)


@dataclass
class ValidationClip:
    """A validation clip with its encodings: frames [F, 3, H, W] in [-1, 1], index_mask [N]."""

    clip_id: str
    frames: torch.Tensor
    index_mask: torch.Tensor
    prompt: str
    reference_paths: list[str]
    encoded: EncodedClip

    @property
    def num_identities(self) -> int:
        return self.encoded.num_identities


@dataclass
class ValidationResult:
    """metrics (name -> value; absent when not measurable) and the routing map of one clip."""

    metrics: dict[str, float]
    routing_argmax: torch.Tensor | None = None
    map_clip: ValidationClip | None = None
    missing: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ images

def to_uint8_frames(frames: torch.Tensor) -> np.ndarray:
    """[F, 3, H, W] in [-1, 1] -> uint8 [F, H, W, 3]."""
    return to_uint8(((frames.detach().float().cpu() + 1) / 2).permute(0, 2, 3, 1).numpy())


def overlay_identities(video: np.ndarray, pixel_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint each pixel with its identity's colour (map >= 0) over uint8 frames [F, H, W, 3]."""
    if pixel_map.shape != video.shape[:3]:
        raise ValueError(f"pixel map {pixel_map.shape} does not match frames {video.shape[:3]}")
    if pixel_map.max(initial=-1) >= len(IDENTITY_COLOURS):
        raise ValueError(f"at most {len(IDENTITY_COLOURS)} identities can be coloured, got index {pixel_map.max()}")
    out = video.astype(np.float32)
    labelled = pixel_map >= 0
    colours = IDENTITY_COLOURS[np.clip(pixel_map, 0, None)]  # [F, H, W, 3]
    out[labelled] = (1 - alpha) * out[labelled] + alpha * colours[labelled]
    return out.round().astype(np.uint8)


def routing_map_image(frames: torch.Tensor, routing_index: torch.Tensor, index_mask: torch.Tensor,
                      spatial: int, temporal: int, patch: int) -> PIL.Image.Image:
    """Two frame strips: top, the labels (index mask) over the frames; bottom, the router's argmax
    identity for every token, both upsampled from tokens to pixels and coloured per identity."""
    num_frames, _, height, width = frames.shape
    video = to_uint8_frames(frames)
    rows = []
    for tokens in (index_mask, routing_index):
        pixels = index_mask_to_pixels(tokens.cpu(), num_frames, height, width, spatial, temporal, patch).numpy()
        rows.append(np.concatenate(list(overlay_identities(video, pixels)), axis=1))
    return PIL.Image.fromarray(np.concatenate(rows, axis=0))


# ------------------------------------------------------------------------------------------ metrics

@torch.no_grad()
def validation_metrics(
    model,
    clips: list[ValidationClip],
    scheduler,
    image_rotary_emb,
    patch_size: int,
    vae_scaling_factor: float,
    empty_prompt_embeds: torch.Tensor,
    timesteps: list[int],
    seed: int,
    loss: LossSpec = LossSpec(),
    routing: Routing = Routing(),
    invert_scale_latents: bool = False,
    device: torch.device | str = "cpu",
    autocast: Any = None,
) -> ValidationResult:
    """Validation metrics of `model` (unwrapped, any mode) on `clips`, the losses weighted as the stage's
    `loss` and `routing` weight them in training (see the module docstring)."""
    if not clips:
        raise ValueError("no validation clips")
    was_training = model.training
    model.eval()
    diff, rout, hits, labelled = [], [], None, 0
    label_counts: dict[int, int] = {}  # identity -> labelled tokens, pooled as routing_acc pools them
    chance = 0.0  # sum of 1 / K over the labelled tokens
    hits_at_t: dict[int, list[float]] = {t: [0.0, 0.0] for t in timesteps}  # t -> [correct (mean over points), labelled]
    map_clip = max(clips, key=lambda c: c.num_identities)
    map_t = len(timesteps) // 2
    routing_argmax = None
    try:
        for j, t in enumerate(timesteps):
            for c, clip in enumerate(clips):
                gens = sample_generators(seed, j, [c], VALIDATION_STREAM)
                inputs = build_step_inputs(
                    [clip.encoded], clip.index_mask[None], gens, scheduler, vae_scaling_factor, empty_prompt_embeds,
                    timesteps=torch.tensor([t]), invert_scale_latents=invert_scale_latents, device=device,
                )
                with autocast() if autocast is not None else contextlib.nullcontext():
                    losses = compute_losses(model, inputs, scheduler, image_rotary_emb, patch_size, loss, routing)
                diff.append(float(losses.diffusion))
                if losses.routing_logits and clip.num_identities > 1:
                    h, n = routing_hits(losses.routing_logits, inputs.index_mask)
                    if n > 0:  # without a labelled token the routing loss is undefined (training counts it as 0)
                        rout.append(float(losses.routing))
                    hits = h if hits is None else hits + h
                    labelled += n
                    for k, count in routing_label_counts(inputs.index_mask).items():
                        label_counts[k] = label_counts.get(k, 0) + count
                    chance += n / clip.num_identities
                    hits_at_t[t][0] += float(h.double().mean())
                    hits_at_t[t][1] += n
                if clip is map_clip and j == map_t and losses.routing_logits:
                    probs = torch.stack([z.float().softmax(-1) for z in losses.routing_logits]).mean(0)  # [P, 1, N, K] -> [1, N, K]
                    routing_argmax = probs[0].argmax(-1).cpu()
    finally:
        model.train(was_training)
    metrics = {"val_diffusion_loss": float(np.mean(diff))}
    missing = {}
    if rout:
        metrics["val_routing_loss"] = float(np.mean(rout))
    else:
        missing["val_routing_loss"] = "no multi-identity validation clip with a labelled token, or no router"
    metrics.update(validation_total(metrics, missing, loss, routing))
    if hits is not None and labelled > 0:
        per_point = (hits.double() / labelled).tolist()
        metrics.update({f"routing_acc/{n}": a for n, a in enumerate(per_point)})
        metrics["routing_acc"] = float(np.mean(per_point))
        metrics.update({f"routing_acc_t{t}": c / n for t, (c, n) in hits_at_t.items() if n > 0})
        metrics.update(routing_baselines(label_counts, chance, labelled))
    else:
        missing["routing_acc"] = "no labelled token in a multi-identity validation clip"
    return ValidationResult(metrics=metrics, routing_argmax=routing_argmax, map_clip=map_clip, missing=missing)


def routing_label_counts(index_mask: torch.Tensor) -> dict[int, int]:
    """{identity: number of tokens labelled with it} of an index mask (-1 = background, ignored)."""
    labels, counts = torch.unique(index_mask[index_mask >= 0].cpu(), return_counts=True)
    return {int(k): int(c) for k, c in zip(labels, counts)}


def routing_baselines(label_counts: dict[int, int], chance_sum: float, labelled: int) -> dict[str, float]:
    """The majority-class and chance accuracies over `labelled` tokens (see the module docstring)."""
    return {"routing_acc_majority": max(label_counts.values()) / labelled, "routing_acc_chance": chance_sum / labelled}


def validation_total(metrics: dict[str, float], missing: dict[str, str], loss: LossSpec,
                     routing: Routing) -> dict[str, float]:
    """{"val_loss": ...} as the training total (the routing term enters only at weight > 0), or {} with
    the reason in `missing` when that total needs a routing loss that was not measured."""
    total = loss.diffusion_weight * metrics["val_diffusion_loss"]
    if routing.weight > 0:
        if "val_routing_loss" not in metrics:
            missing["val_loss"] = f"routing.weight is {routing.weight} but the routing loss is missing: " + missing.get(
                "val_routing_loss", "not measured")
            return {}
        total += routing.weight * metrics["val_routing_loss"]
    return {"val_loss": total}


@torch.no_grad()
def sample_clip(pipe, clip: ValidationClip, canvas, num_inference_steps: int, guidance_scale: float, seed: int,
                height: int, width: int, num_frames: int) -> np.ndarray:
    """Generate a video for a validation clip's prompt and identities -> uint8 [F, H, W, 3]."""
    enc = clip.encoded
    video = pipe(
        prompt=clip.prompt,
        image=canvas,
        id_cond=enc.id_cond[None],  # [K, D] -> [1, K, D]
        id_vit_hidden=[h[None] for h in enc.id_vit_hidden],
        height=height,
        width=width,
        num_frames=num_frames,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).frames[0]
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)
