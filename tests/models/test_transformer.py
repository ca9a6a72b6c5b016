"""Properties of IngredientsTransformer3DModel on the tiny configuration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ingredients.models import IngredientsTransformer3DModel, routing_loss
from ingredients.model_folder.tiny import tiny_transformer_config

B, FRAMES, H, W = 2, 3, 16, 16
TOKENS = FRAMES * (H // 2) * (W // 2)


def _model(**overrides) -> IngredientsTransformer3DModel:
    torch.manual_seed(0)
    return IngredientsTransformer3DModel(**tiny_transformer_config(**overrides)).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


def _inputs(batch=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, FRAMES, 8, H, W, generator=g),
        encoder_hidden_states=torch.randn(batch, 32, 384, generator=g),
        timestep=torch.tensor([500, 250][:batch] + [100] * max(0, batch - 2)),
    )


def _ids(batch, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, k, 160, generator=g), [torch.randn(batch, k, 65, 64, generator=g) for _ in range(5)]


def _run(model, **kwargs):
    with torch.no_grad():
        return model(**kwargs).sample


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_any_k_runs_and_uses_the_identities(model, k):
    id_cond, id_vit = _ids(B, k)
    out = _run(model, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit)
    bare = _run(model, **_inputs())
    assert out.shape == (B, FRAMES, 4, H, W) and torch.isfinite(out).all()
    assert (out - bare).abs().mean() > 1e-3


def test_output_is_invariant_to_identity_order(model):
    id_cond, id_vit = _ids(B, 3)
    perm = torch.tensor([2, 0, 1])
    out = _run(model, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit)
    permuted = _run(model, **_inputs(), id_cond=id_cond[:, perm], id_vit_hidden=[v[:, perm] for v in id_vit])
    torch.testing.assert_close(permuted, out, rtol=0, atol=1e-5)


def test_mixed_k_batch_equals_separate_samples(model):
    """Sample 0 has 1 identity, sample 1 has 3: padding and masking change nothing."""
    id_cond, id_vit = _ids(B, 3)
    id_mask = torch.tensor([[True, False, False], [True, True, True]])
    out = _run(model, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit, id_mask=id_mask)
    inputs = _inputs()
    for b, k in ((0, 1), (1, 3)):
        single = {name: t[b : b + 1] for name, t in inputs.items()}
        alone = _run(model, **single, id_cond=id_cond[b : b + 1, :k], id_vit_hidden=[v[b : b + 1, :k] for v in id_vit])
        torch.testing.assert_close(out[b : b + 1], alone, rtol=0, atol=1e-5)


def test_sample_without_identities_equals_the_bare_backbone(model):
    id_cond, id_vit = _ids(B, 2)
    id_mask = torch.tensor([[False, False], [True, True]])
    out = _run(model, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit, id_mask=id_mask)
    bare = _run(model, **_inputs())
    torch.testing.assert_close(out[0], bare[0], rtol=0, atol=1e-6)
    assert (out[1] - bare[1]).abs().mean() > 1e-3


def test_precomputed_identities_equal_raw_inputs(model):
    id_cond, id_vit = _ids(B, 2)
    identities = model.encode_identities(id_cond, id_vit)
    assert identities.tokens.shape == (B, 2, 8, 64)
    out = _run(model, **_inputs(), identities=identities)
    torch.testing.assert_close(out, _run(model, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit), rtol=0, atol=0)


@pytest.mark.parametrize("switch", [{"identity_sdpa": False}, {"fused_identity_injection": False}])
def test_speed_switches_compute_the_same_function(model, switch):
    other = _model(**switch)
    other.load_state_dict(model.state_dict())
    id_cond, id_vit = _ids(B, 3)
    a = _run(model, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit)
    b = _run(other, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_router_is_irrelevant_for_a_single_identity(model):
    other = _model()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for router in other.router:
            router.to_q.weight.normal_()
    id_cond, id_vit = _ids(B, 1)
    torch.testing.assert_close(
        _run(other, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit),
        _run(model, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit),
        rtol=0, atol=1e-6,
    )


def test_no_router_mixes_identities_uniformly(model):
    flat = _model(use_router=False)
    flat.load_state_dict(model.state_dict())
    id_cond, id_vit = _ids(B, 2)
    same = torch.cat([id_cond[:, :1]] * 2, dim=1), [torch.cat([v[:, :1]] * 2, dim=1) for v in id_vit]
    # two copies of one identity at weight 1/2 each = that identity alone
    torch.testing.assert_close(
        _run(flat, **_inputs(), id_cond=same[0], id_vit_hidden=same[1]),
        _run(flat, **_inputs(), id_cond=id_cond[:, :1], id_vit_hidden=[v[:, :1] for v in id_vit]),
        rtol=0, atol=1e-5,
    )


def test_routing_loss_returned_and_matches_manual_cross_entropy(model):
    id_cond, id_vit = _ids(B, 2)
    g = torch.Generator().manual_seed(3)
    index_mask = torch.randint(-1, 2, (B, TOKENS), generator=g)
    index_mask[1] = -1  # sample 1 has no labelled token: contributes 0
    with torch.no_grad():
        out = model(**_inputs(), id_cond=id_cond, id_vit_hidden=id_vit, index_mask=index_mask, return_routing_logits=True)
    assert len(out.routing_logits) == 4
    per_point = [F.cross_entropy(z[0], index_mask[0], ignore_index=-1) for z in out.routing_logits]
    expected = torch.stack(per_point).mean() / B
    torch.testing.assert_close(out.routing_loss, expected, rtol=1e-5, atol=1e-6)
    sample, loss = model(**_inputs(), id_cond=id_cond, id_vit_hidden=id_vit, index_mask=index_mask, return_dict=False)
    torch.testing.assert_close(loss, out.routing_loss)


def test_mse_routing_loss_and_label_validation():
    logits = [torch.tensor([[[4.0, -4.0], [0.0, 0.0]]])]
    mask = torch.tensor([[0, 1]])
    id_mask = torch.ones(1, 2, dtype=torch.bool)
    p = torch.softmax(torch.tensor([4.0, -4.0]), 0)
    expected = (((p - torch.tensor([1.0, 0.0])) ** 2).sum() + 0.5) / 2
    torch.testing.assert_close(routing_loss(logits, mask, id_mask, kind="mse"), expected)
    with pytest.raises(ValueError, match="index_mask labels must be -1 or <"):
        routing_loss(logits, torch.tensor([[0, 2]]), id_mask)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = _model()
        model.train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        id_cond, id_vit = _ids(B, 2)
        index_mask = torch.randint(-1, 2, (B, TOKENS), generator=torch.Generator().manual_seed(5))
        out = model(**_inputs(), id_cond=id_cond, id_vit_hidden=id_vit, index_mask=index_mask)
        (out.sample.square().mean() + out.routing_loss).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("router" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


def test_save_and_load_pretrained_roundtrip(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = IngredientsTransformer3DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.cross_attn_interval == 1 and loaded.config.id_embed_dim == 160
    id_cond, id_vit = _ids(B, 2)
    torch.testing.assert_close(
        _run(loaded, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit),
        _run(model, **_inputs(), id_cond=id_cond, id_vit_hidden=id_vit),
        rtol=0, atol=0,
    )


def test_bad_identity_inputs_are_named(model):
    id_cond, id_vit = _ids(B, 2)
    with pytest.raises(ValueError, match="id_embed_dim=160"):
        model(**_inputs(), id_cond=id_cond[..., :100], id_vit_hidden=id_vit)
    with pytest.raises(ValueError, match="num_vit_scales=5"):
        model(**_inputs(), id_cond=id_cond, id_vit_hidden=id_vit[:4])
    with pytest.raises(ValueError, match="empty list"):
        model(**_inputs(), id_cond=[], id_vit_hidden=[])


@pytest.mark.parametrize("k", [1, 2])
def test_folded_injection_equals_per_identity_attention(model, k):
    """The algebraic folding of to_q/to_out into the ID tokens computes the plain attention mix."""
    injector = model.perceiver_cross_attention[0]
    g = torch.Generator().manual_seed(9)
    tokens = torch.randn(B, k, 8, 64, generator=g)
    hidden = torch.randn(B, 40, 96, generator=g)
    weights = torch.softmax(torch.randn(B, 40, k, generator=g), dim=-1)
    with torch.no_grad():
        plain = injector.to_out(torch.einsum("bkni,bnk->bni", injector.attend(tokens, hidden), weights))
        folded = injector.folded_mix(tokens, hidden, weights)
    torch.testing.assert_close(folded, plain, rtol=0, atol=1e-5)


def test_from_backbone_keeps_cogvideox_weights_and_adds_identity_modules(tmp_path):
    import inspect

    from diffusers import CogVideoXTransformer3DModel

    names = set(inspect.signature(CogVideoXTransformer3DModel.__init__).parameters)
    config = tiny_transformer_config()
    torch.manual_seed(1)
    backbone = CogVideoXTransformer3DModel(**{k: v for k, v in config.items() if k in names}).eval()
    backbone.save_pretrained(tmp_path)
    model = IngredientsTransformer3DModel.from_backbone(tmp_path, **{k: v for k, v in config.items() if k not in names}).eval()
    inputs = _inputs()
    # without identities the model is exactly the backbone it was built from
    torch.testing.assert_close(_run(model, **inputs), backbone(**inputs).sample.detach(), rtol=0, atol=1e-6)
    assert len(model.router) == 4 and model.config.id_embed_dim == 160


def test_identity_path_has_static_shapes_under_fake_tensors(model):
    """encode_identities and the forward with a mixed-K mask run under FakeTensorMode: no shape depends
    on the mask's values (boolean indexing raised DynamicOutputShapeException here)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        id_cond = torch.randn(B, 3, 160)
        id_vit = [torch.randn(B, 3, 65, 64) for _ in range(5)]
        id_mask = torch.tensor([[True, False, False], [True, True, True]])
        ids = model.encode_identities(id_cond, id_vit, id_mask)
        out = model(**_inputs(), identities=ids)
    assert ids.tokens.shape == (B, 3, model.config.num_queries, model.config.id_token_dim)
    assert out.sample.shape == (B, FRAMES, 4, H, W)


