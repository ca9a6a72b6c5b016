"""One training step of a stage's trainable setting on given model inputs, as the trainer runs it.

The trainer's parameter setup in one function (LoRA, trainable groups, frozen parts in the weight
dtype, gradient checkpointing, AdamW over the groups) and a step (autocast forward, diffusion-like
loss + routing loss, backward, optimizer step), without data or checkpoints: what the full-size
fake-tensor tests, the cost plan and the device check run at full size, and tests at tiny size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ingredients.training.stage_spec import TrainModules
from ingredients.training.trainable import add_backbone_lora, cast_frozen_parameters, configure_trainable, parameter_group


@dataclass
class StageSetup:
    """What `setup_stage` made: optimizer parameter groups (name, params, lr) and the AdamW over them."""

    groups: list[dict]
    optimizer: torch.optim.Optimizer

    @property
    def trainable(self) -> dict[str, int]:
        """Trainable parameter count per group."""
        return {g["name"]: sum(p.numel() for p in g["params"]) for g in self.groups}


def has_lora(model: nn.Module) -> bool:
    """Whether LoRA adapters are already injected (e.g. on the meta model, before fake materialisation)."""
    return any(parameter_group(n) == "lora" for n, _ in model.named_parameters())


def setup_stage(
    model: nn.Module, train: TrainModules, lr: float, weight_dtype: torch.dtype = torch.float32,
    gradient_checkpointing: bool = False,
) -> StageSetup:
    """Prepare `model` for a stage as `Trainer.prepare_models` / `prepare_trainable` / `prepare_optimizer` do
    (LoRA injected here unless the model already carries it)."""
    if train.backbone == "lora" and not has_lora(model):
        add_backbone_lora(model, train.lora_rank, train.lora_alpha)
    groups = configure_trainable(model, train, lr)
    if weight_dtype != torch.float32:
        cast_frozen_parameters(model, weight_dtype)
    model.train()
    if gradient_checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([{"params": g["params"], "lr": g["lr"]} for g in groups], lr=lr)
    return StageSetup(groups, optimizer)


def training_step(
    model: nn.Module, inputs: dict, optimizer: torch.optim.Optimizer, index_mask: torch.Tensor | None = None,
    weight_dtype: torch.dtype = torch.float32, routing_weight: float = 1.0,
):
    """Forward (autocast to `weight_dtype` unless float32), loss, backward, optimizer step; returns the
    model output (sample, routing_loss, routing_logits). The loss is the mean square of the prediction
    (the diffusion loss's cost, without a scheduler) plus `routing_weight` x the routing loss."""
    device_type = inputs["hidden_states"].device.type
    autocast = (torch.autocast(device_type, dtype=weight_dtype) if weight_dtype != torch.float32
                else contextlib.nullcontext())
    with autocast:
        out = model(**inputs, index_mask=index_mask, return_routing_logits=True, return_dict=True)
    loss = out.sample.float().square().mean()
    if out.routing_loss is not None:
        loss = loss + routing_weight * out.routing_loss
    loss.backward()
    optimizer.step()
    return out
