"""Live tensor memory as a device allocator sees it: bytes of every storage alive, and the peak.

A `TorchDispatchMode` sees every op's outputs; each new untyped storage is counted once and a weakref
finalizer subtracts it when it dies, so views, in-place ops and aliases cost nothing and freed
activations leave the count. Works on fake and meta tensors (no memory is touched), unlike
`torch.distributed._tools.mem_tracker.MemTracker`, which hooks every parameter's gradient and
refuses frozen parameters. Storages made before the mode was entered are not counted (`track`
adds them).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_iter


class LiveStorageCounter(TorchDispatchMode):
    """`live` and `peak` bytes of the storages created while the mode is on (or passed to `track`).

    `reset_peak()` sets the peak to the current live bytes (to measure one phase). `set_aside(t)` takes a
    live tensor out of `peak_other` (the peak of the bytes not set aside), e.g. gradients as backward makes
    them, so the activations' own peak is known whatever share of the gradients exists at that moment.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.aside = 0
        self.peak_other = 0
        self._seen: dict[int, int] = {}  # id of a live storage -> its bytes
        self._aside: set[int] = set()
        self._last: tuple[int, int] = (-1, 0)

    def track(self, *tensors: torch.Tensor) -> None:
        """Count tensors that already exist (e.g. made outside the mode)."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._add(t)

    def reset_peak(self) -> None:
        self.peak = self.live
        self.peak_other = self.live - self.aside

    def set_aside(self, t: torch.Tensor) -> None:
        """Count `t`'s storage (already live) as set aside until it dies."""
        key = id(t.untyped_storage())
        if key in self._seen and key not in self._aside:
            self._aside.add(key)
            self.aside += self._seen[key]
            if self._last[0] == key:  # made by the last op: it never counted among the others
                self.peak_other = max(self._last[1], self.live - self.aside)

    def _add(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
        except (NotImplementedError, RuntimeError):  # e.g. sparse or storage-less tensors
            return
        key = id(storage)
        if key in self._seen:
            return
        nbytes = storage.nbytes()
        self._seen[key] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        self._last = (key, self.peak_other)  # set_aside right after creation undoes this storage's share
        self.peak_other = max(self.peak_other, self.live - self.aside)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        nbytes = self._seen.pop(key, 0)
        self.live -= nbytes
        if key in self._aside:
            self._aside.discard(key)
            self.aside -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # an output sharing an input's storage (a view, an in-place op) allocates nothing: counted, if at
        # all, when that storage was made (a view of a tensor made before the mode is not new memory)
        inputs = {_storage_key(t) for t in tree_iter((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_iter(out):
            if isinstance(t, torch.Tensor) and _storage_key(t) not in inputs:
                self._add(t)
        return out


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return id(t.untyped_storage())
    except (NotImplementedError, RuntimeError):
        return None