def test_padded_identity_slots_give_zero_tokens_even_with_nan_padding(model):
    id_cond, id_vit = _ids(B, 3)
    id_mask = torch.tensor([[True, False, False], [True, True, False]])
    id_cond[~id_mask] = float("nan")
    for v in id_vit:
        v[~id_mask] = float("nan")
    with torch.no_grad():
        ids = model.encode_identities(id_cond, id_vit, id_mask)
        alone = model.encode_identities(id_cond[1:, :2], [v[1:, :2] for v in id_vit])
    assert torch.isfinite(ids.tokens).all()
    assert (ids.tokens[~id_mask] == 0).all() and (ids.tokens[id_mask].abs().sum(-1) > 0).all()
    torch.testing.assert_close(ids.tokens[1:, :2], alone.tokens, rtol=0, atol=1e-6)


def test_gradient_checkpointing_recomputes_the_identity_injections():
    """Each injection runs inside its block's checkpoint: its forward runs again in the backward
    (so its activations are not kept), and the gradients are those of the plain run."""
    calls = {"n": 0}

    def count(*_args):
        calls["n"] += 1

    grads, forward_calls = [], []
    for checkpointing in (False, True):
        model = _model(cross_attn_interval=2)
        model.train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        handles = [m.norm2.register_forward_hook(count) for m in model.perceiver_cross_attention]
        id_cond, id_vit = _ids(B, 2)
        index_mask = torch.randint(-1, 2, (B, TOKENS), generator=torch.Generator().manual_seed(5))
        out = model(**_inputs(), id_cond=id_cond, id_vit_hidden=id_vit, index_mask=index_mask)
        before = calls["n"]
        (out.sample.square().mean() + out.routing_loss).backward()
        forward_calls.append((before, calls["n"] - before))
        calls["n"] = 0
        for h in handles:
            h.remove()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    points = len(model.perceiver_cross_attention)
    assert forward_calls[0] == (points, 0)  # plain: one forward per injection point, none in the backward
    assert forward_calls[1] == (points, points)  # checkpointed: each injection recomputed once
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


