"""Identity cost per forward against the bare CogVideoX backbone (pytest-benchmark).

Default suite: the reduced size, run once (benchmarks disabled) so the code cannot rot.
Measure: `.venv/bin/python -m pytest tests/benchmarks/test_identity_cost.py -m slow --benchmark-enable`
or `python -m ingredients.speed.identity_cost identity-cost --size full` (numbers in docs/benchmarks.md).
"""

from __future__ import annotations

import pytest
import torch

from ingredients.speed.identity_cost import SIZES, build_models, identity_cost_callables, make_inputs, time_interleaved


def _measure(benchmark, size_name: str, rounds: int):
    torch.set_num_threads(2)
    size = SIZES[size_name]
    bare, ours = build_models(size)
    fns = identity_cost_callables(bare, ours, make_inputs(size, ours))
    # the three forwards compute what they should: same backbone, identities change the output,
    # and precomputed ID tokens give exactly the projector-in-the-loop result
    out_bare, out_pre, out_proj = (fns[n]() for n in ("bare", "ours_precomputed", "ours_with_projector"))
    torch.testing.assert_close(out_pre, out_proj, rtol=0, atol=0)
    assert (out_pre - out_bare).abs().mean() > 1e-4
    times = time_interleaved({"bare": fns["bare"], "ours_with_projector": fns["ours_with_projector"]}, rounds, warmup=0)
    benchmark.extra_info.update({name: min(t) for name, t in times.items()})
    result = benchmark.pedantic(fns["ours_precomputed"], rounds=rounds, iterations=1)
    assert result.shape == out_bare.shape
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # benchmarks enabled: report the ratios
        ours = stats.stats.min
        benchmark.extra_info["ratio_precomputed_vs_bare"] = ours / benchmark.extra_info["bare"]
        benchmark.extra_info["ratio_with_projector_vs_bare"] = benchmark.extra_info["ours_with_projector"] / benchmark.extra_info["bare"]


def test_identity_cost_reduced(benchmark):
    _measure(benchmark, "reduced", rounds=3)


@pytest.mark.slow
def test_identity_cost_full_width(benchmark):
    _measure(benchmark, "full", rounds=3)
