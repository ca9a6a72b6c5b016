"""Training clips -> the frozen encoders' outputs, and the latents a training step draws from them.

`ClipEncoder.encode` turns one clip (frames, caption, reference photos) into an `EncodedClip`: the
VAE latent distributions of the clip and of the reference canvas, the canvas pixels, the caption's
text embedding and the identity conditioning. These are deterministic, so they can be cached (see
`encoding_cache.py`); the random parts (latent samples, noise, timesteps) are drawn per step from
per-sample generators (`sample_video_latents`, `canvas_latents`).

The image condition is built exactly as `IngredientsPipeline` builds it at inference: the canvas of
the clip's reference crops, preprocessed by the pipeline's video processor to [-1, 1], VAE-encoded
into the first latent frame, scaled by the VAE scaling factor, zeros after (`prepare_latents`).
Training may add noise augmentation to the canvas pixels before the VAE (`noise_canvas`, diffusers'
and CogVideo's image-to-video fine-tuning); a noised canvas differs at every step, so it is never
cached: the cache holds the clean canvas pixels and distribution, and `ClipEncoder.encode(...,
canvas_noise=...)` encodes a noised copy per step. Sampling and validation add no noise (as
diffusers' pipeline).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

logger = logging.getLogger(__name__)

FINGERPRINT_MAX_ELEMENTS = 1 << 20


@dataclass
class EncodedClip:
    """The frozen encoders' outputs for one clip (float32, CPU).

    video_dist [2C, F, h, w] and canvas_dist [2C, 1, h, w]: VAE latent distribution parameters
    (mean ⊕ log-variance) of the clip and of the clean canvas; prompt_embeds [T, D]; id_cond [K, D];
    id_vit_hidden: scales x [K, Tv, Dv]; canvas_pixels [3, H, W]: the clean canvas in [-1, 1] as the
    VAE saw it (for noise augmentation; None when not kept).
    """

    video_dist: torch.Tensor
    canvas_dist: torch.Tensor
    prompt_embeds: torch.Tensor
    id_cond: torch.Tensor
    id_vit_hidden: list[torch.Tensor]
    canvas_pixels: torch.Tensor | None = None

    @property
    def num_identities(self) -> int:
        return int(self.id_cond.shape[0])

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"video_dist": self.video_dist, "canvas_dist": self.canvas_dist,
               "prompt_embeds": self.prompt_embeds, "id_cond": self.id_cond}
        out.update({f"id_vit_hidden.{i}": h for i, h in enumerate(self.id_vit_hidden)})
        if self.canvas_pixels is not None:
            out["canvas_pixels"] = self.canvas_pixels
        return {k: v.contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "EncodedClip":
        scales = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("id_vit_hidden."))
        if scales != list(range(len(scales))) or not scales:
            raise ValueError(f"encoded clip has id_vit_hidden scales {scales}; expected 0..n-1")
        return cls(tensors["video_dist"], tensors["canvas_dist"], tensors["prompt_embeds"], tensors["id_cond"],
                   [tensors[f"id_vit_hidden.{i}"] for i in scales], tensors.get("canvas_pixels"))


def module_fingerprint(module: nn.Module, max_elements: int = FINGERPRINT_MAX_ELEMENTS) -> str:
    """sha256 of a module's class, config and weights (each tensor's bytes; tensors larger than
    `max_elements` contribute an evenly strided sample of that many elements plus their sum). Tensors
    without values (meta, or fake ones in a cost plan) contribute their name, shape and dtype only."""
    from torch._subclasses.fake_tensor import is_fake

    digest = hashlib.sha256()
    digest.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    config = getattr(module, "config", None)
    if config is not None:
        as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        digest.update(json.dumps(as_dict, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            if tensor.is_meta or is_fake(tensor):
                continue
            if flat.numel() > max_elements:
                stride = flat.numel() // max_elements
                digest.update(repr(float(flat.double().sum())).encode())
                flat = flat[::stride][:max_elements]
            digest.update(flat.to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sample_video_latents(video_dist: torch.Tensor, generators: Sequence[torch.Generator], scaling_factor: float) -> torch.Tensor:
    """Draw clip latents from their distributions [B, 2C, F, h, w] -> scaled latents [B, F, C, h, w]
    (one generator per sample), as CogVideoX training does: latent_dist.sample() * scaling_factor."""
    if len(generators) != video_dist.shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {video_dist.shape[0]}")
    samples = [DiagonalGaussianDistribution(video_dist[i : i + 1]).sample(g) for i, g in enumerate(generators)]
    return (torch.cat(samples) * scaling_factor).permute(0, 2, 1, 3, 4)  # [B, C, F, h, w] -> [B, F, C, h, w]


def canvas_latents(
    canvas_dist: torch.Tensor,
    generators: Sequence[torch.Generator],
    num_latent_frames: int,
    scaling_factor: float,
    invert_scale_latents: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The image condition [B, F, C, h, w] from canvas distributions [B, 2C, 1, h, w]: a sample of
    the first latent frame, scaled, then zeros (IngredientsPipeline.prepare_latents' steps)."""
    if len(generators) != canvas_dist.shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {canvas_dist.shape[0]}")
    dtype = dtype or canvas_dist.dtype
    first = [DiagonalGaussianDistribution(canvas_dist[i : i + 1]).sample(g) for i, g in enumerate(generators)]
    first = torch.cat(first).to(dtype).permute(0, 2, 1, 3, 4)  # [B, C, 1, h, w] -> [B, 1, C, h, w]
    first = first / scaling_factor if invert_scale_latents else first * scaling_factor
    padding = first.new_zeros(first.shape[0], num_latent_frames - 1, *first.shape[2:])
    return torch.cat([first, padding], dim=1)


