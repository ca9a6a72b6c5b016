"""face_sim_max/R: the reference code's FaceSim variant, kept to compare with published numbers.

As the authors' evaluation script does: per frame, the maximum cosine similarity over all
(reference, detected face) pairs, clamped at 0; frames without a detected face are skipped; the
mean over the remaining frames. When no frame has a face the value is missing with that reason
(the authors' script writes 0 there). One well-rendered identity hides a missing or blended
second one, which is why face_sim is primary.
"""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.face_matching import max_pair_similarity
from eval.metrics.face_common import for_each_backend
from eval.registry import MetricResult, MetricUnavailable, register
from eval.video_faces import VideoFaces


def summarize(faces: VideoFaces) -> dict[str, float]:
    scores = [s for s in (max_pair_similarity(m) for m in faces.matches) if s is not None]
    if not scores:
        raise MetricUnavailable(f"no face found by {faces.backend!r} in any of the {faces.n_frames} analysed frames")
    return {"": float(np.mean(scores))}


@register("face_sim_max")
def compute(ctx: VideoContext) -> MetricResult:
    return for_each_backend(ctx, "face_sim_max", summarize)
