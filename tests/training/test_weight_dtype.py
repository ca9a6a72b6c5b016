"""Mixed precision keeps frozen weights in the weight dtype: the frozen transformer backbone as well as
the VAE and the text encoder (the 5B backbone: 24 GB in float32, 12 GB in bf16); trainable weights stay
float32 for the optimizer."""

from __future__ import annotations

import pytest

import torch

from ingredients.training import RunPaths, Trainer, build_stage_spec
from ingredients.training.trainable import parameter_group
from tests.training.conftest import train_params


def _prepared(tiny_manifest, small_model, out, mixed_precision: str, backbone: str = "frozen") -> Trainer:
    params = train_params(common={"mixed_precision": mixed_precision}, stage1={"train": {"backbone": backbone}})
    trainer = Trainer(build_stage_spec(params, "stage1"), RunPaths(tiny_manifest, small_model, out))
    trainer.prepare_accelerator()
    trainer.prepare_models()
    trainer.prepare_trainable()
    return trainer


def test_frozen_backbone_is_held_in_bf16_under_mixed_precision(tiny_manifest, small_model, tmp_path):
    trainer = _prepared(tiny_manifest, small_model, tmp_path / "run", "bf16")
    dtypes = {}
    for name, p in trainer.transformer.named_parameters():
        dtypes.setdefault((parameter_group(name), p.requires_grad), set()).add(p.dtype)
    assert dtypes[("backbone", False)] == {torch.bfloat16}
    assert dtypes[("projector", True)] == dtypes[("injectors", True)] == {torch.float32}
    assert dtypes[("routers", False)] == {torch.bfloat16}  # frozen in stage 1
    assert {p.dtype for p in trainer.pipe.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trainer.pipe.vae.parameters()} == {torch.bfloat16}


def test_trained_backbone_stays_float32(tiny_manifest, small_model, tmp_path):
    trainer = _prepared(tiny_manifest, small_model, tmp_path / "run", "bf16", backbone="scaled_lr")
    assert {p.dtype for n, p in trainer.transformer.named_parameters() if parameter_group(n) == "backbone"} == {torch.float32}


def test_full_precision_casts_nothing(tiny_manifest, small_model, tmp_path):
    trainer = _prepared(tiny_manifest, small_model, tmp_path / "run", "no")
    assert {p.dtype for p in trainer.transformer.parameters()} == {torch.float32}


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_bf16_run_with_a_frozen_bf16_backbone_trains_validates_and_saves(tiny_manifest, small_model, tmp_path):
    params = train_params(common={"mixed_precision": "bf16"},
                          stage1={"steps": 2, "validation": {"num_clips": 1, "inference_steps": 1, "timesteps": [500]}})
    model_dir = Trainer(build_stage_spec(params, "stage1"), RunPaths(tiny_manifest, small_model, tmp_path / "run")).fit()
    assert (model_dir / "transformer" / "config.json").is_file()
    assert len(list((tmp_path / "run" / "validation").glob("*_sample.png"))) == 2  # step 0 and the last step


def test_text_encoder_leaves_the_device_after_precompute_and_returns_for_validation_sampling(
        tiny_manifest, small_model, tmp_path, monkeypatch):
    """precompute on: after the clips are encoded the text encoder is moved to the CPU for the loop, and
    to the device only around validation sampling (on a GPU: 9.5 GB of T5-XXL off the device)."""
    import torch.nn as nn

    moves: list[str] = []
    original = nn.Module.to

    def recording_to(module, *args, **kwargs):
        # on a CPU the accelerator's device is the CPU too: what tells parking ("cpu", the literal the
        # trainer parks to) from bringing it back (accelerator.device, a torch.device) is the argument
        if module is getattr(recording_to, "watched", None):
            target = args[0] if args else kwargs.get("device", kwargs.get("dtype"))
            moves.append("device" if target is trainer.accelerator.device else repr(target))
        return original(module, *args, **kwargs)

    params = train_params(stage1={"steps": 2, "validation": {"num_clips": 1, "inference_steps": 1, "timesteps": [500]}})
    trainer = Trainer(build_stage_spec(params, "stage1"), RunPaths(tiny_manifest, small_model, tmp_path / "run"))
    prepare_validation = trainer.prepare_validation

    def watch_after_validation_clips():
        prepare_validation()
        recording_to.watched = trainer.pipe.text_encoder  # what happens to it from here on

    monkeypatch.setattr(trainer, "prepare_validation", watch_after_validation_clips)
    monkeypatch.setattr(nn.Module, "to", recording_to)
    trainer.fit()
    assert trainer.text_encoder_parked
    # parked once, then device -> cpu around each of the two validation samplings (step 0 and the last)
    assert moves == ["'cpu'", "device", "'cpu'", "device", "'cpu'"]
