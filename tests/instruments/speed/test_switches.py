"""Speed switches compute the same function: identity SDPA, fused injection, ID tokens once; compile (slow)."""

from __future__ import annotations

import time

import pytest
import torch

from instruments.speed import (
    build_model,
    compile_transformer,
    denoise,
    identity_kwargs,
    set_fused_identity_injection,
    set_identity_sdpa,
)
from tests.instruments.speed.conftest import REDUCED, forward_kwargs, ours


def _forward(model, inputs):
    extra, _ = identity_kwargs(model, inputs)
    with torch.no_grad():
        return model(**forward_kwargs(inputs), **extra, return_dict=False)[0]


def test_identity_sdpa_switch_same_output(inputs):
    model = ours(cross_attn_interval=1)
    on = _forward(model, inputs)
    # 10 projector attentions + one injector per block (3 injection points)
    assert set_identity_sdpa(model, False) == 10 + 3
    assert model.config.identity_sdpa is False
    off = _forward(model, inputs)
    torch.testing.assert_close(off, on, rtol=1e-5, atol=1e-5)
    assert (off - on).abs().max() > 0  # a different kernel really ran
    set_identity_sdpa(model, True)
    torch.testing.assert_close(_forward(model, inputs), on, rtol=0, atol=0)


@pytest.mark.parametrize("identities", [1, 2, 4])
def test_fused_injection_switch_same_output(inputs, identities):
    """Mixing before `to_out` (folded when K x Q < dim_head: K <= 1 here) equals the reference's per-identity `to_out`."""
    from instruments.speed import make_sampling_inputs
    from instruments.speed.timed_models import identity_feature_dims

    inputs = make_sampling_inputs(REDUCED, identities, *identity_feature_dims(REDUCED))
    model = ours(cross_attn_interval=1)
    fused = _forward(model, inputs)
    set_fused_identity_injection(model, False)
    assert model.config.fused_identity_injection is False
    unfused = _forward(model, inputs)
    torch.testing.assert_close(unfused, fused, rtol=1e-5, atol=1e-5)


def test_id_tokens_once_equals_per_step(inputs):
    """ID tokens computed once per generation give exactly the run that reruns the projector every step."""
    model = ours()
    once, seconds = identity_kwargs(model, inputs, "once")
    per_step, none = identity_kwargs(model, inputs, "per_step")
    assert seconds > 0 and none is None
    assert set(once) == {"identities"} and once["identities"].tokens.shape == (2, 2, 8, 64)
    a = denoise(model, inputs, once, num_inference_steps=3).latents
    b = denoise(model, inputs, per_step, num_inference_steps=3).latents
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_switch_errors():
    bare = build_model("bare", REDUCED)
    with pytest.raises(TypeError, match="IngredientsTransformer3DModel"):
        set_identity_sdpa(bare, False)
    with pytest.raises(TypeError, match="IngredientsTransformer3DModel"):
        set_fused_identity_injection(bare, False)
    with pytest.raises(ValueError, match="compile mode"):
        compile_transformer(bare, "everything")
    assert compile_transformer(bare, "off") == 0
    with pytest.raises(ValueError, match="id_tokens"):
        identity_kwargs(ours(), None, "sometimes")


@pytest.mark.slow
def test_regional_compile_matches_eager(inputs):
    """torch.compile (inductor, CPU) of the blocks: same output; ~40 s to compile on 2 cores, hence slow."""
    torch.set_num_threads(2)
    model = ours()
    eager = _forward(model, inputs)
    assert compile_transformer(model, "regional") == 3
    start = time.perf_counter()
    compiled = _forward(model, inputs)
    first = time.perf_counter() - start
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    start = time.perf_counter()
    torch.testing.assert_close(_forward(model, inputs), compiled, rtol=1e-5, atol=1e-5)
    assert time.perf_counter() - start < first  # the graphs are reused, not recompiled
