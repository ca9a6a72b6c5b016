"""Video files (PyAV): read RGB uint8 frames [T, H, W, 3], write H.264 mp4 atomically; shared by all stages."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ingredients.files.atomic import atomic_path


class VideoReadError(ValueError):
    """A video file that cannot be decoded (empty, corrupt, no video stream)."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int
    width: int
    height: int


@contextmanager
def _open_video(path: Path, action: str) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """The open container and its first video stream, after the checks every reader needs: the file
    exists and is not empty, and has a video stream. PyAV's errors while the block runs (a corrupt
    container or bitstream) become a VideoReadError naming the file: `cannot {action} video PATH`."""
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoReadError(f"video file is empty (0 bytes): {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"no video stream in {path}")
            yield container, container.streams.video[0]
    except VideoReadError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise VideoReadError(f"cannot {action} video {path}: {e}") from e


def iter_frames(path: str | os.PathLike, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
    """Frames [start, end) of a video decoded in order, one RGB uint8 [H, W, 3] array at a time: memory
    is one frame whatever the video's length. Raises as `read_video` (a file with no frame in the range
    yields nothing)."""
    with _open_video(Path(path), "decode") as (container, stream):
        for i, frame in enumerate(container.decode(stream)):
            if end is not None and i >= end:
                break
            if i >= start:
                yield frame.to_ndarray(format="rgb24")


def frames_at(path: str | os.PathLike, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """{index: frame [H, W, 3]} for the wanted frame indices, in one decoding pass that keeps only them."""
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    keep = set(wanted)
    return {wanted[0] + i: f for i, f in enumerate(iter_frames(path, wanted[0], wanted[-1] + 1)) if wanted[0] + i in keep}


def read_video(path: str | os.PathLike, start: int = 0, end: int | None = None) -> tuple[np.ndarray, float]:
    """Decode frames [start, end) of a video; returns (frames [T, H, W, 3] uint8 RGB, fps).

    Raises FileNotFoundError for a missing file and VideoReadError (a ValueError) naming the file
    when it is empty, corrupt or has no decodable frame.
    """
    frames = list(iter_frames(path, start, end))
    fps = video_rate(path)
    if not frames:
        raise VideoReadError(f"no decodable frames in {path} (range start={start}, end={end})")
    return np.stack(frames), fps  # [T, H, W, 3]


def video_rate(path: str | os.PathLike) -> float:
    """Frame rate from the container's stream header (no frame decoded); VideoReadError naming the
    file when it is empty, unreadable, or has no video stream or no rate."""
    with _open_video(Path(path), "open") as (_container, stream):
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoReadError(f"video {path} reports no frame rate")
    return float(rate)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count (by decoding) and size of a video."""
    frames, fps = read_video(path)
    return VideoInfo(fps=fps, num_frames=int(frames.shape[0]), width=int(frames.shape[2]), height=int(frames.shape[1]))


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 16) -> Path:
    """Write RGB uint8 frames [T, H, W, 3] (even H and W) as H.264 mp4, atomically."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {w}x{h}")
    path = Path(path)
    # the container closes (exit order) before atomic_path moves the file into place
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        stream.thread_count = 1  # deterministic bitstream
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
