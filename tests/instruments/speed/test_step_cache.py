"""Step cache: exact model forward when nothing is skipped, exact reuse on a repeated step, per-branch
decisions, bypasses, and why diffusers' First-Block Cache hook does not fit our model."""

from __future__ import annotations

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

from instruments.speed import (
    SIGNALS,
    StepCacheConfig,
    build_model,
    denoise,
    disable_step_cache,
    enable_step_cache,
    identity_kwargs,
)
from tests.instruments.speed.conftest import REDUCED, forward_kwargs, ours


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("interval", [1, 2])
def test_threshold_zero_reproduces_the_model_exactly(inputs, signal, interval):
    """Nothing skipped: the cached forward is the model's forward, bit for bit, over a sampling run."""
    model = ours(cross_attn_interval=interval)
    extra, _ = identity_kwargs(model, inputs)
    reference = denoise(model, inputs, extra, num_inference_steps=4).latents
    cache = enable_step_cache(model, StepCacheConfig(threshold=0.0, signal=signal))
    try:
        cached = denoise(model, inputs, extra, num_inference_steps=4).latents
    finally:
        disable_step_cache(model)
    torch.testing.assert_close(cached, reference, rtol=0, atol=0)
    summary = cache.stats.summary()
    assert summary["calls"] == 4 and summary["row_steps"] == 8 and summary["row_steps_skipped"] == 0


@pytest.mark.parametrize("signal", SIGNALS)
def test_repeated_step_is_served_from_the_cache(inputs, signal):
    """The same input twice: the second call skips both branches and returns the first call's output."""
    model = ours()
    extra, _ = identity_kwargs(model, inputs)
    kwargs = {**forward_kwargs(inputs), **extra}
    with torch.no_grad():
        direct = model(**kwargs, return_dict=False)[0]
        cache = enable_step_cache(model, StepCacheConfig(threshold=0.05, signal=signal))
        first = model(**kwargs, return_dict=False)[0]
        second = model(**kwargs, return_dict=False)[0]
    disable_step_cache(model)
    assert cache.stats.computed == [[True, True], [False, False]]
    assert cache.stats.distances[1] == [0.0, 0.0]
    torch.testing.assert_close(first, direct, rtol=0, atol=0)
    torch.testing.assert_close(second, direct, rtol=0, atol=2e-6 * direct.abs().max().item())


def test_diffusers_first_block_cache_double_counts_the_identity_injection(inputs):
    """diffusers' FBCache hooks the blocks only. On a repeated step (which must reproduce the output) it is
    exact for the bare CogVideoX but adds our between-block injections a second time (~27 % rel. error)."""
    errors = {}
    for kind in ("bare", "ours"):
        model = ours() if kind == "ours" else build_model("bare", REDUCED)
        extra, _ = identity_kwargs(model, inputs)
        kwargs = {**forward_kwargs(inputs), **extra}
        with torch.no_grad():
            direct = model(**kwargs, return_dict=False)[0]
            model.enable_cache(FirstBlockCacheConfig(threshold=0.05))
            outs = []
            for _ in range(2):
                with model.cache_context("cond_uncond"):
                    outs.append(model(**kwargs, return_dict=False)[0])
            if kind == "ours":
                with pytest.raises(ValueError, match="diffusers cache is enabled"):
                    enable_step_cache(model)
            model.disable_cache()
        torch.testing.assert_close(outs[0], direct, rtol=0, atol=0)
        errors[kind] = ((outs[1] - direct).norm() / direct.norm()).item()
    assert errors["bare"] < 1e-6
    assert errors["ours"] > 0.1


def _second_row_moved(hidden_states: torch.Tensor) -> torch.Tensor:
    """A copy whose row 1 (the conditional branch) moved far past the cache threshold; row 0 kept."""
    changed = hidden_states.clone()
    changed[1] = changed[1] + 0.5 * torch.randn(changed[1].shape, generator=torch.Generator().manual_seed(1))
    return changed


