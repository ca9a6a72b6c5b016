"""A fake training step of a stage at tiny size: what it counts is what the trainer's setup holds."""

from __future__ import annotations

import pytest

from ingredients.config import load_params
from ingredients.plan.model_configs import profile_models
from ingredients.plan.training_step import measure_training_step
from ingredients.training.stage_spec import build_stage_spec

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def stage2(**common):
    train = load_params(ROOT / "params.yaml")["train"]
    train = {**train, "common": {**train["common"], "precompute": {"enabled": True},
                                 "image_noise": {"enabled": False}, **common}}
    return build_stage_spec(train, "stage2")


@pytest.fixture(scope="module")
def models():
    return profile_models({"profile": "tiny", "transformer": {"num_layers": 2, "extractor_depth": 5}})


def test_gradients_optimizer_and_frozen_weights_match_the_parameters(models):
    m = measure_training_step(stage2(mixed_precision="bf16"), models, local_batch=2, num_identities=2)
    trainable = sum(m.trainable.values())
    assert set(m.trainable) == {"projector", "injectors", "routers"}
    assert m.grad_bytes == 4 * trainable  # fp32 gradients of the trainable groups
    n_tensors = m.optimizer_bytes - 8 * trainable  # AdamW: exp_avg + exp_avg_sq in fp32, plus a step scalar each
    assert n_tensors > 0 and n_tensors % 4 == 0
    assert m.weight_bytes["transformer.backbone"] == 2 * m.parameters["backbone"]  # frozen: bf16
    assert m.weight_bytes["transformer.routers"] == 4 * m.parameters["routers"]  # trainable: fp32
    assert m.encode_peak_bytes == 0 and "text_encoder" not in m.weight_bytes  # precomputed, no image noise
    assert m.flops > 0 and m.activation_bytes > 0


def test_gradient_checkpointing_lowers_the_activations_and_adds_the_recompute(models):
    on = measure_training_step(stage2(gradient_checkpointing=True), models, local_batch=2, num_identities=2)
    off = measure_training_step(stage2(gradient_checkpointing=False), models, local_batch=2, num_identities=2)
    assert on.activation_bytes < off.activation_bytes
    assert on.flops > off.flops  # the blocks' forward runs again in the backward
    assert on.grad_bytes == off.grad_bytes
