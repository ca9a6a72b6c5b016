"""Metric registry: every metric is one module under eval/metrics that registers itself here.

A video-level metric is `compute(ctx: VideoContext) -> MetricResult` and runs once per
(method, case). An aggregate-level metric is `compute(inputs: AggregateInputs) -> MetricResult`
and runs once per method over the per-video records and artifacts; its optional `prepare(ctx)`
runs per video so the artifacts it needs (e.g. face embeddings) are computed and stored.

A metric that cannot run reports its names as missing with the reason; it never returns a
placeholder number.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

METRIC_MODULES = (
    "eval.metrics.face_sim",
    "eval.metrics.face_sim_max",
    "eval.metrics.face_sim_opens2v",
    "eval.metrics.copy_paste",
    "eval.metrics.face_found",
    "eval.metrics.id_confusion",
    "eval.metrics.clip_score",
    "eval.metrics.fid_face",
    "eval.metrics.kid_face",
    "eval.metrics.dynamic_degree",
    "eval.metrics.flow_magnitude",
    "eval.metrics.flicker",
    "eval.metrics.routing_acc",
    "eval.metrics.routing_consistency",
)

LEVELS = ("video", "aggregate")


class MetricUnavailable(Exception):
    """Raised inside a metric when it cannot run; the message is the reason recorded as missing."""


@dataclass
class MetricResult:
    """Values by full metric name (e.g. 'face_sim/dlib') and missing names with their reason."""

    values: dict[str, float] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def update(self, other: "MetricResult") -> None:
        self.values.update(other.values)
        self.missing.update(other.missing)


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric. `name` is the base name; results may use `name/<suffix>` keys."""

    name: str
    level: str
    compute: Callable
    prepare: Callable | None = None


_REGISTRY: dict[str, MetricSpec] = {}
_loaded = False


def register(name: str, level: str = "video", prepare: Callable | None = None) -> Callable:
    """Decorator registering `compute` under `name` (once; re-registration is an error)."""
    if level not in LEVELS:
        raise ValueError(f"register({name!r}): level must be one of {LEVELS}, got {level!r}")

    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].compute is not fn:
            raise ValueError(f"metric {name!r} is already registered by {_REGISTRY[name].compute.__module__}")
        _REGISTRY[name] = MetricSpec(name=name, level=level, compute=fn, prepare=prepare)
        return fn

    return wrap


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in METRIC_MODULES:
            importlib.import_module(module)
        _loaded = True


def metric_names() -> list[str]:
    """All registered metric names."""
    _load()
    return sorted(_REGISTRY)


def get_metric(name: str) -> MetricSpec:
    """The metric registered as `name`; KeyError listing the known names otherwise."""
    _load()
    if name not in _REGISTRY:
        raise KeyError(f"unknown metric {name!r}; known metrics: {sorted(_REGISTRY)}")
    return _REGISTRY[name]
