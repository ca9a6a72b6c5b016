"""face_sim/R: identity similarity with one-to-one matching (our FaceSim).

Per frame, detected faces are matched to the references one-to-one (Hungarian on cosine
similarity); a reference with no matched face scores 0 in that frame, and a matched face's cosine
is clamped at 0 (as OpenS2V-Eval clips its FaceSim), so a dissimilar face never scores below no
face at all. Per identity: the mean over frames (`face_sim/R/id<k>`, k in reference order); the
video's score is the mean over identities. Unlike the reference code's max-over-pairs score
(face_sim_max), a missing or blended second identity lowers this score.
"""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.metrics.face_common import for_each_backend
from eval.registry import MetricResult, register
from eval.video_faces import VideoFaces


def matched_scores(faces: VideoFaces) -> np.ndarray:
    """[F, K] similarity of each reference's matched face per frame, clamped at 0 (0 when unmatched)."""
    scores = np.stack([m.score for m in faces.matches]).reshape(faces.n_frames, faces.refs.shape[0])
    return np.maximum(scores, 0.0)


def summarize(faces: VideoFaces) -> dict[str, float]:
    """{'': mean over identities, '/id<k>': per-identity mean over frames}."""
    per_id = matched_scores(faces).mean(axis=0)  # [K]
    out = {"": float(per_id.mean())}
    out.update({f"/id{k}": float(v) for k, v in enumerate(per_id)})
    return out


@register("face_sim")
def compute(ctx: VideoContext) -> MetricResult:
    return for_each_backend(ctx, "face_sim", summarize)
