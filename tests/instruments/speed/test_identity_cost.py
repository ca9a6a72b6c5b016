"""Identity cost per forward against the bare CogVideoX backbone (pytest-benchmark).

Default suite: the reduced size, run once (benchmarks disabled) so the code cannot rot.
Slow: `test_identity_cost_ratio_full_width` holds issue 2's goal (identity modules <= 1.09x the bare
backbone at the full-width size), `.venv/bin/python -m pytest tests/instruments/speed/test_identity_cost.py -m slow -k ratio -s`.
Measure: `.venv/bin/python -m pytest tests/instruments/speed/test_identity_cost.py -m slow --benchmark-enable`
or `python -m instruments.speed.identity_cost identity-cost --size full` (numbers in docs/measurements.md).
"""

from __future__ import annotations

import logging
import os
import statistics

import pytest
import torch

from instruments.speed.identity_cost import SIZES, build_models, identity_cost_callables, make_inputs, time_interleaved

logger = logging.getLogger(__name__)


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


# issue 2's goal for one forward with precomputed ID tokens (the sampling path), against the bare backbone
MAX_RATIO = 1.09


@pytest.mark.slow
def test_identity_cost_ratio_full_width():
    """At issue 2's size (full width, 2 layers, 1,650 video tokens, K = 2, float32, 2 threads) one
    forward with the identity modules costs <= 1.09x the bare transformer.

    Rounds are interleaved (bare, ours) after a warm-up; each round's ratio compares two adjacent
    forwards, so load drift hits both alike, and the median of the rounds' ratios is held to the goal
    (docs/measurements.md: 1.054x idle). Minutes on 2 cores.
    """
    torch.set_num_threads(2)
    size = SIZES["full"]
    bare, ours = build_models(size)
    fns = identity_cost_callables(bare, ours, make_inputs(size, ours))
    times = time_interleaved({"bare": fns["bare"], "ours": fns["ours_precomputed"]}, rounds=5, warmup=1)
    ratios = [o / b for o, b in zip(times["ours"], times["bare"])]
    ratio = statistics.median(ratios)
    report = (
        f"identity cost at full width: median ratio {ratio:.3f} (per round {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"bare median {statistics.median(times['bare']):.2f} s, ours {statistics.median(times['ours']):.2f} s; "
        f"load average {os.getloadavg()[0]:.2f})"
    )
    logger.warning("%s", report)  # the measurement: shown in the test's output (pytest -m slow -rA)
    assert ratio <= MAX_RATIO, report


# The documented measurement commands (docs/measurements.md), test-sized: the CLI's main in this process
# (tests/command_record.py records its command line; tests/test_documented_commands.py checks the form).


def test_the_documented_measurement_cli_writes_its_json(tmp_path, capsys):
    """`identity-cost --size full --rounds 5` / `... --rounds 3 --out identity_cost.json`, at the reduced
    size and one round: the JSON holds every forward's median and the ratios."""
    import json

    from instruments.speed.identity_cost import main

    threads = torch.get_num_threads()
    try:
        main(["identity-cost", "--size", "reduced", "--rounds", "1", "--warmup", "0",
                             "--out", str(tmp_path / "identity_cost.json")])
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "identity_cost.json").read_text())
    assert result["size"] == "reduced" and result["rounds"] == 1
    assert set(result["seconds"]) == {"bare", "ours_precomputed", "ours_with_projector"}
    assert result["ratio_precomputed_vs_bare"] == pytest.approx(result["seconds"]["ours_precomputed"] / result["seconds"]["bare"])
    assert json.loads(capsys.readouterr().out) == result


# slow: inductor compiles six forwards (minutes on 2 cores); the fullgraph compile itself is in the
# default suite (tests/models/test_transformer.py, eager backend)
@pytest.mark.slow
def test_the_documented_compile_measurement_cli(tmp_path):
    """`identity-cost --size reduced --rounds 7 --compile --out compile.json`, one round: compiled
    forwards timed beside the eager ones, with their ratios."""
    import json

    from instruments.speed.identity_cost import main

    threads = torch.get_num_threads()
    try:
        main(["identity-cost", "--size", "reduced", "--rounds", "1", "--warmup", "1", "--compile",
                             "--out", str(tmp_path / "compile.json")])
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "compile.json").read_text())
    for name in ("bare", "ours_precomputed", "ours_with_projector"):
        assert result[f"ratio_compiled_vs_eager_{name}"] > 0
