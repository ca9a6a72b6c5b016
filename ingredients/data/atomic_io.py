"""Atomic file writes: write to a temp file in the target folder, then `os.replace`.

A reader (or a resumed run) never sees a half-written file: it sees the old file or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ingredients.atomic import atomic_path, write_text


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call `write(tmp_path)` on a temp file next to `path`, then move it into place."""
    with atomic_path(path, suffix=f".tmp{suffix}") as tmp:
        write(str(tmp))
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    write_text(path, text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_png_atomic(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB uint8 [H, W, 3] (or gray [H, W]) array as PNG."""
    return atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"), suffix=".png")


def write_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(path, _write, suffix=".npz")
