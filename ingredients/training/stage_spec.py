"""The stage specification: one typed, validated record per training stage, built from params data.

A stage is data, not a subclass: `build_stage_spec(params["train"], "stage2")` deep-merges
`train.common` with `train.stage2` (the stage wins) and validates the result. Errors name the bad key
with its full path and the allowed values or keys. See `ingredients.training.train` for the params
layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ingredients.config import ParamsError, deep_merge, format_validation_error

BackboneMode = Literal["frozen", "scaled_lr", "lora"]
MixedPrecision = Literal["no", "bf16", "fp16", "auto"]
# diffusers.optimization.get_scheduler names that need no extra arguments beyond warm-up/steps
LRScheduleName = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
]
COMMON_SECTION = "common"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainModules(_Section):
    """Which modules train. backbone: 'frozen' | 'scaled_lr' (lr x backbone_lr_scale) | 'lora'
    (peft LoRA of rank lora_rank on the backbone's attention projections to_q/to_k/to_v/to_out.0).
    patch_embed: the input patch embedding (noisy- and image-latent channels, text projection) trains
    at the stage's lr whatever the backbone mode, e.g. to learn image-condition channels that a
    text-to-video initialisation starts at zero (experiments/t2v_init.yaml)."""

    projector: bool = True
    injectors: bool = True
    routers: bool = False
    patch_embed: bool = False
    backbone: BackboneMode = "frozen"
    backbone_lr_scale: float = Field(0.1, gt=0)
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha; None = lora_rank (scale 1)")


class Identities(_Section):
    """Which clips the loader gives: identity count between min and max (inclusive; max None = any)."""

    min: int = Field(1, ge=1)
    max: int | None = Field(1, ge=1)

    @model_validator(mode="after")
    def _order(self) -> "Identities":
        if self.max is not None and self.max < self.min:
            raise ValueError(f"identities.max={self.max} is below identities.min={self.min}")
        return self


class Routing(_Section):
    """Routing loss: total = diffusion + weight * routing; kind 'ce' (the paper) or 'mse' (its ablation)."""

    weight: float = Field(0.0, ge=0)
    kind: Literal["ce", "mse"] = "ce"


class LossSpec(_Section):
    """diffusion_weight scales the diffusion loss; face_weight > 0 up-weights latent positions inside
    labelled face regions of the index mask by (1 + face_weight) (normalised per sample)."""

    diffusion_weight: float = Field(1.0, ge=0)
    face_weight: float = Field(0.0, ge=0)


class LRSchedule(_Section):
    """diffusers.optimization.get_scheduler: name, warm-up steps (optimizer steps)."""

    name: LRScheduleName = "constant_with_warmup"
    warmup_steps: int = Field(0, ge=0)
    num_cycles: int = Field(1, ge=1, description="cosine_with_restarts only")
    power: float = Field(1.0, gt=0, description="polynomial only")


class EMASpec(_Section):
    """EMA of the trainable weights (diffusers EMAModel); the final model folder gets the EMA weights."""

    enabled: bool = False
    decay: float = Field(0.999, gt=0, lt=1)
    update_after_step: int = Field(0, ge=0)


class DropoutSpec(_Section):
    """Per-sample probabilities for classifier-free guidance: text -> the empty prompt's embedding,
    identity -> no identity residual (id_mask all False, routing labels ignored)."""

    text: float = Field(0.0, ge=0, le=1)
    identity: float = Field(0.0, ge=0, le=1)


class DataSpec(_Section):
    """Clip sampling. num_frames/height/width None = the transformer's sample size. temporal_sampling
    'uniform' or 'start' (deterministic, so resumed runs see the same frames). shuffle_identities:
    each training sample sees its identities in a random order (references, canvas slots and
    routing labels together), so the router cannot learn the manifest's order as a position prior
    (curated manifests list identities left to right); validation keeps the manifest order."""

    num_frames: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=16)
    width: int | None = Field(None, ge=16)
    min_coverage: float = Field(0.5, gt=0, le=1)
    temporal_sampling: Literal["uniform", "start"] = "uniform"
    frame_stride: int = Field(1, ge=1)
    shuffle_identities: bool = True
    num_workers: int = Field(0, ge=0)


class ImageNoiseSpec(_Section):
    """Noise augmentation of the image condition during training (diffusers' and CogVideo's
    image-to-video fine-tuning): per sample sigma = exp(N(log_mean, log_std)), canvas + sigma * N(0, 1)
    on the [-1, 1] canvas, then VAE encoding. Sampling adds no noise (as diffusers' pipeline), nor does
    validation."""

    enabled: bool = True
    log_mean: float = -3.0
    log_std: float = Field(0.5, ge=0)


class PrecomputeSpec(_Section):
    """Content-addressed cache of VAE latent distributions, text embeddings and identity
    conditioning (safetensors). cache_dir None = <out>/cache."""

    enabled: bool = False
    cache_dir: str | None = None


class CheckpointSpec(_Section):
    """Checkpoint every `every` optimizer steps (0 = only at the end); keep the newest `keep`."""

    every: int = Field(0, ge=0)
    keep: int = Field(2, ge=1)


class ValidationSpec(_Section):
    """Every `every` steps (0 = only at the start and the end): validation loss on `num_clips` clips
    at fixed noise and `timesteps`, routing accuracy, a sampled frame strip (`inference_steps`
    denoising steps; 0 = no sample) and routing maps, written under <out>/validation/."""

    every: int = Field(0, ge=0)
    num_clips: int = Field(2, ge=1)
    timesteps: list[int] = Field(default_factory=lambda: [100, 300, 500, 700, 900])
    inference_steps: int = Field(4, ge=0)
    guidance_scale: float = Field(1.0, ge=0)
    seed: int = 1234


class StageSpec(_Section):
    """Everything one training stage needs, besides paths (manifest, init folder, output folder)."""

    stage: str
    init_from: str = Field("model", description="'model' (any model folder) or the stage whose output --init must be")
    seed: int = 0
    steps: int = Field(ge=0, description="optimizer steps; 0 passes the init model through unchanged (stage2_only ablation)")
    batch_size: int = Field(1, ge=1, description="global batch per micro-step, split across processes")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: MixedPrecision = "no"
    gradient_checkpointing: bool = False
    ddp_find_unused_parameters: bool = True
    train: TrainModules = TrainModules()
    identities: Identities = Identities()
    routing: Routing = Routing()
    loss: LossSpec = LossSpec()
    lr_schedule: LRSchedule = LRSchedule()
    ema: EMASpec = EMASpec()
    dropout: DropoutSpec = DropoutSpec()
    image_noise: ImageNoiseSpec = ImageNoiseSpec()
    data: DataSpec = DataSpec()
    precompute: PrecomputeSpec = PrecomputeSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    validation: ValidationSpec = ValidationSpec()
    log_every: int = Field(1, ge=1, description="flush the plots file and MLflow every N steps")
    log_mlflow: bool = True  # where to: the params' `tracking:` section

    @model_validator(mode="after")
    def _consistent(self) -> "StageSpec":
        t = self.train
        if not (t.projector or t.injectors or t.routers or t.patch_embed or t.backbone != "frozen"):
            raise ValueError("train: nothing trains (projector, injectors, routers and patch_embed false, backbone frozen)")
        if self.routing.weight > 0 and self.identities.max == 1:
            raise ValueError("routing.weight > 0 needs multi-identity clips, but identities.max is 1")
        return self

    def resolved(self) -> dict[str, Any]:
        """The spec as plain data (stored in checkpoints and logged to MLflow)."""
        return self.model_dump(mode="json")


def build_stage_spec(train_params: Mapping[str, Any], stage: str) -> StageSpec:
    """The validated spec of `stage` from the params' `train` section (common merged under the stage).

    Raises ParamsError naming the bad key (as `train.<stage>.<path>`) and the allowed values or keys.
    """
    if not isinstance(train_params, Mapping):
        raise ParamsError(f"params 'train' must be a mapping of sections, got {type(train_params).__name__}")
    stages = sorted(k for k in train_params if k != COMMON_SECTION)
    if stage == COMMON_SECTION or stage not in train_params:
        raise ParamsError(f"train.{stage}: no such stage section; stages in params: {', '.join(stages) or 'none'}")
    common = train_params.get(COMMON_SECTION) or {}
    section = train_params[stage] or {}
    for name, value in ((COMMON_SECTION, common), (stage, section)):
        if not isinstance(value, Mapping):
            raise ParamsError(f"train.{name} must be a mapping, got {type(value).__name__}")
    merged = deep_merge(common, section)
    if "stage" in merged:
        raise ParamsError(f"train.{stage}.stage: do not set it; the stage name is the section's key")
    merged["stage"] = stage
    try:
        spec = StageSpec.model_validate(merged)
    except ValidationError as e:
        raise ParamsError(format_validation_error(e, f"train.{stage}", StageSpec)) from None
    if spec.init_from != "model" and spec.init_from not in stages:
        raise ParamsError(
            f"train.{stage}.init_from: {spec.init_from!r} is neither 'model' nor a stage; allowed: model, {', '.join(stages)}"
        )
    if spec.init_from == stage:
        raise ParamsError(f"train.{stage}.init_from: a stage cannot initialise from itself")
    return spec
