"""A fake training step of a stage at tiny size: what it counts is what the trainer's setup holds."""

from __future__ import annotations

import pytest
import torch

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
    # AdamW: exp_avg + exp_avg_sq in fp32 (its step counts are host scalars unless capturable / fused)
    assert m.optimizer_bytes == 8 * trainable
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


def test_a_model_that_keeps_some_vit_scales_is_planned_on_the_face_stacks_scales():
    """The single-scale ablation's model takes the face stack's 5 scales and keeps one
    (`prepare.transformer.vit_scale_indices`): the plan's fake inputs carry the 5, as the trainer's and
    the sampler's do (the ablation's plan stage failed with an IndexError when they carried 1)."""
    from ingredients.config import deep_merge
    from ingredients.plan.sampling_step import measure_sampling

    prepare = deep_merge(load_params(ROOT / "params.yaml")["prepare"],
                         load_params(ROOT / "experiments" / "single_scale.yaml")["prepare"])
    prepare["transformer"]["num_layers"] = 2
    models = profile_models(prepare)
    assert models.transformer["vit_scale_indices"] == [4] and models.transformer["num_vit_scales"] == 1
    assert measure_training_step(stage2(), models, local_batch=1, num_identities=2).flops > 0
    from ingredients.sampling.sample import SampleParams

    sampled = measure_sampling(models, SampleParams(), 2)
    assert sampled.phase_flops["identities"] > 0


def test_the_step_counts_its_batch_and_the_optimizer_steps_own_peak(models):
    """The activation window starts before the data loader's batch (frames [B, F, 3, H, W] in float32 among
    them), and the optimizer step's peak (the batch still alive, the update's temporaries) is measured."""
    m = measure_training_step(stage2(), models, local_batch=2, num_identities=2)
    frames = 2 * models.num_frames * 3 * models.height * models.width * 4
    assert m.input_bytes >= frames
    assert m.activation_bytes > m.input_bytes
    assert m.optimizer_step_bytes >= frames  # the batch is alive while the optimizer steps
