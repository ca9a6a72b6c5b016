"""Video files (PyAV): read RGB uint8 frames [T, H, W, 3] as displayed (through
`ingredients.files.video_decode`, the one decoding layer), write H.264 mp4 atomically; shared by all stages."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ingredients.files.atomic import atomic_path
from ingredients.files.video_decode import NotAVideoError, VideoReadError, decode, open_video

__all__ = ["NotAVideoError", "VideoInfo", "VideoReadError", "frames_at", "iter_frames", "probe_video", "read_video",
           "video_rate", "write_video"]


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int
    width: int
    height: int


def iter_frames(path: str | os.PathLike, start: int = 0, end: int | None = None, max_side: int | None = None,
                stored: bool = False) -> Iterator[np.ndarray]:
    """Frames [start, end) of a video decoded in order, as displayed (rotation and aspect ratio applied,
    see `ingredients.files.video_decode`), one RGB uint8 [H, W, 3] array at a time: memory is one
    frame whatever the video's length; `max_side` scales each so its longer side is at most that.
    `stored`: as stored, see `decode`. Raises as `read_video` (a file with no frame in the range yields
    nothing)."""
    for frame in decode(path, start, end, max_side, stored):
        yield frame.image


def frames_at(path: str | os.PathLike, indices: Iterable[int], max_side: int | None = None) -> dict[int, np.ndarray]:
    """{index: frame [H, W, 3]} for the wanted frame indices, in one decoding pass that keeps only them."""
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    keep = set(wanted)
    return {f.index: f.image for f in decode(path, wanted[0], wanted[-1] + 1, max_side) if f.index in keep}


def read_video(path: str | os.PathLike, start: int = 0, end: int | None = None, stored: bool = False) -> tuple[np.ndarray, float]:
    """Decode frames [start, end) of a video; returns (frames [T, H, W, 3] uint8 RGB, fps).

    Raises FileNotFoundError for a missing file and VideoReadError (a ValueError) naming the file
    when it is empty, corrupt or has no decodable frame.
    """
    frames = list(iter_frames(path, start, end, stored=stored))
    fps = video_rate(path)
    if not frames:
        raise VideoReadError(f"no decodable frames in {path} (range start={start}, end={end})")
    return np.stack(frames), fps  # [T, H, W, 3]


def video_rate(path: str | os.PathLike) -> float:
    """Frame rate from the container's stream header (no frame decoded); VideoReadError naming the
    file when it is empty, unreadable, or has no video stream or no rate."""
    with open_video(Path(path), "open") as (_container, stream):
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoReadError(f"video {path} reports no frame rate")
    return float(rate)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count (by decoding, one frame at a time) and displayed size of a video."""
    count, size = 0, (0, 0)
    for frame in decode(path, max_side=1):  # the size as displayed, without converting full frames
        count, size = count + 1, frame.geometry.display
    if not count:
        raise VideoReadError(f"no decodable frames in {path}")
    return VideoInfo(fps=video_rate(path), num_frames=count, width=size[0], height=size[1])


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
