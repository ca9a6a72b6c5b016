"""Per-step metrics as a CSV file (a DVC plots file), rewritten atomically, resumable."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import torch

from ingredients.files.atomic import write_text
from ingredients.peak_memory import peak_bytes, peak_memory


class MetricsFile:
    """Rows with a `step` column; `flush` rewrites the whole file atomically (readers never see a
    partial row). Empty cells mean "not measured" (e.g. routing loss of a model without router)."""

    def __init__(self, path: str | os.PathLike, columns: list[str]) -> None:
        if "step" not in columns:
            raise ValueError(f"metrics columns must include 'step', got {columns}")
        self.path = Path(path)
        self.columns = list(columns)
        self.rows: list[dict[str, Any]] = []

    def resume(self, up_to_step: int) -> None:
        """Keep the rows already written up to `up_to_step` (a resumed run rewrites the rest)."""
        if not self.path.is_file():
            self.rows = []
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= up_to_step]

    def append(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"{self.path.name}: unknown metric columns {sorted(unknown)}; known: {self.columns}")
        self.rows.append(row)

    def flush(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _cell(row.get(k)) for k in self.columns})
        write_text(self.path, buf.getvalue())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far (MiB): CUDA max allocated on a GPU, the process's own peak RSS (VmHWM, which
    unlike ru_maxrss does not inherit a large parent's RSS) on CPU."""
    return peak_bytes(peak_memory(device, since_reset=False)) / 2**20
