"""Which parameters train, and at what learning rate: the stage's `train` section applied to a model.

Groups (by parameter name): `projector` = local_facial_extractor.*, `injectors` =
perceiver_cross_attention.*, `routers` = router.*, `lora` = peft LoRA weights injected into the
backbone, `patch_embed` = patch_embed.* when `train.patch_embed` is on, `backbone` = everything else
(patch_embed included when the switch is off). The backbone is frozen, trained at lr x
backbone_lr_scale ('scaled_lr'), or adapted through LoRA on its attention projections ('lora').
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import nn

from ingredients.training.stage_spec import TrainModules

logger = logging.getLogger(__name__)

IDENTITY_PREFIXES = {
    "projector": "local_facial_extractor.",
    "injectors": "perceiver_cross_attention.",
    "routers": "router.",
}
PATCH_EMBED_PREFIX = "patch_embed."
GROUPS = ("projector", "injectors", "routers", "patch_embed", "backbone", "lora")
# the backbone's self-attention projections (diffusers Attention in each CogVideoXBlock); peft
# matches a string target against the full module name
LORA_TARGET_MODULES = r"transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)"


def parameter_group(name: str, patch_embed: bool = False) -> str:
    """The group a parameter name belongs to (see the module docstring); `patch_embed` is the
    stage's `train.patch_embed` switch (off: the patch embedding is part of the backbone)."""
    if ".lora_" in name:
        return "lora"
    for group, prefix in IDENTITY_PREFIXES.items():
        if name.startswith(prefix):
            return group
    if patch_embed and name.startswith(PATCH_EMBED_PREFIX):
        return "patch_embed"
    return "backbone"


def add_backbone_lora(model: nn.Module, rank: int, alpha: float | None = None) -> None:
    """Inject peft LoRA adapters (rank `rank`, alpha default = rank) into the backbone's attention."""
    from peft import LoraConfig

    model.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=LORA_TARGET_MODULES, init_lora_weights=True)
    )


def merge_backbone_lora(model: nn.Module) -> None:
    """Fold the LoRA weights into the backbone and remove the adapters (a plain model again)."""
    if not getattr(model, "_hf_peft_config_loaded", False):
        return
    model.fuse_lora()
    model.unload_lora()


def trainable_groups(spec: TrainModules) -> set[str]:
    """The groups that train under `spec`."""
    groups = {g for g in ("projector", "injectors", "routers", "patch_embed") if getattr(spec, g)}
    if spec.backbone == "scaled_lr":
        groups.add("backbone")
    elif spec.backbone == "lora":
        groups.add("lora")
    return groups


def configure_trainable(model: nn.Module, spec: TrainModules, lr: float) -> list[dict]:
    """Set requires_grad per `spec` (LoRA must already be injected when backbone == 'lora') and
    return optimizer parameter groups: {'name', 'params', 'lr'} per trainable group."""
    groups = trainable_groups(spec)
    has_lora = any(parameter_group(n) == "lora" for n, _ in model.named_parameters())
    if spec.backbone == "lora" and not has_lora:
        raise ValueError("train.backbone is 'lora' but the model has no LoRA weights: call add_backbone_lora first")
    if spec.backbone != "lora" and has_lora:
        raise ValueError(f"the model carries LoRA weights but train.backbone is {spec.backbone!r}")
    by_group: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for name, param in model.named_parameters():
        group = parameter_group(name, spec.patch_embed)
        param.requires_grad_(group in groups)
        by_group[group].append(param)
    out = []
    for group in GROUPS:
        if group not in groups:
            continue
        if not by_group[group]:
            raise ValueError(f"train.{group if group != 'lora' else 'backbone'}: the model has no {group} parameters")
        group_lr = lr * spec.backbone_lr_scale if group == "backbone" else lr
        out.append({"name": group, "params": by_group[group], "lr": group_lr})
    counts = {g["name"]: sum(p.numel() for p in g["params"]) for g in out}
    logger.info("trainable parameters per group: %s", counts)
    return out


def named_trainable(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter that requires grad, in module order."""
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the trainable parameters, by name (what a checkpoint stores)."""
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in named_trainable(model)}


def load_trainable_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy checkpointed trainable tensors into `model`; the names must match the trainable set exactly."""
    params = dict(named_trainable(model))
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"{source}: trainable weights do not match this stage's trainable parameters "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}); resume with the same params as the checkpoint"
        )
    with torch.no_grad():
        for name, param in params.items():
            value = tensors[name]
            if value.shape != param.shape:
                raise ValueError(f"{source}: {name} has shape {tuple(value.shape)}, the model has {tuple(param.shape)}")
            param.copy_(value.to(param.device, param.dtype))


def cast_frozen_parameters(model: nn.Module, dtype: torch.dtype) -> int:
    """Hold every parameter that does not train in `dtype` (the mixed-precision weight dtype); returns
    how many were cast.

    Under mixed precision the forward runs in `dtype` anyway (autocast), so frozen fp32 weights only
    cost memory: the 5B backbone is about 24 GB in fp32 and 12 GB in bf16. Trainable parameters stay
    in float32 for the optimizer. Call after `configure_trainable` (which decides what trains).
    """
    cast = 0
    with torch.no_grad():
        for param in model.parameters():
            if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
                cast += 1
    return cast
