"""Shot boundaries of a video with PySceneDetect (ContentDetector or AdaptiveDetector)."""

from __future__ import annotations

import os

import scenedetect


def build_shot_detector(kind: str, threshold: float, adaptive_threshold: float, min_scene_frames: int) -> scenedetect.SceneDetector:
    """A fresh PySceneDetect detector ('content': HSV content change; 'adaptive': relative to the
    rolling average, more tolerant of fast camera motion)."""
    if kind == "content":
        return scenedetect.ContentDetector(threshold=threshold, min_scene_len=min_scene_frames)
    if kind == "adaptive":
        return scenedetect.AdaptiveDetector(adaptive_threshold=adaptive_threshold, min_scene_len=min_scene_frames)
    raise ValueError(f"unknown shot detector {kind!r}; expected 'content' or 'adaptive'")


def detect_shots(
    path: str | os.PathLike,
    num_frames: int,
    kind: str = "content",
    threshold: float = 27.0,
    adaptive_threshold: float = 3.0,
    min_scene_frames: int = 3,
    start: int = 0,
) -> list[tuple[int, int]]:
    """Shots as [(start, end)] frame ranges (end exclusive) covering 0..num_frames exactly, for the
    `num_frames` frames of the file from frame `start` on (a clip of a longer video).

    PySceneDetect decodes the file itself (PyAV backend, the same decoder as our reader); its
    ranges are clamped to the `num_frames` we decoded, so both agree on the frame count.
    """
    detector = build_shot_detector(kind, threshold, adaptive_threshold, min_scene_frames)
    # decoding stops at the range's end (a clip of a long video does not scan the rest of the file)
    scenes = scenedetect.detect(str(path), detector, end_time=start + num_frames, start_in_scene=True, backend="pyav")
    cuts = sorted({int(s.frame_num) - start for s, _ in scenes if 0 < int(s.frame_num) - start < num_frames})
    bounds = [0, *cuts, num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
