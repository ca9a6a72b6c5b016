"""A compressed .npz holding one array [K, F, ...] written a block of frames at a time: memory is one
block whatever F (curation's per-clip masks), the file the one `np.savez_compressed` would write for
the whole array (same key, shape, dtype and bytes; `np.load` reads it), moved into place atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ingredients.files.atomic import atomic_path

_CHUNK = 1 << 20


class StreamedNpz:
    """`append` blocks [K, f, *rest] of one array (same K, rest and dtype), then `close()`: the .npz at
    `path` holds them concatenated along axis 1 under `key`. Each of the K rows spools to a temporary
    file beside `path` until then (removed on close or on error)."""

    def __init__(self, path: str | os.PathLike, key: str, rows: int, rest: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.key = Path(path), key
        self.rows, self.rest, self.dtype = rows, tuple(int(v) for v in rest), np.dtype(dtype)
        self.frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parts = [tempfile.TemporaryFile(dir=self.path.parent) for _ in range(rows)]

    def append(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=self.dtype)
        if block.ndim != 2 + len(self.rest) or block.shape[0] != self.rows or block.shape[2:] != self.rest:
            raise ValueError(f"block of shape {block.shape} does not continue [{self.rows}, F, {', '.join(map(str, self.rest))}]")
        for k in range(self.rows):
            self._parts[k].write(np.ascontiguousarray(block[k]).tobytes())
        self.frames += block.shape[1]

    def close(self) -> Path:
        """Write the .npz (atomically) and drop the spooled rows; returns its path."""
        shape = (self.rows, self.frames, *self.rest)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        try:
            with atomic_path(self.path, suffix=".tmp.npz") as tmp:
                with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf, \
                        zf.open(f"{self.key}.npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array_header_1_0(out, header)
                    for part in self._parts:
                        part.seek(0)
                        shutil.copyfileobj(part, out, _CHUNK)
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        for part in self._parts:
            part.close()
        self._parts = []
