"""FLOPs of attention from its shapes: the CPU flash SDPA kernel counts 4 B H N^2 d forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ingredients.plan.fake_run import FakeRun
from ingredients.plan.flop_count import FlopCounter, attention_forward_flops


def test_attention_forward_is_4_n2_d_per_head():
    b, h, n, d = 2, 3, 64, 16
    with FakeRun() as run:
        q, k, v = (torch.empty(b, h, n, d) for _ in range(3))
        with run.phase() as p:
            F.scaled_dot_product_attention(q, k, v)
    assert p.flops_by_op == {"_scaled_dot_product_flash_attention_for_cpu": 4 * b * h * n * n * d}
    assert p.flops == attention_forward_flops(b, h, n, n, d) == 4 * b * h * n * n * d


def test_attention_backward_counts_five_matmuls_and_real_cpu_attention_too():
    b, h, n, d = 1, 2, 32, 8
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
    with FlopCounter() as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    assert counter.total == 4 * b * h * n * n * d + 10 * b * h * n * n * d
    # torch's own counter now sees the CPU kernel too (it counted 0 before the formula was registered)
    with FlopCounterMode(display=False) as torch_counter:
        F.scaled_dot_product_attention(q, k, v)
    assert torch_counter.get_total_flops() == 4 * b * h * n * n * d
