"""Video files: read frames as uint8 [F, H, W, 3] RGB, write H.264 mp4 atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from eval.atomic import atomic_path

logger = logging.getLogger(__name__)


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Read a video's frames as uint8 RGB [F, H, W, 3] (the first `max_frames` when given)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    frames = []
    try:
        for i, frame in enumerate(iio.imiter(path, plugin="pyav")):
            if max_frames is not None and i >= max_frames:
                break
            frames.append(np.asarray(frame))
    except Exception as exc:  # pyav raises several error types for broken files
        raise ValueError(f"cannot decode video {path}: {exc}") from exc
    if not frames:
        raise ValueError(f"video {path} has no frames")
    video = np.stack(frames)  # [F, H, W, 3]
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video {path}: expected uint8 RGB frames, got {video.dtype} {video.shape}")
    return video


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write uint8 RGB frames [F, H, W, 3] to an H.264 (libx264, yuv420p) mp4, atomically.

    H and W must be even (yuv420p subsamples chroma by 2).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video({path}): expected frames [F, H, W, 3], got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"write_video({path}): expected uint8 frames, got {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(
            f"write_video({path}): height and width must be even for yuv420p, got "
            f"{frames.shape[1]}x{frames.shape[2]}; crop or pad the frames"
        )
    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(
            tmp, frames, plugin="pyav", codec="libx264", fps=fps,
            out_pixel_format="yuv420p", in_pixel_format="rgb24",
        )
    return path
