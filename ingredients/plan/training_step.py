"""One training step of a stage at its configured size, run fake: what one device holds and computes.

Built like the trainer builds it: the stage spec from params (`build_stage_spec`), LoRA injected by
`add_backbone_lora`, trainable groups set by `configure_trainable`, AdamW with the trainer's
arguments, diffusers' EMAModel when on, the loss from `compute_losses` (the trainer's own step code)
under autocast in the weight dtype, then backward and the optimizer (and EMA) step. Dtypes follow the
trainer: the VAE and the text encoder in the weight dtype; frozen transformer parameters in it too
(`cast_frozen_parameters`, as Trainer.prepare_trainable does without FSDP / DeepSpeed), trainable ones
in float32. Inputs are the encoded clips' shapes (video latents, canvas latents, text embeddings, face
features, index mask) at micro-batch `local_batch`, K = identities.max.

Measured on the live-storage counter: weights, EMA copy, the forward+backward peak over them (and
without the gradients, set aside as backward makes them), gradients (the .grad tensors after backward), the optimizer state (what the first optimizer step
adds) and, when the text encoder and VAE encode on the device (precompute off), the encode phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
from diffusers.training_utils import EMAModel
from torch import nn

from ingredients.model_folder.tiny import SCHEDULER_CONFIG
from ingredients.models import IngredientsTransformer3DModel
from ingredients.plan.fake_run import FakeRun, build_on_meta
from ingredients.plan.model_configs import ProfileModels, input_vit_scales
from ingredients.training.diffusion_loss import diffusion_loss
from ingredients.training.stage_spec import StageSpec
from ingredients.training.step import StepInputs, compute_losses
from ingredients.training.trainable import add_backbone_lora, cast_frozen_parameters, configure_trainable, parameter_group

WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "auto": torch.bfloat16}  # auto = bf16 on a GPU


@dataclass
class StepMemory:
    """Bytes one device holds in one training step (a single process; sharding is applied later)."""

    parameters: dict[str, int]            # numel per group (projector, injectors, routers, lora, backbone, ...)
    trainable: dict[str, int]             # numel per trainable group
    weight_bytes: dict[str, int]          # bytes of the transformer per group, and text_encoder, vae
    trainable_bytes: int                  # bytes of the trainable parameters (their dtype)
    grad_bytes: int
    optimizer_bytes: int
    ema_bytes: int
    step_peak_bytes: int                  # forward+backward peak over weights, EMA and optimizer state (grads included)
    activation_peak_bytes: int            # the same peak without the gradients that exist at each moment
    encode_peak_bytes: int                # text + VAE encoding peak over the weights (0 when precomputed)
    flops: int                            # forward + backward (+ recompute) of one micro-batch
    flops_by_op: dict[str, int] = field(default_factory=dict)
    largest_block_bytes: int = 0          # the biggest transformer block's weights (FSDP / ZeRO-3 gather unit)
    autocast_cache_bytes: int = 0         # autocast's low-precision copies of the trainable fp32 weights (in the activations)

    @property
    def activation_bytes(self) -> int:
        """The step's peak over the persistent state without the gradients (counted on their own): the
        gradients backward has made so far are set aside as they appear."""
        return self.activation_peak_bytes


def weight_dtype(spec: StageSpec) -> torch.dtype:
    return WEIGHT_DTYPES.get(spec.mixed_precision, torch.float32)


def rotary_embedding(config, height: int, width: int, latent_frames: int, vae_spatial: int = 8):
    """The 3-D RoPE (cos, sin) the pipeline and trainer pass, against a 480 x 720 base (real tensors)."""
    unit = vae_spatial * config["patch_size"]
    grid = (height // unit, width // unit)
    crops = get_resize_crop_region_for_grid(grid, 720 // unit, 480 // unit)
    return get_3d_rotary_pos_embed(embed_dim=config["attention_head_dim"], crops_coords=crops, grid_size=grid,
                                   temporal_size=latent_frames, device="cpu")


def full_transformer_config(models: ProfileModels, backbone_only: bool) -> dict[str, Any]:
    """The transformer config: ours (defaults = CogVideoX-5B-I2V + identity modules, with overrides)
    or the bare backbone's keys only."""
    defaults = {k: v.default for k, v in _signature(IngredientsTransformer3DModel).items() if k != "self"}
    config = {**defaults, **models.transformer}
    if backbone_only:
        bare = set(_signature(CogVideoXTransformer3DModel)) - {"self"}
        config = {k: v for k, v in config.items() if k in bare}
    return config


