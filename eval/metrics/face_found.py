"""face_found/R: share of frames in which every reference is matched (one-to-one) to a detected
face whose similarity reaches the backend's verification_threshold."""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.face_matching import all_found
from eval.metrics.face_common import for_each_backend
from eval.registry import MetricResult, register
from eval.video_faces import VideoFaces


def summarize(faces: VideoFaces) -> dict[str, float]:
    return {"": float(np.mean([all_found(m, faces.threshold) for m in faces.matches]))}


@register("face_found")
def compute(ctx: VideoContext) -> MetricResult:
    return for_each_backend(ctx, "face_found", summarize)
