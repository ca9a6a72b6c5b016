"""The full-size transformer (CogVideoX-5B-I2V + identity modules, 6.38 B parameters) under FakeTensorMode.

No weights and no arithmetic: shapes, dtypes and devices of a stage-1 and a stage-2 training step
(forward, backward, AdamW step) and of a guided sampling step at 49 x 480 x 720, the bugs only full
size shows. The default suite runs one of each (about 10 to 25 s each on an idle core); the matrix
(backbone frozen / LoRA / scaled_lr x gradient checkpointing x K = 1..4) is slow.
"""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

from diffusers.models import CogVideoXTransformer3DModel

from ingredients.models.full_size import (
    COGVIDEOX_5B_I2V,
    fake_full_size_transformer,
    full_size_inputs,
    guided_denoising_step,
    index_mask_for,
    meta_transformer,
    video_tokens,
)
from ingredients.training.stage_spec import TrainModules
from ingredients.training.synthetic_step import setup_stage, training_step
from ingredients.training.trainable import add_backbone_lora, parameter_group

FULL_PARAMETERS = 6_382_911_712  # backbone + projector, 21 injectors, 21 routers
BACKBONE_PARAMETERS = 5_570_479_680
LATENT = (13, 16, 60, 90)  # 49 frames -> 13 latent frames, 16 channels, 480 x 720 / 8
POINTS = 21  # injection after blocks 0, 2, ..., 40
STAGE1 = TrainModules(projector=True, injectors=True, routers=False, backbone="frozen")
STAGE2 = TrainModules(projector=True, injectors=True, routers=True, backbone="frozen")


def test_meta_build_has_the_5b_config():
    model = meta_transformer()
    assert sum(p.numel() for p in model.parameters()) == FULL_PARAMETERS
    backbone = sum(p.numel() for n, p in model.named_parameters() if parameter_group(n) == "backbone")
    with torch.device("meta"):  # diffusers' own CogVideoX-5B-I2V transformer: the backbone group exactly
        bare = CogVideoXTransformer3DModel(**COGVIDEOX_5B_I2V)
    assert backbone == sum(p.numel() for p in bare.parameters()) == BACKBONE_PARAMETERS
    assert len(model.transformer_blocks) == 42 and len(model.perceiver_cross_attention) == POINTS
    assert video_tokens(model.config) == 13 * 30 * 45


def test_fake_build_refuses_to_run_without_a_fake_mode():
    with pytest.raises(RuntimeError, match="FakeTensorMode"):
        fake_full_size_transformer()


def _train_step(train: TrainModules, k: int = 2, checkpointing: bool = True, routing_weight: float = 1.0):
    """A training step at full size, batch 1, bf16 mixed precision as profiles/full.yaml sets it."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        adapt = (lambda m: add_backbone_lora(m, train.lora_rank, train.lora_alpha)) if train.backbone == "lora" else None
        model = fake_full_size_transformer(adapt=adapt)
        setup = setup_stage(model, train, lr=1e-5, weight_dtype=torch.bfloat16, gradient_checkpointing=checkpointing)
        inputs = full_size_inputs(model.config, batch=1, num_identities=k)
        index_mask = index_mask_for(model.config, 1, k) if train.routers else None
        out = training_step(model, inputs, setup.optimizer, index_mask, torch.bfloat16, routing_weight)
        return model, setup, out


def _check_training_step(model, setup, out, train: TrainModules, k: int):
    assert is_fake(out.sample)
    assert out.sample.shape == (1, *LATENT) and out.sample.dtype == torch.bfloat16
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable  # every trainable parameter got a gradient, no frozen one did
    groups = {parameter_group(n) for n in trainable}
    expected = {"projector", "injectors"} | ({"routers"} if train.routers else set())
    expected |= {"scaled_lr": {"backbone"}, "lora": {"lora"}}.get(train.backbone, set())
    assert groups == expected
    for n, p in model.named_parameters():  # trainable in float32 for AdamW, frozen in the weight dtype
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16), n
    state = setup.optimizer.state
    assert len(state) == len(trainable)  # one AdamW state per trainable parameter
    assert all(s["exp_avg"].shape == p.shape and s["exp_avg_sq"].dtype == torch.float32 for p, s in state.items())
    if train.routers:
        assert out.routing_loss.shape == () and out.routing_loss.dtype == torch.float32
        assert len(out.routing_logits) == POINTS
        assert all(z.shape == (1, video_tokens(model.config), k) for z in out.routing_logits)
    else:
        assert out.routing_loss is None


def test_stage1_training_step_at_full_size():
    model, setup, out = _train_step(STAGE1, k=1)
    _check_training_step(model, setup, out, STAGE1, k=1)
    # per point: to_q 3072->2048, to_kv 2048->2x2048, to_out 2048->3072, LayerNorms of 2048 and 3072
    assert setup.trainable["injectors"] == POINTS * (2048 * (3072 + 4096 + 3072) + 2 * 2048 + 2 * 3072)
    assert setup.trainable["projector"] > 0 and "routers" not in setup.trainable


def test_stage2_training_step_at_full_size_with_routing_loss():
    model, setup, out = _train_step(STAGE2, k=2)
    _check_training_step(model, setup, out, STAGE2, k=2)


def test_guided_sampling_step_at_full_size_in_bf16():
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = fake_full_size_transformer(dtype=torch.bfloat16).eval()
        inputs = full_size_inputs(model.config, batch=2, num_identities=2, dtype=torch.bfloat16)
        with torch.no_grad():
            guided = guided_denoising_step(model, inputs)
    assert is_fake(guided) and guided.shape == (1, *LATENT) and guided.dtype == torch.float32
    assert not guided.requires_grad


@pytest.mark.slow  # 24 full-size fake steps, 15-40 s each on one core
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("checkpointing", [True, False])
@pytest.mark.parametrize("backbone", ["frozen", "lora", "scaled_lr"])
def test_training_step_matrix_at_full_size(backbone, checkpointing, k):
    train = TrainModules(projector=True, injectors=True, routers=k > 1, backbone=backbone, lora_rank=128)
    model, setup, out = _train_step(train, k=k, checkpointing=checkpointing)
    _check_training_step(model, setup, out, train, k)
    if backbone == "lora":
        assert setup.trainable["lora"] == 42 * 4 * 128 * (3072 + 3072)  # to_q, to_k, to_v, to_out.0: A and B
    if backbone == "scaled_lr":
        assert setup.trainable["backbone"] == BACKBONE_PARAMETERS
