"""IngredientsPipeline: prompt + K identities -> video, CogVideoX image-to-video style.

The reference canvas (the aligned faces on a white background) is the first-frame condition; the
identities' ID tokens are computed once per generation and shared by every step and both guidance
branches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import get_resize_crop_region_for_grid, retrieve_timesteps
from diffusers.utils import BaseOutput

from ingredients.models import IdentityBatch, IngredientsTransformer3DModel

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("latent", "pt", "np", "pil")


@dataclass
class IngredientsPipelineOutput(BaseOutput):
    """frames: latents [B, F, C, h, w] (`latent`), or decoded video per `output_type`; routing_logits
    [B, N, K] per injection point from the last step's conditional branch when requested."""

    frames: Any
    routing_logits: list[torch.Tensor] | None = None


class IngredientsPipeline(CogVideoXImageToVideoPipeline):
    """Multi-identity personalized video generation (Ingredients) on a CogVideoX image-to-video backbone.

    Components: `tokenizer`, `text_encoder`, `vae` (AutoencoderKLCogVideoX), `transformer`
    (IngredientsTransformer3DModel), `scheduler` (CogVideoXDPMScheduler by default, or any scheduler
    diffusers offers for CogVideoX).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(
        self,
        tokenizer,
        text_encoder,
        vae,
        transformer: IngredientsTransformer3DModel,
        scheduler,
        rotary_base_height: int = 480,
        rotary_base_width: int = 720,
    ):
        super().__init__(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)
        self.register_to_config(rotary_base_height=rotary_base_height, rotary_base_width=rotary_base_width)

    def _prepare_rotary_positional_embeddings(self, height: int, width: int, num_frames: int, device: torch.device):
        """3-D RoPE with the crop region taken against a fixed 480 x 720 pixel base, as the reference does.

        (diffusers' image-to-video pipeline uses the transformer's sample size instead; the two agree
        at full size and differ for other sizes.)
        """
        unit = self.vae_scale_factor_spatial * self.transformer.config.patch_size
        grid = (height // unit, width // unit)
        crops = get_resize_crop_region_for_grid(grid, self.config.rotary_base_width // unit, self.config.rotary_base_height // unit)
        return get_3d_rotary_pos_embed(
            embed_dim=self.transformer.config.attention_head_dim,
            crops_coords=crops,
            grid_size=grid,
            temporal_size=num_frames,
            device=device,
        )

    # ------------------------------------------------------------------ checks
    def check_inputs(  # noqa: C901 - one flat list of checks reads best
        self,
        image,
        prompt,
        height,
        width,
        num_frames=None,
        num_inference_steps=None,
        guidance_scale=None,
        negative_prompt=None,
        callback_on_step_end_tensor_inputs=None,
        latents=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        id_cond=None,
        id_vit_hidden=None,
        identities=None,
        output_type="np",
    ):
        if image is None:
            raise ValueError("`image` (the reference canvas) is required: pass references= or image=")
        if not isinstance(image, (torch.Tensor, PIL.Image.Image, np.ndarray, list)):
            raise ValueError(f"`image` must be a PIL image, numpy array, tensor or list, got {type(image).__name__}")
        if prompt is None and prompt_embeds is None:
            raise ValueError("provide `prompt` or `prompt_embeds`")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("provide only one of `prompt` and `prompt_embeds`")
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise ValueError(f"`prompt` must be a string or a list of strings, got {type(prompt).__name__}")
        if isinstance(prompt, str) and not prompt.strip():
            raise ValueError("`prompt` is empty: describe the video to generate")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("provide only one of `negative_prompt` and `negative_prompt_embeds`")
        if prompt_embeds is not None and negative_prompt_embeds is not None and prompt_embeds.shape != negative_prompt_embeds.shape:
            raise ValueError(
                f"prompt_embeds {tuple(prompt_embeds.shape)} and negative_prompt_embeds "
                f"{tuple(negative_prompt_embeds.shape)} must have the same shape"
            )
        cfg = self.transformer.config
        multiple = self.vae_scale_factor_spatial * cfg.patch_size
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple}, got {height}x{width}")
        if cfg.use_learned_positional_embeddings:
            want_h, want_w = cfg.sample_height * self.vae_scale_factor_spatial, cfg.sample_width * self.vae_scale_factor_spatial
            if (height, width) != (want_h, want_w):
                raise ValueError(
                    f"this transformer has learned positional embeddings for {want_h}x{want_w}; got {height}x{width}"
                )
        if num_frames is not None and (num_frames < 1 or (num_frames - 1) % self.vae_scale_factor_temporal):
            raise ValueError(
                f"num_frames must be 1 + a multiple of {self.vae_scale_factor_temporal} (e.g. 49), got {num_frames}"
            )
        if num_inference_steps is not None and num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if guidance_scale is not None and guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if callback_on_step_end_tensor_inputs is not None and not all(
            k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs
        ):
            raise ValueError(f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}")
        if identities is None and id_cond is None:
            raise ValueError("no identities: pass references=, id_cond= with id_vit_hidden=, or identities=")
        if id_cond is not None:
            if id_vit_hidden is None:
                raise ValueError("`id_cond` was given without `id_vit_hidden`")
            k = len(id_cond) if isinstance(id_cond, (list, tuple)) else id_cond.shape[-2]
            if k < 1:
                raise ValueError("K = 0 identities: give at least one reference")
            if k > cfg.max_identities:
                raise ValueError(f"{k} identities given; this model takes at most max_identities={cfg.max_identities}")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _identity_inputs(references, id_cond, id_vit_hidden, id_mask, image):
        """Unpack a reference-processing result (anything with id_cond, id_vit_hidden, canvas)."""
        if references is None:
            return id_cond, id_vit_hidden, id_mask, image
        if id_cond is not None:
            raise ValueError("pass either references= or id_cond=/id_vit_hidden=, not both")
        cond, vit = references.id_cond, references.id_vit_hidden
        if isinstance(cond, torch.Tensor) and cond.ndim == 2:
            # one sample: [K, D] -> [1, K, D]; scales x [K, T, Dv] -> scales x [1, K, T, Dv]
            cond, vit = cond[None], [v[None] for v in vit]
        return cond, vit, id_mask, image if image is not None else references.canvas

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image=None,
        references=None,
        id_cond: torch.Tensor | list[torch.Tensor] | None = None,
        id_vit_hidden: list | None = None,
        id_mask: torch.Tensor | None = None,
        identities: IdentityBatch | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        guidance_scale: float = 6.0,
        use_dynamic_cfg: bool = False,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int | None = None,
        reference_batch_semantics: bool | None = None,
        use_router: bool | None = None,
        return_routing_logits: bool = False,
    ) -> IngredientsPipelineOutput | tuple:
        """Generate a video of the given identities.

        Identities: `references` (a reference-processing result with `id_cond`, `id_vit_hidden` and
        `canvas`), or `id_cond` + `id_vit_hidden` (the reference's list form, or batched [B, K, ...]
        with `id_mask`) plus `image` (the canvas), or precomputed `identities`.
        `reference_batch_semantics=True` reproduces the reference's guidance behaviour (both branches
        routed with the negative branch's features). `use_router=False` mixes identities with equal
        weights (the no-router baseline).
        """
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        id_cond, id_vit_hidden, id_mask, image = self._identity_inputs(references, id_cond, id_vit_hidden, id_mask, image)
        cfg = self.transformer.config
        height = height or cfg.sample_height * self.vae_scale_factor_spatial
        width = width or cfg.sample_width * self.vae_scale_factor_spatial
        num_frames = num_frames or cfg.sample_frames
        max_sequence_length = max_sequence_length or cfg.max_text_seq_length

        # 1. Check inputs
        self.check_inputs(
            image, prompt, height, width, num_frames, num_inference_steps, guidance_scale, negative_prompt,
            callback_on_step_end_tensor_inputs, latents, prompt_embeds, negative_prompt_embeds,
            id_cond, id_vit_hidden, identities, output_type,
        )
        self._guidance_scale = guidance_scale
        self._current_timestep = None
        self._attention_kwargs = attention_kwargs
        self._interrupt = False
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        device = self._execution_device
        do_cfg = guidance_scale > 1.0

        # 2. Encode the prompt: [B, T, D]; with guidance [2B, T, D] ordered [negative, positive]
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt=prompt,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=do_cfg,
            num_videos_per_prompt=1,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            max_sequence_length=max_sequence_length,
            device=device,
        )
        if do_cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)

        # 3. ID tokens, once per generation: [B, K, Q, D]
        if identities is None:
            identities = self.transformer.encode_identities(
                _to(id_cond, device), _to(id_vit_hidden, device), None if id_mask is None else id_mask.to(device), batch_size
            )
        if identities.tokens.shape[0] == 1 and batch_size > 1:
            identities = IdentityBatch(identities.tokens.expand(batch_size, -1, -1, -1), identities.mask.expand(batch_size, -1))
        if do_cfg:
            identities = IdentityBatch(torch.cat([identities.tokens] * 2), torch.cat([identities.mask] * 2))

        # 4. Timesteps
        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps)
        self._num_timesteps = len(timesteps)

        # 5. Latents: noise [B, F, C, h, w] and the canvas latents (first frame, zeros after)
        image = self.video_processor.preprocess(image, height=height, width=width).to(device, dtype=prompt_embeds.dtype)
        if image.shape[0] not in (1, batch_size):
            raise ValueError(f"{image.shape[0]} canvases for a batch of {batch_size} prompts")
        if image.shape[0] == 1 and batch_size > 1:
            image = image.expand(batch_size, -1, -1, -1)
        latents, image_latents = self.prepare_latents(
            image, batch_size, cfg.in_channels // 2, num_frames, height, width, prompt_embeds.dtype, device, generator, latents
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        image_rotary_emb = (
            self._prepare_rotary_positional_embeddings(height, width, latents.size(1), device)
            if cfg.use_rotary_positional_embeddings
            else None
        )

        # 6. Denoising loop
        routing_logits = None
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            old_pred_original_sample = None
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                latent_model_input = torch.cat([latents] * 2) if do_cfg else latents
                latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
                latent_image_input = torch.cat([image_latents] * 2) if do_cfg else image_latents
                # [B, F, C, h, w] ⊕ [B, F, C, h, w] -> [B, F, 2C, h, w]
                latent_model_input = torch.cat([latent_model_input, latent_image_input], dim=2)
                timestep = t.expand(latent_model_input.shape[0])
                want_logits = return_routing_logits and i == len(timesteps) - 1
                with self.transformer.cache_context("cond_uncond"):
                    out = self.transformer(
                        hidden_states=latent_model_input,
                        encoder_hidden_states=prompt_embeds,
                        timestep=timestep,
                        image_rotary_emb=image_rotary_emb,
                        attention_kwargs=attention_kwargs,
                        identities=identities,
                        reference_batch_semantics=reference_batch_semantics,
                        use_router=use_router,
                        return_routing_logits=want_logits,
                        return_dict=True,
                    )
                noise_pred = out.sample.float()
                if want_logits:
                    # keep the conditional (positive) branch
                    routing_logits = [z[-batch_size:] if z.shape[0] > 1 else z for z in out.routing_logits]
                if use_dynamic_cfg:
                    self._guidance_scale = 1 + guidance_scale * (
                        (1 - math.cos(math.pi * ((num_inference_steps - t.item()) / num_inference_steps) ** 5.0)) / 2
                    )
                if do_cfg:
                    noise_uncond, noise_text = noise_pred.chunk(2)
                    noise_pred = noise_uncond + self.guidance_scale * (noise_text - noise_uncond)
                if not isinstance(self.scheduler, CogVideoXDPMScheduler):
                    latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                else:
                    latents, old_pred_original_sample = self.scheduler.step(
                        noise_pred, old_pred_original_sample, t, timesteps[i - 1] if i > 0 else None, latents,
                        **extra_step_kwargs, return_dict=False,
                    )
                latents = latents.to(prompt_embeds.dtype)
                if callback_on_step_end is not None:
                    callback_kwargs = {k: locals()[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                progress_bar.update()
        self._current_timestep = None

        # 7. Decode
        if output_type == "latent":
            video = latents
        else:
            video = self.decode_latents(latents)
            video = self.video_processor.postprocess_video(video=video, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video, routing_logits) if return_routing_logits else (video,)
        return IngredientsPipelineOutput(frames=video, routing_logits=routing_logits)


def _to(value, device):
    """Move a tensor or a (nested) list of tensors to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return [_to(v, device) for v in value]
    return value
