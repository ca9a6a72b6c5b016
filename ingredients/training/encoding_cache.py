"""Content-addressed cache of encoded training clips (safetensors, one file per clip, atomic).

The key is the sha256 of the encoder's identity (VAE and text-encoder weight fingerprints, the face
stack's identity, sizes, dtype), the decoded frame tensor, the caption and the reference photos'
bytes. Changing any model, setting or input gives a new key, so stale entries are never read.
Entries are the deterministic encodings only: the clean canvas, never a noise-augmented one (training
encodes that per step, see `ClipEncoder.encode`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ingredients.files.atomic import atomic_path

from ingredients.training.clip_encoding import EncodedClip, frames_digest, reference_digests

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: entries hold the clean canvas pixels (for per-step image noise)


class EncodingCache:
    """`<folder>/<key[:2]>/<key>.safetensors`; metadata holds the version and the identity digest."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(identity: dict, frames: torch.Tensor, prompt: str, reference_paths: Sequence[str]) -> str:
        payload = {
            "version": CACHE_VERSION,
            "identity": identity,
            "frames": frames_digest(frames),
            "prompt": prompt,
            "references": reference_digests(reference_paths),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> EncodedClip | None:
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            tensors = load_file(str(path))
            clip = EncodedClip.from_tensors(tensors)
        except (OSError, SafetensorError, KeyError, ValueError) as e:
            logger.warning("ignoring unreadable cache entry %s (%s); it will be rewritten", path, e)
            self.misses += 1
            return None
        self.hits += 1
        return clip

    def put(self, key: str, clip: EncodedClip) -> Path:
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(clip.to_tensors(), str(tmp), metadata={"version": str(CACHE_VERSION), "key": key})
        return path
