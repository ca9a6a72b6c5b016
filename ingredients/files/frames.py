"""Video frames as pictures: float frames to uint8, and a strip of frames side by side."""

from __future__ import annotations

import numpy as np


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Frames with values in [0, 1] (a pipeline's 'np' output) -> uint8, rounded, clipped."""
    return (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def frame_strip(frames: np.ndarray, count: int | None = None) -> np.ndarray:
    """`count` evenly spaced frames (all when None) side by side: [F, H, W, 3] -> [H, n * W, 3]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {frames.shape}")
    n = len(frames) if count is None else min(count, len(frames))
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return np.concatenate([frames[i] for i in idx], axis=1)
