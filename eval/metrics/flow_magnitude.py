"""flow_magnitude: mean optical-flow magnitude in pixels per frame over all pixels and
consecutive frame pairs (eval.flow picks Farneback or RAFT). Depends on resolution; compare
methods at equal resolution. `flow_magnitude/normalized` divides by the frame diagonal (x 100)."""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.registry import MetricResult, register


def mean_magnitude(flow: np.ndarray) -> float:
    """Mean |flow| over [F-1, H, W, 2]."""
    return float(np.linalg.norm(flow, axis=-1).mean())


@register("flow_magnitude")
def compute(ctx: VideoContext) -> MetricResult:
    mag = mean_magnitude(ctx.flow)
    h, w = ctx.frames.shape[1:3]
    return MetricResult(values={
        "flow_magnitude": mag,
        "flow_magnitude/normalized": 100.0 * mag / float(np.hypot(h, w)),
    })
