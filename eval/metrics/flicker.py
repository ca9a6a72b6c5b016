"""flicker: temporal (non-)flickering as VBench reports it, 1 - mean|frame_t+1 - frame_t| / 255.

The mean absolute difference is over all pixels, channels and consecutive frame pairs of the uint8
frames, so a static clip scores 1.0 and higher is steadier. VBench applies it to static-scene
prompts only; on moving content it also counts real motion as flicker, so read it together with
dynamic_degree.
"""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.registry import MetricResult, MetricUnavailable, register


def flicker_score(frames: np.ndarray) -> float:
    """1 - mean absolute consecutive-frame difference / 255 for uint8 frames [F, H, W, 3]."""
    if len(frames) < 2:
        raise MetricUnavailable(f"flicker needs at least 2 frames, got {len(frames)}")
    x = frames.astype(np.int16)
    mad = np.abs(x[1:] - x[:-1]).mean(axis=(1, 2, 3))  # [F-1]
    return float(1.0 - mad.mean() / 255.0)


@register("flicker")
def compute(ctx: VideoContext) -> MetricResult:
    return MetricResult(values={"flicker": flicker_score(ctx.frames)})
