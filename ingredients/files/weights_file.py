"""Reading weight and state files without running code from them.

A `.safetensors` file holds tensors only. Anything else is read with `torch.load(weights_only=True)`,
whose unpickler only rebuilds tensors and plain containers: a pickle that names any other Python
object (the way a malicious checkpoint runs code) is refused with an error naming the file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch


class UnsafeWeightsError(ValueError):
    """A weights file holds pickled Python objects beyond tensors and plain containers."""


def read_weights(path: str | os.PathLike) -> Any:
    """The content of a safetensors or torch file, on CPU; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error type for corrupt headers
            raise ValueError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line for line in str(exc).splitlines() if "GLOBAL" in line]  # names the refused object
        reason = lines[0].strip() if lines else type(exc).__name__
        raise UnsafeWeightsError(
            f"refused to load {path}: it pickles Python objects beyond tensors and plain containers, which "
            f"can run code when loaded ({reason}). Re-save trusted weights as a plain state dict or as "
            "safetensors."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a readable torch file ({type(exc).__name__}: {exc})") from exc
