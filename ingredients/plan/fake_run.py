"""One fake run: modules built on the meta device, materialised as fake tensors, run with no arithmetic.

`FakeRun` stacks FakeTensorMode (shapes and dtypes only), the live-storage counter and the FLOP
counter. Tensors are fake CPU tensors: CPU SDPA takes its flash kernel, which keeps only the output
and the log-sum-exp, as GPU flash / memory-efficient kernels do (fake "cuda" tensors would take the
math path and hold an N x N matrix no GPU kernel holds). Dtypes are chosen on the meta device before
`to_empty` (a fake module cannot be cast in place: swapping fake parameters fails).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from ingredients.plan.flop_count import FlopCounter
from ingredients.plan.storage_counter import LiveStorageCounter

GIB = float(2**30)


class ZeroScalars(TorchDispatchMode):
    """A fake tensor has no values: reading one as a Python value gives False for a bool and 1 for a
    number here instead of raising. In a step those reads are input checks (the routing loss's label
    check: False, so it passes) and the optimizer's step count (1: Adam divides by 1 - beta^step);
    no shape depends on them once the model's shapes are static."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            t = args[0]
            return False if t.dtype == torch.bool else 1 if not t.is_floating_point() else 1.0
        return func(*args, **(kwargs or {}))


def build_on_meta(factory, *args, **kwargs) -> nn.Module:
    """`factory(*args, **kwargs)` with every parameter on the meta device (no memory, seconds at 5B)."""
    with torch.device("meta"):
        return factory(*args, **kwargs)


class FakeRun(contextlib.ExitStack):
    """`with FakeRun() as run:` materialise modules (`run.materialise`), make inputs (`run.empty`),
    run them; `run.memory` counts live bytes and the peak, `run.flops` counts FLOPs."""

    def __init__(self) -> None:
        super().__init__()
        self.fake = FakeTensorMode(allow_non_fake_inputs=True)
        self.memory = LiveStorageCounter()
        self.flops = FlopCounter()

    def __enter__(self) -> "FakeRun":
        super().__enter__()
        self.enter_context(self.fake)
        self.enter_context(ZeroScalars())
        self.enter_context(self.memory)
        self.enter_context(self.flops)
        return self

    def materialise(self, module: nn.Module) -> nn.Module:
        """Meta parameters and buffers -> fake CPU tensors (counted as live memory)."""
        return module.to_empty(device="cpu")

    @staticmethod
    def empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.empty(*shape, dtype=dtype)

    def phase(self) -> "Phase":
        """Measure one phase: `with run.phase() as p:` ... then p.peak_bytes (over the live bytes at
        its start), p.peak_other_bytes (the same for the bytes not set aside), p.flops, p.end_bytes
        (left live at its end, over the start)."""
        return Phase(self)


class Phase:
    def __init__(self, run: FakeRun) -> None:
        self.run = run
        self.start_bytes = 0
        self.peak_bytes = 0
        self.peak_other_bytes = 0
        self.end_bytes = 0
        self.flops = 0
        self.flops_by_op: dict[str, int] = {}

    def __enter__(self) -> "Phase":
        self.start_bytes = self.run.memory.live
        self._aside0 = self.run.memory.aside
        self.run.memory.reset_peak()
        self._flops0 = dict(self.run.flops.by_op)
        return self

    def __exit__(self, *exc) -> None:
        m = self.run.memory
        self.peak_bytes = m.peak - self.start_bytes
        self.peak_other_bytes = m.peak_other - (self.start_bytes - self._aside0)
        self.end_bytes = m.live - self.start_bytes
        self.flops_by_op = {k: v - self._flops0.get(k, 0) for k, v in self.run.flops.by_op.items()
                            if v - self._flops0.get(k, 0)}
        self.flops = sum(self.flops_by_op.values())
