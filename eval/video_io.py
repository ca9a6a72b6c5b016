"""Video files for evaluation: frames as uint8 [F, H, W, 3] RGB (shared implementation in `ingredients.video_io`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ingredients import video_io


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """A video's frames as uint8 RGB [F, H, W, 3] (the first `max_frames` when given).

    FileNotFoundError for a missing file; ValueError naming the file when it cannot be decoded.
    """
    frames, _fps = video_io.read_video(path, 0, max_frames)
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write uint8 RGB frames [F, H, W, 3] (even H and W) to an H.264 mp4, atomically."""
    return video_io.write_video(path, frames, fps)
