"""FLOPs of every op a step runs, from shapes (torch's formula registry), attention included.

`torch.utils.flop_counter.FlopCounterMode` has no formula for the CPU flash SDPA kernel
(`_scaled_dot_product_flash_attention_for_cpu` and its backward), so a CPU count misses attention (about
half of a full-size forward). This module registers torch's own SDPA formulas for that kernel: forward
two matmuls (Q K^T and P V: 4 B H N^2 d), backward five (recomputed scores included: 10 B H N^2 d), as
for the CUDA flash kernels. `FlopCounter` is a light dispatch mode over the same registry: no module
tracking, so it keeps no tensor alive (FlopCounterMode's module tracker held ~15 GiB of fake
activations of an 8-layer 5B backbone past the backward, which spoils a memory count taken with it).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten
CPU_FLASH_FORWARD = aten._scaled_dot_product_flash_attention_for_cpu
CPU_FLASH_BACKWARD = aten._scaled_dot_product_flash_attention_for_cpu_backward


def _register_cpu_flash() -> None:
    if CPU_FLASH_FORWARD in flop_registry:  # registered once per process
        return

    @register_flop_formula(CPU_FLASH_FORWARD)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(CPU_FLASH_BACKWARD)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_flash()


def attention_forward_flops(batch: int, heads: int, queries: int, keys: int, head_dim: int) -> int:
    """FLOPs of one attention forward (Q K^T and P V): 4 B H Nq Nk d."""
    return 4 * batch * heads * queries * keys * head_dim


class FlopCounter(TorchDispatchMode):
    """Total FLOPs (`total`) and FLOPs per op (`by_op`, e.g. to see attention's share) of the ops run
    while the mode is on; ops without a formula (elementwise, norms) count 0, as in torch."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.by_op[str(packet).removeprefix("aten.")] += int(flop_registry[packet](*args, **kwargs, out_val=out))
        return out
