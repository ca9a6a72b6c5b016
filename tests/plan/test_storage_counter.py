"""The live-storage counter on modules and ops whose bytes are known by hand."""

from __future__ import annotations

import torch
from torch import nn

from ingredients.plan.fake_run import FakeRun, build_on_meta


def test_linear_weights_and_forward_bytes_by_hand():
    layer = build_on_meta(nn.Linear, 10, 20)
    with FakeRun() as run:
        run.materialise(layer)
        assert run.memory.live == (20 * 10 + 20) * 4  # fp32 weight + bias
        with run.phase() as p:
            x = torch.empty(3, 10)
            y = layer(x)
        assert p.end_bytes == 3 * 10 * 4 + 3 * 20 * 4
        assert p.flops == 2 * 3 * 10 * 20  # addmm: 2 m n k
        del x, y
        assert run.memory.live == (20 * 10 + 20) * 4  # freed storages leave the count


def test_views_and_in_place_ops_cost_nothing_and_temporaries_show_in_the_peak():
    with FakeRun() as run:
        a = torch.empty(1000)
        base = run.memory.live
        with run.phase() as p:
            a.view(10, 100).mul_(2)
            b = (a * 2) * 3  # the intermediate a * 2 dies after the second multiply
        assert base == 4000
        assert p.end_bytes == 4000  # only b stays
        assert p.peak_bytes == 8000  # a * 2 and b alive together for one op
        del b


def test_frozen_bf16_parameters_are_counted_at_their_dtype():
    """MemTracker refuses frozen parameters; the counter counts them like any storage."""
    model = build_on_meta(nn.Sequential, nn.Linear(64, 64), nn.Linear(64, 64)).to(torch.bfloat16)
    model.requires_grad_(False)
    with FakeRun() as run:
        run.materialise(model)
        assert run.memory.live == 2 * (64 * 64 + 64) * 2


def test_set_aside_bytes_leave_the_other_peak_until_they_die():
    with FakeRun() as run:
        with run.phase() as p:
            grad = torch.empty(100)  # 400 bytes, set aside (as the plan does with gradients)
            run.memory.set_aside(grad)
            act = torch.empty(50)  # 200 bytes
            del act
        assert p.peak_bytes == 600 and p.peak_other_bytes == 200
        del grad
        assert run.memory.aside == 0 and run.memory.live == 0


def test_a_view_of_a_tensor_made_before_the_count_allocates_nothing():
    """A view (or in-place op) of an older tensor shares its storage: only new storages count (a view of the
    reference features made before a video counted them as new memory, 35 MB at K = 3)."""
    older = torch.zeros(1000)  # real, made before the counter
    with FakeRun() as run:
        with run.phase() as p:
            v = older[None]
            v.add_(1)
            w = older * 2  # a new storage
        assert p.peak_bytes == p.end_bytes == 1000 * 4
        del v, w
