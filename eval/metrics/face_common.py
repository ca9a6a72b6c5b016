"""Shared plumbing of the face metrics: run a per-backend summary, name results `<metric>/<R>`."""

from __future__ import annotations

from collections.abc import Callable

from eval.context import VideoContext
from eval.registry import MetricResult, MetricUnavailable
from eval.video_faces import VideoFaces


def for_each_backend(ctx: VideoContext, metric: str,
                     summarize: Callable[[VideoFaces], dict[str, float]]) -> MetricResult:
    """For every configured backend R: `summarize(faces)` gives {suffix: value}, recorded as
    `metric/R<suffix>`; a backend whose analysis is unavailable, or whose `summarize` raises
    MetricUnavailable (e.g. no face in the video), records `metric/R` as missing with the reason."""
    result = MetricResult()
    for backend in ctx.params.face_backends:
        name = f"{metric}/{backend}"
        try:
            values = summarize(ctx.faces(backend))
        except MetricUnavailable as exc:
            result.missing[name] = str(exc)
            continue
        for suffix, value in values.items():
            result.values[name + suffix] = float(value)
    return result
