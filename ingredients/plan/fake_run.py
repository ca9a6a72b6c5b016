"""One fake run: modules built on the meta device, materialised as fake tensors, run with no arithmetic.

`FakeRun` materialises modules as fake CPU tensors (shapes and dtypes only) and stacks the live-storage
counter and the FLOP counter. FakeTensorMode itself is entered only to materialise: any op on a fake
tensor is run fake by the fake tensor itself, while code that works on real tensors (the dataset, the
collate function, per-sample random draws, the identity shuffle) runs as it does in training. So the
trainer's and the pipeline's own code runs unchanged: real data in, fake model out. Tensors are fake
CPU tensors: CPU SDPA takes its flash kernel, which keeps only the output and the log-sum-exp, as GPU
flash / memory-efficient kernels do (fake "cuda" tensors would take the math path and hold an N x N
matrix no GPU kernel holds). Inside a run, `Module.to` / `.float()` etc. on a fake module replace the
parameters' data in place (torch's own tensor swap refuses fake tensors: it keeps weak references to
every one of them).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, is_fake
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
        if func is torch.ops.aten._local_scalar_dense.default and is_fake(args[0]):
            t = args[0]
            return False if t.dtype == torch.bool else 1 if not t.is_floating_point() else 1.0
        return func(*args, **(kwargs or {}))


_module_apply = nn.Module._apply


def _apply_to_fake(module: nn.Module, fn, recurse: bool = True):
    """`nn.Module._apply` for modules holding fake tensors: each parameter's data (and gradient) is
    replaced in place, each buffer reassigned; other modules go through torch's own `_apply`."""
    own = [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None]
    if not any(isinstance(t, FakeTensor) for t in own):
        if recurse:
            for child in module.children():
                child._apply(fn)
        return _module_apply(module, fn, recurse=False)
    if recurse:
        for child in module.children():
            child._apply(fn)
    with torch.no_grad():
        for param in module._parameters.values():
            if param is None:
                continue
            applied = fn(param)
            if applied is not param:
                param.data = applied
            if param.grad is not None:
                grad = fn(param.grad)
                if grad is not param.grad:
                    param.grad.data = grad
        for key, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[key] = fn(buffer)
    return module


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
        nn.Module._apply = _apply_to_fake
        self.callback(setattr, nn.Module, "_apply", _module_apply)
        self.enter_context(ZeroScalars())
        self.enter_context(self.memory)
        self.enter_context(self.flops)
        return self

    def materialise(self, module: nn.Module) -> nn.Module:
        """Meta parameters and buffers -> fake CPU tensors (counted as live memory)."""
        with self.fake:
            return module.to_empty(device="cpu")

    def empty(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A fake tensor of `shape`."""
        with self.fake:
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