def _compile_inputs():
    id_cond, id_vit = _ids(B, 3)
    id_mask = torch.tensor([[True, False, False], [True, True, True]])
    return dict(**_inputs(), id_cond=id_cond, id_vit_hidden=id_vit, id_mask=id_mask, return_routing_logits=True)


def _check_compiled(model, backend: str):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)  # fullgraph: any graph break raises
    with torch.no_grad():
        eager = model(**_compile_inputs())
        out = compiled(**_compile_inputs())
    torch.testing.assert_close(out.sample, eager.sample, rtol=1e-4, atol=1e-5)
    assert len(out.routing_logits) == len(eager.routing_logits) == len(model.router)
    for z, ref in zip(out.routing_logits, eager.routing_logits):
        torch.testing.assert_close(z, ref, rtol=1e-4, atol=1e-5)


def test_fullgraph_compile_with_identities_has_no_graph_break(model):
    """Dynamo captures the whole forward, identity encoding (mixed-K mask) and routing included, in one
    graph; the `eager` backend runs that graph (seconds), inductor is the slow test below."""
    _check_compiled(model, "eager")


@pytest.mark.slow  # inductor compiles C++ kernels: 5 minutes on 2 loaded cores
def test_fullgraph_inductor_compile_equals_eager(model):
    _check_compiled(model, "inductor")
