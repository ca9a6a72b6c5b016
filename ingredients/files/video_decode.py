"""Frames as they are displayed, at their presentation times: the one decoding layer every video reader
of the project goes through (`ingredients.files.video_io` builds on it).

A decoder returns frames as stored; a player shows them transformed. Three things differ on footage
as devices record it, and each is applied here so no reader can forget it:

- time: phones and screen recorders write variable frame rate, so a frame's index times the average
  rate is not its time. Every decoded frame carries its presentation time (`pts * time_base`, in
  seconds from the first frame's), the timeline ranges in seconds and clip times are read on;
- rotation and mirroring: phones store portrait video landscape with a display matrix (frame side
  data `DISPLAYMATRIX`; older files a `rotate` stream tag, degrees clockwise). It is applied the way
  ffmpeg's CLI applies it (`-autorotate`: transpose / flips for multiples of 90 degrees);
- non-square pixels: DV/DVD and some cameras store a sample aspect ratio other than 1:1; the width
  is scaled by it (height kept), as a player shows the frame.

`max_side` additionally scales the displayed frame so that its longer side is at most that many
pixels (never up): curation detects faces on frames of a set working size, whatever the footage's
resolution. Scaling is done by the decoder's scaler (swscale) in the same step as the RGB
conversion, so a 4K frame is never held at full size when a smaller one is asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# demuxers of still pictures: a JPEG or PNG given a video's name opens as a one-frame "video"
_IMAGE_DEMUXERS = ("image2",)


class VideoReadError(ValueError):
    """A video file that cannot be decoded (empty, corrupt, no video stream)."""


class NotAVideoError(VideoReadError):
    """A file that is a still picture (a JPEG or PNG named like a video), not a video."""


@dataclass(frozen=True)
class Orientation:
    """How a stored frame is turned for display: rotated by `k` quarter turns counterclockwise
    (`np.rot90`), then mirrored left-right when `hflip`. All eight right-angle orientations."""

    k: int = 0
    hflip: bool = False

    @property
    def swaps_sides(self) -> bool:
        return self.k % 2 == 1

    def apply(self, image: np.ndarray) -> np.ndarray:
        """[H, W, C] stored -> [H', W', C] displayed (contiguous)."""
        if self.k % 4 == 0 and not self.hflip:
            return image
        out = np.rot90(image, self.k)
        if self.hflip:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


UPRIGHT = Orientation()


def orientation_from_matrix(matrix: np.ndarray) -> Orientation:
    """The display orientation of an ffmpeg display matrix (9 int32, 16.16 fixed point, row-major),
    decided as ffmpeg's CLI decides it (fftools `get_rotation` and its autorotate filters); a rotation
    that is not a multiple of 90 degrees is a VideoReadError (ffmpeg would rotate by an arbitrary angle,
    which this layer does not do)."""
    m = np.asarray(matrix, dtype=np.float64).reshape(9)
    s0, s1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if s0 == 0 or s1 == 0:
        return UPRIGHT
    theta = round(math.degrees(math.atan2(m[1] / s1, m[0] / s0)))  # clockwise display rotation
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:  # transpose=clock, or cclock_flip (the plain transpose) when mirrored
        return Orientation(3, hflip=m[3] > 0)
    if abs(theta - 180) < 1:  # hflip and/or vflip; vflip = hflip of the half turn
        h, v = m[0] < 0, m[4] < 0
        return Orientation(2 if v else 0, hflip=h != v)
    if abs(theta - 270) < 1:  # transpose=cclock, or clock_flip when mirrored
        return Orientation(1, hflip=m[3] < 0)
    if abs(theta) < 1 or abs(theta - 360) < 1:
        return Orientation(2, hflip=True) if m[4] < 0 else UPRIGHT  # a vertical flip only
    raise VideoReadError(f"display rotation of {theta} degrees is not a multiple of 90")


def orientation_from_tag(value: str) -> Orientation:
    """The legacy `rotate` stream tag: degrees clockwise."""
    try:
        theta = float(value) % 360
    except ValueError:
        raise VideoReadError(f"rotate tag {value!r} is not a number of degrees") from None
    quarter = round(theta / 90)
    if abs(theta - 90 * quarter) > 1:
        raise VideoReadError(f"rotate tag of {value} degrees is not a multiple of 90")
    return Orientation(-quarter % 4)


def _frame_orientation(frame: av.VideoFrame, tag: str | None) -> Orientation:
    """The frame's display matrix when it carries one, else the stream's `rotate` tag, else upright."""
    for kind, data in frame.side_data.items():
        if str(kind).endswith("DISPLAYMATRIX"):
            return orientation_from_matrix(np.frombuffer(memoryview(data), dtype=np.int32))
    return orientation_from_tag(tag) if tag is not None else UPRIGHT


@dataclass(frozen=True)
class Geometry:
    """Sizes of one stored frame: `display` (W, H) as a player shows it (aspect ratio and orientation
    applied), `size` (W, H) of the array returned (`display` scaled by `scale` <= 1 for max_side)."""

    display: tuple[int, int]
    size: tuple[int, int]
    scale: float
    orientation: Orientation


def frame_geometry(width: int, height: int, sar: Fraction, orientation: Orientation, max_side: int | None) -> Geometry:
    """Display and returned sizes of a stored width x height frame with sample aspect ratio `sar`."""
    stored_w = max(1, round(width * sar)) if sar > 0 else width  # non-square pixels: the width as displayed
    scale = 1.0 if max_side is None else min(1.0, max_side / max(stored_w, height))
    w, h = (stored_w, height) if scale == 1.0 else (max(1, round(stored_w * scale)), max(1, round(height * scale)))
    if orientation.swaps_sides:
        return Geometry((height, stored_w), (h, w), scale, orientation)
    return Geometry((stored_w, height), (w, h), scale, orientation)


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame: its index in decoding (= presentation) order, its presentation time in
    seconds from the first frame's, its size as displayed, and its RGB uint8 image [H, W, 3] (as
    displayed, scaled by `geometry.scale`)."""

    index: int
    time: float
    image: np.ndarray
    geometry: Geometry


