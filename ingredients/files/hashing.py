"""Content hashes for cache keys and provenance (one implementation for every stage)."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _named_digest(path: str, size: int, mtime_ns: int) -> str:
    return f"{Path(path).name}:{file_sha256(path)}"


def model_file_digests(files: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """{role: "file name:sha256"} of a backend's model files (its identity in cache keys); each file
    is hashed once per process unless it changes (size or modification time)."""
    out = {}
    for role, path in sorted(files.items()):
        stat = os.stat(path)
        out[role] = _named_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    return out
