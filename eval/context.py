"""Everything a video-level metric may need about one (method, case), computed lazily and shared:
the decoded frames, the face analysis per backend, the optical flow."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np

from ingredients.sampling.benchmark import Case
from eval.face_backends import AnalyzerPool
from eval.optical_flow import farneback_flow, load_raft, raft_flow
from eval.params import EvalParams
from eval.registry import MetricUnavailable
from eval.video_faces import VideoFaces, analyze_frames
from ingredients.files.video_io import read_video

logger = logging.getLogger(__name__)


class VideoContext:
    """One generated video to evaluate. `faces(backend)` and `flow` are computed on first use."""

    def __init__(self, method: str, method_dir: Path, case: Case, params: EvalParams,
                 analyzers: AnalyzerPool) -> None:
        self.method = method
        self.method_dir = Path(method_dir)
        self.case = case
        self.params = params
        self.analyzers = analyzers
        self.face_analyses: dict[str, VideoFaces] = {}

    @property
    def video_path(self) -> Path:
        return self.method_dir / f"{self.case.case_id}.mp4"

    @property
    def routing_path(self) -> Path:
        return self.method_dir / f"{self.case.case_id}.routing.safetensors"

    @cached_property
    def frames(self) -> np.ndarray:
        """uint8 RGB [F, H, W, 3], at most params.max_frames."""
        return read_video(self.video_path, 0, self.params.max_frames)[0]

    def faces(self, backend: str) -> VideoFaces:
        """Face analysis with `backend` on every face_frame_stride-th frame; MetricUnavailable with
        the reason when the backend is unavailable or a reference has no face."""
        if backend not in self.face_analyses:
            analyzer = self.analyzers.get(backend)
            refs = np.stack([self.analyzers.reference_embedding(backend, p) for p in self.case.references])
            frames = self.frames[:: self.params.face_frame_stride]
            self.face_analyses[backend] = analyze_frames(analyzer, frames, refs)
        return self.face_analyses[backend]

    @cached_property
    def flow(self) -> np.ndarray:
        """Optical flow [F-1, H, W, 2] between consecutive frames (params.flow)."""
        if len(self.frames) < 2:
            raise MetricUnavailable(f"{self.video_path}: optical flow needs at least 2 frames, got {len(self.frames)}")
        if self.params.flow.method == "raft":
            model = load_raft(self.params.flow.raft_model, self.params.flow.raft_weights)
            return raft_flow(self.frames, model)
        return farneback_flow(self.frames)