def is_still_image_format(name: str) -> bool:
    """Whether a demuxer name is one of ffmpeg's still-picture demuxers (image2, jpeg_pipe, png_pipe...)."""
    return any(n in _IMAGE_DEMUXERS or n.endswith("_pipe") for n in name.split(","))


@contextmanager
def open_video(path: Path, action: str) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """The open container and its first video stream, after the checks every reader needs: the file
    exists, is not empty, is not a still picture and has a video stream. PyAV's errors while the block
    runs (a corrupt container or bitstream) become a VideoReadError naming the file: `cannot {action}
    video PATH`."""
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoReadError(f"video file is empty (0 bytes): {path}")
    try:
        with av.open(str(path)) as container:
            if is_still_image_format(container.format.name):
                raise NotAVideoError(f"not a video: {path} is a still picture ({container.format.name}); "
                                     f"remove it from the data folder or give the real video")
            if not container.streams.video:
                raise VideoReadError(f"no video stream in {path}")
            yield container, container.streams.video[0]
    except VideoReadError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise VideoReadError(f"cannot {action} video {path}: {e}") from e


def _rotate_tag(stream: av.video.stream.VideoStream) -> str | None:
    return next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)


def decode(path: str | os.PathLike, start: int = 0, end: int | None = None, max_side: int | None = None,
           stored: bool = False) -> Iterator[DecodedFrame]:
    """Frames [start, end) (decoding order) of a video, as displayed, one at a time (memory: one frame
    whatever the video's length). A frame without a timestamp takes the previous one's plus one
    period of the stream's average rate; times never decrease. `stored` returns the frames as stored
    instead (no turn, square pixels): only for a clip used as a texture whose user sets its shape
    (the tiny data's backdrop). Raises as `open_video`."""
    path = Path(path)
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    with open_video(path, "decode") as (container, stream):
        sar = Fraction(1) if stored else (stream.codec_context.sample_aspect_ratio or Fraction(1))
        tag = _rotate_tag(stream)
        rate = stream.average_rate or stream.guessed_rate
        period = 1.0 / float(rate) if rate else 0.0
        origin: float | None = None
        last = -period
        for i, frame in enumerate(container.decode(stream)):
            if end is not None and i >= end:
                break
            pts = frame.pts if frame.pts is not None else frame.best_effort_timestamp
            t = float(pts * frame.time_base) if pts is not None and frame.time_base else None
            if t is not None and origin is None:
                origin = t
            time = t - origin if t is not None and origin is not None else last + period
            time = max(time, last)  # a broken file's timestamps never run backwards here
            last = time
            if i < start:
                continue
            turn = UPRIGHT if stored else _frame_orientation(frame, tag)
            geo = frame_geometry(frame.width, frame.height, Fraction(sar), turn, max_side)
            size = geo.size[::-1] if geo.orientation.swaps_sides else geo.size  # (W, H) before turning
            if size == (frame.width, frame.height):
                image = frame.to_ndarray(format="rgb24")
            else:  # scaled in the RGB conversion: the full-size picture is never made
                image = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
            yield DecodedFrame(i, time, geo.orientation.apply(image), geo)
