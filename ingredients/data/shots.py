"""Shot boundaries of a video with PySceneDetect's detectors (ContentDetector or AdaptiveDetector), fed
the frames curation decodes.

PySceneDetect's own video backends number a frame by its time times the stream's guessed rate (`tbr`:
120 for a 24/60 fps phone video), so on variable-frame-rate footage their frame numbers are not the
decoder's frame indices, and an end given as a frame count stops the scan early. Here the detector is
given each decoded frame with its decoding index, so its cuts are frame indices of the video whatever
its rate, and it sees every frame of the range. Frames are scaled down the way PySceneDetect's
SceneManager scales them (`compute_downscale_factor`, linear interpolation) before detection.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import scenedetect
from scenedetect.common import FrameTimecode
from scenedetect.scene_manager import Interpolation, compute_downscale_factor


def build_shot_detector(kind: str, threshold: float, adaptive_threshold: float, min_scene_frames: int) -> scenedetect.SceneDetector:
    """A fresh PySceneDetect detector ('content': HSV content change; 'adaptive': relative to the
    rolling average, more tolerant of fast camera motion)."""
    if kind == "content":
        return scenedetect.ContentDetector(threshold=threshold, min_scene_len=min_scene_frames)
    if kind == "adaptive":
        return scenedetect.AdaptiveDetector(adaptive_threshold=adaptive_threshold, min_scene_len=min_scene_frames)
    raise ValueError(f"unknown shot detector {kind!r}; expected 'content' or 'adaptive'")


class ShotCuts:
    """Feed the frames of a range in order (`add`), then `shots()`: the shots as [(start, end)] frame
    ranges (end exclusive, numbered from the range's first frame) covering the frames fed exactly."""

    def __init__(self, kind: str = "content", threshold: float = 27.0, adaptive_threshold: float = 3.0,
                 min_scene_frames: int = 3, rate: float = 25.0) -> None:
        self.detector = build_shot_detector(kind, threshold, adaptive_threshold, min_scene_frames)
        self.rate = Fraction(rate).limit_denominator(1001) if rate > 0 else Fraction(25)
        self.count = 0
        self.cuts: set[int] = set()
        self._factor: float | None = None

    def add(self, frame: np.ndarray) -> None:
        """The next frame, RGB uint8 [H, W, 3]."""
        if self._factor is None:
            self._factor = compute_downscale_factor(max(frame.shape[1], frame.shape[0]))
        if self._factor > 1.0:
            size = (max(1, round(frame.shape[1] / self._factor)), max(1, round(frame.shape[0] / self._factor)))
            frame = cv2.resize(frame, size, interpolation=Interpolation.LINEAR.value)
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)  # PySceneDetect's detectors take OpenCV's BGR
        self.cuts.update(int(c.frame_num) for c in self.detector.process_frame(FrameTimecode(self.count, self.rate), bgr))
        self.count += 1

    def shots(self) -> list[tuple[int, int]]:
        if self.count:
            self.cuts.update(int(c.frame_num) for c in self.detector.post_process(FrameTimecode(self.count - 1, self.rate)))
        bounds = [0, *sorted(c for c in self.cuts if 0 < c < self.count), self.count]
        return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def split_long_shots(shots: list[tuple[int, int]], times: list[float], max_seconds: float | None) -> list[tuple[int, int]]:
    """Shots longer than `max_seconds` (by their frames' presentation times `times`, one per frame,
    seconds) split into the fewest pieces of equal duration at most that long, so a clip's memory and
    training sample stay bounded whatever the footage; None keeps every shot whole."""
    if max_seconds is None:
        return list(shots)
    out = []
    for a, b in shots:
        span = shot_duration(times, a, b)
        pieces = max(1, int(np.ceil(span / max_seconds - 1e-9)))
        if pieces == 1:
            out.append((a, b))
            continue
        t0 = times[a]
        # cut at the first frame at or after each piece's start time
        cuts = [a + int(np.searchsorted(times[a:b], t0 + span * p / pieces - 1e-9)) for p in range(1, pieces)]
        bounds = [a, *cuts, b]
        out.extend((x, y) for x, y in zip(bounds[:-1], bounds[1:]) if y > x)
    return out


def shot_duration(times: list[float], a: int, b: int, period: float = 0.0) -> float:
    """Duration of frames [a, b): from the first frame's time to the end of the last, whose length is
    the gap to the next frame (or the previous gap at the video's end; `period` for a lone frame)."""
    if b - a < 1:
        return 0.0
    if b < len(times):
        last = times[b] - times[b - 1]
    else:
        last = times[b - 1] - times[b - 2] if b >= 2 else period
    return times[b - 1] + last - times[a]