def _signature(cls) -> dict:
    import inspect

    return dict(inspect.signature(cls.__init__).parameters)


def video_shape(spec_data, models: ProfileModels) -> tuple[int, int, int]:
    return (spec_data.num_frames or models.num_frames, spec_data.height or models.height, spec_data.width or models.width)


def build_text_encoder(models: ProfileModels) -> nn.Module:
    if models.text_encoder_kind == "t5":
        from transformers import T5Config, T5EncoderModel

        return build_on_meta(T5EncoderModel, T5Config(**models.text_encoder))
    from transformers import BertConfig, BertModel

    config = {k: v for k, v in models.text_encoder.items() if not k.startswith("_") and k != "architectures"}
    return build_on_meta(BertModel, BertConfig(**config), add_pooling_layer=False)


def measure_training_step(spec: StageSpec, models: ProfileModels, local_batch: int, num_identities: int,
                          backbone_only: bool = False) -> StepMemory:
    """Run one fake training step of `spec` at micro-batch `local_batch` (see the module docstring)."""
    dtype = weight_dtype(spec)
    config = full_transformer_config(models, backbone_only)
    cls = CogVideoXTransformer3DModel if backbone_only else IngredientsTransformer3DModel
    model = build_on_meta(cls, **config)
    if spec.train.backbone == "lora":
        add_backbone_lora(model, spec.train.lora_rank, spec.train.lora_alpha)
    configure_trainable(model, spec.train, spec.lr)  # requires_grad on the meta model, then the trainer's dtypes
    if dtype != torch.float32:
        cast_frozen_parameters(model, dtype)  # Trainer.prepare_trainable (not sharded; see sharding.py for FSDP)
    encoders: list[tuple[str, nn.Module]] = []
    if spec.image_noise.enabled or not spec.precompute.enabled:
        encoders.append(("vae", build_on_meta(AutoencoderKLCogVideoX, **models.vae).to(dtype)))
    if not spec.precompute.enabled:
        encoders.append(("text_encoder", build_text_encoder(models).to(dtype)))
    num_frames, height, width = video_shape(spec.data, models)
    latent_frames = (num_frames - 1) // 4 + 1
    rotary = rotary_embedding(config, height, width, latent_frames) if config["use_rotary_positional_embeddings"] else None
    scheduler = CogVideoXDPMScheduler(**SCHEDULER_CONFIG)
    # real (not fake) masks: the routing loss checks their labels, a data-dependent test fake tensors refuse
    tokens = latent_frames * (height // 8 // config["patch_size"]) * (width // 8 // config["patch_size"])
    masks = (torch.ones(local_batch, num_identities, dtype=torch.bool), torch.zeros(local_batch, tokens, dtype=torch.long))

    with FakeRun() as run:
        run.materialise(model)
        model.train()
        if spec.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        groups = configure_trainable(model, spec.train, spec.lr)
        weight_bytes = _group_bytes(model, spec)
        for name, enc in encoders:
            run.materialise(enc).eval().requires_grad_(False)
            weight_bytes[name] = sum(p.numel() * p.element_size() for p in enc.parameters())
        trainable = [p for g in groups for p in g["params"]]
        optimizer = torch.optim.AdamW([{"params": g["params"], "lr": g["lr"]} for g in groups], lr=spec.lr,
                                      betas=tuple(spec.adam_betas), eps=spec.adam_eps, weight_decay=spec.weight_decay)
        with run.phase() as ema_phase:
            ema = EMAModel(trainable, decay=spec.ema.decay) if spec.ema.enabled else None
        encode_peak = 0
        if encoders:
            encode_peak = _encode_phase(run, dict(encoders), int(config["max_text_seq_length"]), num_frames, height, width, dtype)
        for p in trainable:  # gradients are counted on their own (sharded or not), not as activations
            p.register_post_accumulate_grad_hook(lambda q: run.memory.set_aside(q.grad))
        inputs = _step_inputs(config, masks, models.vit_tokens, latent_frames, height, width)
        autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else torch.autocast("cpu", enabled=False)
        with run.phase() as step:
            with autocast:
                if backbone_only:
                    out = model(hidden_states=inputs.model_input, encoder_hidden_states=inputs.prompt_embeds,
                                timestep=inputs.timesteps, image_rotary_emb=rotary, return_dict=False)[0]
                    loss = diffusion_loss(scheduler, out, inputs.noisy, inputs.latents, inputs.timesteps).mean()
                else:
                    loss = compute_losses(model, inputs, scheduler, rotary, int(config["patch_size"]), spec.loss,
                                          spec.routing).total
            loss.backward()
        grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
        with run.phase() as opt_phase:
            optimizer.step()
            if ema is not None:
                ema.step(trainable)
        optimizer.zero_grad(set_to_none=True)
        return StepMemory(
            parameters=_group_numel(model, spec, trainable_only=False),
            trainable=_group_numel(model, spec, trainable_only=True),
            weight_bytes=weight_bytes,
            trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
            grad_bytes=grad_bytes,
            optimizer_bytes=opt_phase.end_bytes,
            ema_bytes=ema_phase.end_bytes,
            step_peak_bytes=step.peak_bytes,
            activation_peak_bytes=step.peak_other_bytes,
            encode_peak_bytes=encode_peak,
            flops=step.flops,
            flops_by_op=step.flops_by_op,
            autocast_cache_bytes=sum(2 * p.numel() for p in trainable if p.dtype == torch.float32) if dtype != torch.float32 else 0,
            largest_block_bytes=max((sum(p.numel() * p.element_size() for p in b.parameters())
                                     for b in model.transformer_blocks), default=0),
        )


def _group_numel(model: nn.Module, spec: StageSpec, trainable_only: bool) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        group = parameter_group(name, spec.train.patch_embed)
        out[group] = out.get(group, 0) + p.numel()
    return out


def _group_bytes(model: nn.Module, spec: StageSpec) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        group = f"transformer.{parameter_group(name, spec.train.patch_embed)}"
        out[group] = out.get(group, 0) + p.numel() * p.element_size()
    return out


@torch.no_grad()
def _encode_phase(run: FakeRun, encoders: dict[str, nn.Module], text_length: int, num_frames: int, height: int,
                  width: int, dtype: torch.dtype) -> int:
    """The trainer's per-clip encoding (ClipEncoder): the clip through the VAE and the caption through the
    text encoder when not precomputed (the text encoder is then on the device), else only the canvas
    (image noise on); returns the peak over the weights."""
    peak = 0
    if "vae" in encoders:
        # precomputed: only the noise-augmented canvas (one frame) is encoded per step; else the clip too
        frames = 1 if "text_encoder" not in encoders else num_frames
        with run.phase() as p:
            encoders["vae"].encode(run.empty(1, 3, frames, height, width, dtype=dtype)).latent_dist.parameters
        peak = max(peak, p.peak_bytes)
    if "text_encoder" in encoders:
        with run.phase() as p:
            encoders["text_encoder"](torch.zeros(1, text_length, dtype=torch.long))[0]
        peak = max(peak, p.peak_bytes)
    return peak


def _step_inputs(config: dict, masks: tuple[torch.Tensor, torch.Tensor], vit_tokens: int, latent_frames: int,
                 height: int, width: int) -> StepInputs:
    """Fake encoded-clip tensors of one micro-batch (shapes as build_step_inputs gives them); the
    identity mask [B, K] and index mask [B, N] are given (real)."""
    id_mask, index_mask = masks
    batch, k = id_mask.shape
    c = int(config["in_channels"]) // 2
    h, w = height // 8, width // 8
    latents = torch.empty(batch, latent_frames, c, h, w)
    return StepInputs(
        latents=latents, noisy=torch.empty_like(latents), image_latents=torch.empty_like(latents),
        prompt_embeds=torch.empty(batch, int(config["max_text_seq_length"]), int(config["text_embed_dim"])),
        timesteps=torch.zeros(batch, dtype=torch.long),
        id_cond=torch.empty(batch, k, int(config.get("id_embed_dim", 1))),
        id_vit_hidden=[torch.empty(batch, k, vit_tokens, int(config.get("vit_dim", 1)))
                       for _ in range(input_vit_scales(config))],
        id_mask=id_mask,
        index_mask=index_mask,
    )
