"""Reduced-size models and inputs shared by the speed tests."""

from __future__ import annotations

import pytest
import torch

from instruments.speed import SIZES, build_model, make_sampling_inputs, make_scheduler
from instruments.speed.timed_models import identity_feature_dims
from instruments.speed.denoise_loop import model_input

REDUCED = SIZES["reduced"]


@pytest.fixture(scope="module")
def inputs():
    return make_sampling_inputs(REDUCED, 2, *identity_feature_dims(REDUCED))


def ours(**overrides):
    """Our model at reduced size (float32, CPU), 3 layers by default so there is a block between head and tail."""
    overrides.setdefault("num_layers", 3)
    return build_model("ours", REDUCED, **overrides)


def forward_kwargs(inputs, step: int = 10, steps: int = 50, latents: torch.Tensor | None = None) -> dict:
    """Transformer kwargs of a guided step (batch 2) at `step` of a `steps` schedule."""
    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    t = scheduler.timesteps[step]
    lat = inputs.latents if latents is None else latents
    x = model_input(lat, inputs.image_latents, t, scheduler, guidance=True)
    return {
        "hidden_states": x,
        "encoder_hidden_states": inputs.prompt_embeds,
        "timestep": t.expand(2),
        "image_rotary_emb": inputs.rotary,
    }


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tests check values, not speed, and a shared 2-core machine makes
    spinning thread pools very slow under load. Restores the count (the benchmark's main() sets it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
