"""Peak memory of one phase: CUDA allocator peaks on GPU, peak resident set size (VmHWM) on CPU.

On Linux the process's RSS high-water mark is reset by writing "5" to /proc/self/clear_refs, so one
process can measure several models one after another; where that is not possible the CPU number is
the process-lifetime peak, and the result says so.
"""

from __future__ import annotations

import logging
import re
import resource
import sys
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm_bytes() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def reset_peak_memory(device: torch.device | str) -> bool:
    """Start a new measurement phase; False where only the process-lifetime peak can be read (CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        _CLEAR_REFS.write_text("5")
    except OSError as err:
        logger.warning("cannot reset the peak RSS (%s: %s); CPU peaks are process-lifetime peaks", _CLEAR_REFS, err)
        return False
    return _vm_hwm_bytes() is not None


def peak_memory(device: torch.device | str, since_reset: bool = True) -> dict[str, int | str]:
    """The peak since `reset_peak_memory(device)` (or of the process, `since_reset=False` on CPU), in bytes."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return {
            "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "max_memory_reserved_bytes": torch.cuda.max_memory_reserved(device),
            "scope": "since_reset",
        }
    hwm = _vm_hwm_bytes()
    if hwm is not None:
        return {"peak_rss_bytes": hwm, "scope": "since_reset" if since_reset else "process_lifetime"}
    # ru_maxrss is in kB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"peak_rss_bytes": rss, "scope": "process_lifetime"}


def peak_bytes(record: dict[str, int | str]) -> int:
    """The headline number of a `peak_memory` record: allocated on GPU, RSS on CPU."""
    for key in ("max_memory_allocated_bytes", "peak_rss_bytes"):
        if key in record:
            return int(record[key])
    raise KeyError(f"not a peak_memory record (no allocated or RSS peak): {record}")
