"""One training micro-step of a stage at its configured size, run fake: what one device holds and computes.

The step is the trainer's own (`StandInTrainer`, stand_in_trainer.py): `Trainer.prepare_*` as `fit()` runs them,
then the loader's first batch and `Trainer.micro_step` (identity shuffle, canvas noise and its VAE encode,
`compute_losses` under accelerate's autocast, accelerate's backward, clipping, AdamW, the lr schedule,
EMA), at micro-batch `local_batch` with K = `num_identities`. Dtypes are the trainer's (frozen weights
in the weight dtype, trainable ones in float32).

Measured on the live-storage counter: weights, the EMA copy (what `prepare_ema` adds), the precompute
pass (`prepare_encoder`: the text encoder and the VAE encode every clip before the loop, with the whole
transformer already on the device), and over the micro-step: the activations (the peak from the batch
on, the gradients set aside as backward makes them: step inputs, encodings, forward, backward), the
gradients (at the optimizer step), the optimizer state (what the first step adds) and the optimizer
step's own peak over weights, gradients and state (the batch still alive, the update's temporaries).

`backbone_only` plans diffusers' bare `CogVideoXTransformer3DModel`, which the trainer cannot train (it
has no identity modules): the same terms from a step of that model with the diffusion loss.
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
from ingredients.plan.fake_run import FakeRun, build_on_meta
from ingredients.plan.model_configs import ProfileModels, build_text_encoder, full_transformer_config
from ingredients.training.diffusion_loss import diffusion_loss
from ingredients.training.stage_spec import StageSpec
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
    encode_peak_bytes: int                # text + VAE encoding peak outside the step (bare backbone; 0 for the trainer's step)
    flops: int                            # forward + backward (+ recompute) of one micro-batch
    flops_by_op: dict[str, int] = field(default_factory=dict)
    largest_block_bytes: int = 0          # the biggest transformer block's weights (FSDP / ZeRO-3 gather unit)
    autocast_cache_bytes: int = 0         # autocast's low-precision copies of the trainable fp32 weights (in the activations)
    optimizer_step_bytes: int = 0         # the optimizer step's peak over weights, EMA, gradients and optimizer state
    input_bytes: int = 0                  # the batch the data loader puts on the device (in the activations)
    precompute_peak_bytes: int = 0        # the precompute pass's peak over the weights then on the device (0: off)
    parked_bytes: int = 0                 # weights on the device only before the loop (the parked text encoder)

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


def video_shape(spec_data, models: ProfileModels) -> tuple[int, int, int]:
    return (spec_data.num_frames or models.num_frames, spec_data.height or models.height, spec_data.width or models.width)


def measure_training_step(spec: StageSpec, models: ProfileModels, local_batch: int, num_identities: int,
                          backbone_only: bool = False) -> StepMemory:
    """Run one fake training micro-step of `spec` at micro-batch `local_batch` (see the module docstring)."""
    if backbone_only:
        return _measure_bare_backbone_step(spec, models, local_batch)
    return _measure_trainer_step(spec, models, local_batch, num_identities)


def _measure_trainer_step(spec: StageSpec, models: ProfileModels, local_batch: int, num_identities: int) -> StepMemory:
    import tempfile
    from pathlib import Path

    from ingredients.plan.stand_in_trainer import StandInTrainer

    spec = spec.model_copy(update={"batch_size": local_batch, "grad_accum": 1})  # one process, one micro-step
    with tempfile.TemporaryDirectory(prefix="plan-") as tmp, FakeRun() as run:
        trainer = StandInTrainer(spec, models, run, Path(tmp), num_identities)
        trainer.prepare_accelerator()
        trainer.prepare_models()
        trainer.prepare_trainable()
        trainer.prepare_data()
        with run.phase() as precompute:
            trainer.prepare_encoder()
        trainer.prepare_optimizer()
        with run.phase() as ema_phase:
            trainer.prepare_ema()
        trainer.prepare_distributed()
        trainer.park_text_encoder()
        model, pipe, trainable = trainer.transformer, trainer.pipe, trainer.trainable_params
        weight_bytes = _group_bytes(model, spec)
        encoders = {"vae": pipe.vae, "text_encoder": pipe.text_encoder}
        encoder_bytes = {k: sum(p.numel() * p.element_size() for p in m.parameters()) for k, m in encoders.items()}
        parked = encoder_bytes.pop("text_encoder") if trainer.text_encoder_parked else 0
        weight_bytes.update(encoder_bytes)
        for p in trainable:  # gradients are counted on their own (sharded or not), not as activations
            p.register_post_accumulate_grad_hook(lambda q: run.memory.set_aside(q.grad))
        marks: dict[str, Any] = {}

        def before_update(*_):
            marks["grads"] = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
            marks["other_peak"], marks["live"] = run.memory.peak_other, run.memory.live
            run.memory.reset_peak()

        def after_update(*_):
            marks["after"] = run.memory.live

        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrapper
        optimizer.register_step_pre_hook(before_update)
        optimizer.register_step_post_hook(after_update)
        with run.phase() as step:
            batch = trainer.first_batch()
            trainer.micro_step(batch, 0)
        start = step.start_bytes
        activations = marks["other_peak"] - (start - step._aside0)
        state = marks["after"] - marks["live"]
        update_peak = step.peak_bytes + start - marks["live"]  # over everything alive when the update began
        still_alive = marks["live"] - start - marks["grads"]  # the batch and the loss, beside the gradients
        return StepMemory(
            parameters=_group_numel(model, spec, trainable_only=False),
            trainable=_group_numel(model, spec, trainable_only=True),
            weight_bytes=weight_bytes,
            trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
            grad_bytes=marks["grads"],
            optimizer_bytes=state,
            ema_bytes=ema_phase.end_bytes,
            step_peak_bytes=max(marks["other_peak"] - (start - step._aside0) + marks["grads"], step.peak_bytes),
            activation_peak_bytes=activations,
            encode_peak_bytes=0,
            flops=step.flops,
            flops_by_op=step.flops_by_op,
            autocast_cache_bytes=(sum(2 * p.numel() for p in trainable if p.dtype == torch.float32)
                                  if trainer.weight_dtype != torch.float32 else 0),
            largest_block_bytes=max((sum(p.numel() * p.element_size() for p in b.parameters())
                                     for b in model.transformer_blocks), default=0),
            optimizer_step_bytes=max(still_alive, 0) + max(update_peak - state, 0),
            input_bytes=sum(t.numel() * t.element_size() for t in batch.values() if isinstance(t, torch.Tensor)),
            precompute_peak_bytes=precompute.peak_bytes if spec.precompute.enabled else 0,
            parked_bytes=parked,
        )


class NothingToTrain(ValueError):
    """The stage trains no parameter of the model planned (e.g. identity modules only, on the bare backbone)."""


def _measure_bare_backbone_step(spec: StageSpec, models: ProfileModels, local_batch: int) -> StepMemory:
    """A step of diffusers' bare transformer (no identity modules) with the diffusion loss: the batch's
    model inputs made inside the measured step, forward and backward under autocast, AdamW (and EMA)."""
    dtype = weight_dtype(spec)
    config = full_transformer_config(models, True)
    model = build_on_meta(CogVideoXTransformer3DModel, **config)
    if spec.train.backbone == "lora":
        add_backbone_lora(model, spec.train.lora_rank, spec.train.lora_alpha)
    if not [p for g in configure_trainable(model, spec.train, spec.lr) for p in g["params"]]:
        raise NothingToTrain(f"train.{spec.stage} trains only identity modules (train.{spec.stage}.train.backbone: "
                             f"{spec.train.backbone}), which the bare backbone has none of")
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
        autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else torch.autocast("cpu", enabled=False)
        with run.phase() as step:
            inputs = _bare_inputs(run, config, local_batch, latent_frames, height, width)
            with autocast:
                out = model(hidden_states=inputs["model_input"], encoder_hidden_states=inputs["prompt_embeds"],
                            timestep=inputs["timesteps"], image_rotary_emb=rotary, return_dict=False)[0]
                loss = diffusion_loss(scheduler, out, inputs["noisy"], inputs["latents"], inputs["timesteps"]).mean()
            del out
            loss.backward()
        grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
        with run.phase() as opt_phase:
            optimizer.step()
            if ema is not None:
                ema.step(trainable)
        still_alive = step.end_bytes - grad_bytes  # the inputs and the loss, beside the gradients
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
            optimizer_step_bytes=max(still_alive, 0) + max(opt_phase.peak_bytes - opt_phase.end_bytes, 0),
            input_bytes=sum(t.numel() * t.element_size() for t in inputs.values()),
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


def _bare_inputs(run: FakeRun, config: dict, batch: int, latent_frames: int, height: int, width: int) -> dict:
    """Fake model inputs of one micro-batch of the bare backbone (encoded clips' shapes, float32 as
    build_step_inputs gives them): latents, noisy latents, image latents, text embeddings, timesteps."""
    c, h, w = int(config["in_channels"]) // 2, height // 8, width // 8
    latents = run.empty(batch, latent_frames, c, h, w)
    noisy, image = torch.empty_like(latents), torch.empty_like(latents)
    return {"latents": latents, "noisy": noisy, "model_input": torch.cat([noisy, image], dim=2),  # -> [B, F, 2C, h, w]
            "prompt_embeds": run.empty(batch, int(config["max_text_seq_length"]), int(config["text_embed_dim"])),
            "timesteps": torch.zeros(batch, dtype=torch.long)}