def test_branches_are_decided_independently(inputs):
    """Only the branch whose input changed is recomputed (as a sub-batch of one); the other is reused."""
    model = ours()
    extra, _ = identity_kwargs(model, inputs)
    kwargs = forward_kwargs(inputs)
    changed = _second_row_moved(kwargs["hidden_states"])
    with torch.no_grad():
        direct_changed = model(**{**kwargs, "hidden_states": changed}, **extra, return_dict=False)[0]
        direct_same = model(**kwargs, **extra, return_dict=False)[0]
        cache = enable_step_cache(model, StepCacheConfig(threshold=0.05))
        model(**kwargs, **extra)
        out = model(**{**kwargs, "hidden_states": changed}, **extra, return_dict=False)[0]
    disable_step_cache(model)
    assert cache.stats.computed[1] == [False, True]
    assert cache.stats.distances[1][0] == 0.0 and cache.stats.distances[1][1] > 0.05
    torch.testing.assert_close(out[0], direct_same[0], rtol=0, atol=2e-6 * direct_same.abs().max().item())
    torch.testing.assert_close(out[1], direct_changed[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("setting", ["pooled", "reference_batch"])
def test_joint_decision_computes_both_branches(inputs, setting):
    """per_branch=False pools the distance; reference batch semantics (all rows routed with sample 0)
    cannot recompute one row alone: either way both branches are recomputed."""
    model = ours(reference_batch_semantics=setting == "reference_batch")
    extra, _ = identity_kwargs(model, inputs)
    kwargs = forward_kwargs(inputs)
    changed = _second_row_moved(kwargs["hidden_states"])
    with torch.no_grad():
        direct = model(**{**kwargs, "hidden_states": changed}, **extra, return_dict=False)[0]
        cache = enable_step_cache(model, StepCacheConfig(threshold=0.05, per_branch=setting != "pooled"))
        model(**kwargs, **extra)
        out = model(**{**kwargs, "hidden_states": changed}, **extra, return_dict=False)[0]
    disable_step_cache(model)
    assert cache.stats.computed[1] == [True, True]
    torch.testing.assert_close(out, direct, rtol=0, atol=0)


def test_new_sampling_run_resets_the_cache(inputs):
    """A timestep above the previous one starts a new run: nothing from the old run is reused."""
    model = ours()
    extra, _ = identity_kwargs(model, inputs)
    cache = enable_step_cache(model, StepCacheConfig(threshold=1e9))  # would skip everything it could
    with torch.no_grad():
        model(**forward_kwargs(inputs, step=10), **extra)
        model(**forward_kwargs(inputs, step=11), **extra)
        model(**forward_kwargs(inputs, step=0), **extra)  # a new run begins at a high timestep
    disable_step_cache(model)
    assert cache.stats.computed == [[True, True], [False, False], [True, True]]


def test_training_and_routing_maps_bypass_the_cache(inputs):
    model = ours()
    extra, _ = identity_kwargs(model, inputs)
    kwargs = {**forward_kwargs(inputs), **extra}
    with torch.no_grad():
        direct = model(**kwargs, return_routing_logits=True)
    cache = enable_step_cache(model, StepCacheConfig(threshold=1e9))
    with torch.no_grad():
        logits_out = model(**kwargs, return_routing_logits=True)
    with torch.enable_grad():
        grad_out = model(**kwargs, return_dict=False)[0]
    disable_step_cache(model)
    assert cache.stats.bypassed_calls == 2 and cache.stats.computed == []
    torch.testing.assert_close(logits_out.sample, direct.sample, rtol=0, atol=0)
    assert len(logits_out.routing_logits) == len(direct.routing_logits) == 2
    torch.testing.assert_close(grad_out.detach(), direct.sample, rtol=0, atol=0)


def test_enable_and_disable_errors():
    model = ours()
    with pytest.raises(TypeError, match="IngredientsTransformer3DModel"):
        enable_step_cache(build_model("bare", REDUCED))
    with pytest.raises(ValueError, match="no step cache"):
        disable_step_cache(model)
    enable_step_cache(model)
    with pytest.raises(ValueError, match="already wrapped"):
        enable_step_cache(model)
    disable_step_cache(model)
    assert "forward" not in vars(model)
    with pytest.raises(ValueError, match="signal"):
        StepCacheConfig(signal="teacache")
    with pytest.raises(ValueError, match="threshold"):
        StepCacheConfig(threshold=-1.0)


def test_the_cached_forward_takes_exactly_the_transformers_arguments():
    """StepCache.forward restates the transformer's signature (it replaces `forward` on the instance):
    an argument added to one and not the other fails here, not silently at sampling time."""
    import inspect

    from ingredients.models import IngredientsTransformer3DModel
    from ingredients.pipelines.step_cache import StepCache

    def parameters(fn):
        return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]

    assert parameters(StepCache.forward) == parameters(IngredientsTransformer3DModel.forward)
