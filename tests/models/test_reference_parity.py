"""The port reproduces the authors' implementation on the parity fixture (float32, CPU)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ingredients.models import from_reference

CASES = ("b1_mask", "b1_nomask", "b2_nomask")


@pytest.fixture(scope="module")
def model(parity_dir, parity_config):
    return from_reference(parity_config, load_file(str(parity_dir / "transformer.safetensors")))


@pytest.fixture(scope="module")
def cases(parity_dir):
    return load_file(str(parity_dir / "cases.safetensors"))


def _run(model, cases, case, **kwargs):
    get = lambda name: cases[f"{case}.{name}"]  # noqa: E731
    id_cond = [get(f"id_cond.{k}") for k in range(2)]
    id_vit = [[get(f"id_vit_hidden.{k}.{s}") for s in range(5)] for k in range(2)]
    with torch.no_grad():
        return model(
            hidden_states=get("hidden_states"),
            encoder_hidden_states=get("encoder_hidden_states"),
            timestep=get("timestep"),
            image_rotary_emb=(cases["rotary_cos"], cases["rotary_sin"]),
            id_cond=id_cond,
            id_vit_hidden=id_vit,
            index_mask=cases.get(f"{case}.index_mask"),
            return_dict=False,
            **kwargs,
        )


def _tol(expected: torch.Tensor) -> float:
    return 1e-4 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("case", ["b1_mask", "b1_nomask"])
def test_batch1_cases_match_reference(model, cases, case):
    out = _run(model, cases, case, return_routing_logits=True)
    expected = cases[f"{case}.expected.sample"]
    torch.testing.assert_close(out[0], expected, rtol=0, atol=_tol(expected))
    logits = out[-1]
    assert len(logits) == 2
    for n, z in enumerate(logits):
        exp = cases[f"{case}.expected.routing_logits.{n}"][0]  # the reference's one-element list, stacked
        torch.testing.assert_close(z, exp, rtol=0, atol=_tol(exp))
    if case == "b1_mask":
        exp_loss = cases["b1_mask.expected.routing_loss"]
        torch.testing.assert_close(out[1].reshape(1), exp_loss, rtol=0, atol=_tol(exp_loss))


def test_reference_call_signature_returns_tuples(model, cases):
    assert len(_run(model, cases, "b1_nomask")) == 1
    sample, loss = _run(model, cases, "b1_mask")
    assert sample.shape == (1, 3, 4, 8, 8) and loss.ndim == 0


def test_batch2_matches_reference_under_reference_batch_switch(model, cases):
    expected = cases["b2_nomask.expected.sample"]
    (sample,) = _run(model, cases, "b2_nomask", reference_batch_semantics=True)
    torch.testing.assert_close(sample, expected, rtol=0, atol=_tol(expected))


def test_batch2_per_sample_routing_differs_only_for_sample1(model, cases):
    expected = cases["b2_nomask.expected.sample"]
    (sample,) = _run(model, cases, "b2_nomask")
    torch.testing.assert_close(sample[0], expected[0], rtol=0, atol=_tol(expected))
    # sample 1 gets its own routing and features: far outside the parity tolerance
    assert (sample[1] - expected[1]).abs().max().item() > 100 * _tol(expected)


def test_identity_path_matters(model, cases):
    """Dropping the identities moves the output far beyond tolerance, so parity above is not vacuous."""
    get = lambda name: cases[f"b1_nomask.{name}"]  # noqa: E731
    with torch.no_grad():
        bare = model(
            hidden_states=get("hidden_states"),
            encoder_hidden_states=get("encoder_hidden_states"),
            timestep=get("timestep"),
            image_rotary_emb=(cases["rotary_cos"], cases["rotary_sin"]),
        ).sample
    expected = get("expected.sample")
    assert (bare - expected).norm() / expected.norm() > 0.1


def test_swapping_identities_leaves_output_unchanged(model, cases):
    base = _run(model, cases, "b1_nomask")[0]
    swapped = dict(cases)
    names = ["id_cond.{}"] + [f"id_vit_hidden.{{}}.{s}" for s in range(5)]
    for name in names:
        key0, key1 = f"b1_nomask.{name.format(0)}", f"b1_nomask.{name.format(1)}"
        swapped[key0], swapped[key1] = cases[key1], cases[key0]
    out = _run(model, swapped, "b1_nomask")[0]
    torch.testing.assert_close(out, base, rtol=0, atol=_tol(base))
