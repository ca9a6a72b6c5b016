"""dynamic_degree: whether the video moves, as VBench defines it (1.0 dynamic, 0.0 static per
video; the method's aggregate is the share of dynamic videos).

Per consecutive frame pair, the score is the mean flow magnitude of the 5 % fastest pixels. The
video is dynamic when at least round(4 x F / 16) pairs exceed 6 x min(H, W) / 256 pixels. VBench
uses RAFT on frames sampled at about 8 fps; by default this uses OpenCV Farneback on every frame
(params eval.flow), so thresholds tuned for RAFT apply approximately. `dynamic_degree/score` is
the mean pair score, a continuous companion.
"""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.registry import MetricResult, register

TOP_FRACTION = 0.05


def pair_scores(flow: np.ndarray) -> np.ndarray:
    """[F-1] mean magnitude of the top 5 % pixels of each flow field [F-1, H, W, 2]."""
    mag = np.linalg.norm(flow, axis=-1).reshape(len(flow), -1)  # [F-1, H*W]
    k = max(int(mag.shape[1] * TOP_FRACTION), 1)
    top = -np.sort(-mag, axis=1)[:, :k]
    return top.mean(axis=1)


def is_dynamic(scores: np.ndarray, n_frames: int, height: int, width: int) -> bool:
    """VBench's rule: enough pairs above a resolution-scaled threshold."""
    thres = 6.0 * min(height, width) / 256.0
    count_num = round(4 * n_frames / 16.0)
    return int(np.sum(scores > thres)) >= count_num


@register("dynamic_degree")
def compute(ctx: VideoContext) -> MetricResult:
    scores = pair_scores(ctx.flow)
    f, h, w = ctx.frames.shape[:3]
    return MetricResult(values={
        "dynamic_degree": float(is_dynamic(scores, f, h, w)),
        "dynamic_degree/score": float(scores.mean()),
    })