@dataclass(frozen=True)
class CanvasNoise:
    """Noise augmentation of one sample's canvas: its generator and sigma = exp(N(log_mean, log_std))."""

    generator: torch.Generator
    log_mean: float = -3.0
    log_std: float = 0.5


def noise_canvas(pixels: torch.Tensor, generator: torch.Generator, log_mean: float = -3.0,
                 log_std: float = 0.5) -> torch.Tensor:
    """Noise augmentation of one canvas [3, H, W] in [-1, 1] (diffusers' and CogVideo's I2V training):
    sigma = exp(N(log_mean, log_std)), pixels + sigma * N(0, 1), both drawn from `generator`."""
    sigma = torch.exp(torch.normal(mean=log_mean, std=log_std, size=(1,), generator=generator))
    noise = torch.randn(pixels.shape, generator=generator)
    return pixels + noise.to(pixels.dtype) * sigma.to(pixels.dtype)


class ClipEncoder:
    """The frozen encoders of a pipeline plus the face stack: clips -> EncodedClip (optionally cached).

    Identity conditioning and text embeddings are memoised in memory by reference paths and prompt
    (both encoders are deterministic and the inputs do not change during a run).
    """

    def __init__(self, pipe, conditioner, height: int, width: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, cache=None) -> None:
        self.pipe = pipe
        self.conditioner = conditioner
        self.height, self.width = int(height), int(width)
        self.device = torch.device(device)
        self.dtype = dtype
        self.cache = cache
        self.max_sequence_length = int(pipe.transformer.config.max_text_seq_length)
        self._references: dict[tuple[str, ...], Any] = {}
        self._prompts: dict[str, torch.Tensor] = {}
        self._identity: dict | None = None

    @property
    def identity(self) -> dict:
        """What the encodings depend on besides the clip: models, face stack, sizes, dtype."""
        if self._identity is None:
            self._identity = {
                "vae": module_fingerprint(self.pipe.vae),
                "text_encoder": module_fingerprint(self.pipe.text_encoder),
                "face": self.conditioner.identity,
                "height": self.height,
                "width": self.width,
                "max_sequence_length": self.max_sequence_length,
                "dtype": str(self.dtype),
            }
        return self._identity

    # ---------------------------------------------------------------- pieces
    @torch.no_grad()
    def prompt_embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings [B, T, D] (float32, CPU) as the pipeline computes them (memoised per prompt)."""
        new = sorted({p for p in prompts if p not in self._prompts})
        if new:
            embeds, _ = self.pipe.encode_prompt(
                prompt=new, negative_prompt=None, do_classifier_free_guidance=False,
                max_sequence_length=self.max_sequence_length, device=self.device, dtype=self.dtype,
            )
            self._prompts.update(zip(new, embeds.float().cpu()))
        return torch.stack([self._prompts[p] for p in prompts])

    def references(self, paths: Sequence[str]):
        """ReferenceConditioning of the clip's reference photos, in the given order.

        The face stack runs once per set of photos (memoised); another order of the same photos
        permutes its per-identity results and lays out the canvas again, as the face stack would.
        """
        from ingredients.faces.reference import make_canvas

        wanted = [str(p) for p in paths]
        key = tuple(sorted(wanted))
        if key not in self._references:
            self._references[key] = self.conditioner(list(key))
        base = self._references[key]
        if list(key) == wanted:
            return base
        order = [key.index(p) for p in wanted]
        crops = base.crops[order]
        settings = self.conditioner.settings
        return dataclasses.replace(
            base, crops=crops, id_cond=base.id_cond[order], id_vit_hidden=[h[order] for h in base.id_vit_hidden],
            canvas=make_canvas(crops, settings.canvas_width, settings.canvas_height, settings.canvas_layout),
            faces=[base.faces[i] for i in order], paths=wanted,
        )

    @torch.no_grad()
    def _vae_dist(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE latent distribution parameters of [1, 3, F, H, W] pixels in [-1, 1] -> [2C, F', h, w]."""
        dist = self.pipe.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return dist.parameters[0].float().cpu()

    def canvas_pixels(self, canvas) -> torch.Tensor:
        """The canvas as the pipeline preprocesses it: [1, 3, H, W] in [-1, 1]."""
        return self.pipe.video_processor.preprocess(canvas, height=self.height, width=self.width)

    # ---------------------------------------------------------------- clip
    def encode(self, frames: torch.Tensor, prompt: str, reference_paths: Sequence[str],
               canvas_noise: CanvasNoise | None = None) -> EncodedClip:
        """One clip: frames [F, 3, H, W] in [-1, 1], its caption and reference photo paths. With
        `canvas_noise`, canvas_dist encodes the noise-augmented canvas: one VAE pass either way, and
        the cache only ever holds the clean encoding (the noised canvas is encoded on top of it)."""
        if frames.shape[-2:] != (self.height, self.width):
            raise ValueError(f"frames are {tuple(frames.shape[-2:])}, the encoder works at {(self.height, self.width)}")
        if self.cache is None:
            return self._encode(frames, prompt, reference_paths, canvas_noise)
        key = self.cache.key(self.identity, frames, prompt, reference_paths)
        clean = self.cache.get(key)
        if clean is None:
            clean = self._encode(frames, prompt, reference_paths)
            self.cache.put(key, clean)
        if canvas_noise is None:
            return clean
        if clean.canvas_pixels is None:
            raise ValueError(f"cache entry {self.cache.path(key)} has no canvas pixels for image noise; delete it")
        return dataclasses.replace(clean, canvas_dist=self._canvas_dist(clean.canvas_pixels, canvas_noise))

    def _encode(self, frames: torch.Tensor, prompt: str, reference_paths: Sequence[str],
                canvas_noise: CanvasNoise | None = None) -> EncodedClip:
        refs = self.references(reference_paths)
        canvas = self.canvas_pixels(refs.canvas).float().cpu()[0]  # [3, H, W]
        return EncodedClip(
            video_dist=self._vae_dist(frames.permute(1, 0, 2, 3)[None]),  # [F, 3, H, W] -> [1, 3, F, H, W]
            canvas_dist=self._canvas_dist(canvas, canvas_noise),
            prompt_embeds=self.prompt_embeds([prompt])[0],
            id_cond=refs.id_cond.float().cpu(),
            id_vit_hidden=[h.float().cpu() for h in refs.id_vit_hidden],
            canvas_pixels=canvas,
        )

    def _canvas_dist(self, canvas: torch.Tensor, noise: CanvasNoise | None = None) -> torch.Tensor:
        """[3, H, W] canvas (noise-augmented first when `noise`) -> VAE distribution [2C, 1, h, w]."""
        if noise is not None:
            canvas = noise_canvas(canvas, noise.generator, noise.log_mean, noise.log_std)
        return self._vae_dist(canvas[None, :, None])  # [3, H, W] -> [1, 3, 1, H, W]

    def encode_batch(self, batch: dict, canvas_noise: Sequence[CanvasNoise] | None = None) -> list[EncodedClip]:
        """Every clip of a collated batch (see ingredients.data.dataset.collate_ingredients), with one
        CanvasNoise per clip when given."""
        noise = list(canvas_noise) if canvas_noise is not None else [None] * len(batch["prompt"])
        if len(noise) != len(batch["prompt"]):
            raise ValueError(f"{len(noise)} canvas noises for a batch of {len(batch['prompt'])}")
        return [self.encode(f, p, r, n) for f, p, r, n in zip(batch["frames"], batch["prompt"], batch["reference_paths"], noise)]


def frames_digest(frames: torch.Tensor) -> str:
    """sha256 of a frame tensor's shape, dtype and bytes."""
    array = np.ascontiguousarray(frames.detach().cpu().numpy())
    digest = hashlib.sha256(f"{array.shape}:{array.dtype}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def reference_digests(paths: Sequence[str | Path]) -> list[str]:
    from ingredients.faces.reference import file_sha256

    return [file_sha256(p) for p in paths]
