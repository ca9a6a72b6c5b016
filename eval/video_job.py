"""The work of one (method, case) evaluation, in an importable module so a Ray worker imports it
(`python -m eval.run` makes eval.run `__main__`, whose functions cloudpickle would ship by value with
their module globals, and a worker's analyzer cache would not outlive one task).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from eval.context import VideoContext
from eval.face_backends import AnalyzerPool
from eval.params import EvalParams
from eval.registry import MetricResult, MetricUnavailable, get_metric
from eval.run_layout import RunLayout, save_faces
from ingredients.files.atomic import write_json
from ingredients.files.video_io import VideoReadError
from ingredients.sampling.benchmark import Case

logger = logging.getLogger(__name__)


def evaluate_video(ctx: VideoContext) -> dict:
    """Run every configured metric on one video; returns its per-video record.

    An unreadable video (corrupt, empty) is not fatal: every metric is missing with the reason.
    """
    result = MetricResult()
    try:
        ctx.frames  # decoded once here; every metric reads them
    except VideoReadError as exc:
        logger.warning("%s/%s: %s; its metrics are reported missing", ctx.method, ctx.case.case_id, exc)
        result.missing.update({name: f"unreadable video: {exc}" for name in ctx.params.metrics})
    else:
        for name in ctx.params.metrics:
            spec = get_metric(name)
            try:
                if spec.level == "video":
                    result.update(spec.compute(ctx))
                elif spec.prepare is not None:
                    spec.prepare(ctx)
            except MetricUnavailable as exc:
                result.missing[name] = str(exc)
    return {
        "method": ctx.method,
        "case_id": ctx.case.case_id,
        "metrics": dict(sorted(result.values.items())),
        "missing": dict(sorted(result.missing.items())),
    }


ANALYZERS: dict[str, AnalyzerPool] = {}


def worker_analyzers(params: EvalParams) -> AnalyzerPool:
    """The face analyzers of this worker process, built on its first video."""
    key = json.dumps(params.face_backend_options, sort_keys=True, default=str)
    if key not in ANALYZERS:
        ANALYZERS.clear()
        ANALYZERS[key] = AnalyzerPool(params.face_backend_options)
    return ANALYZERS[key]


def evaluate_job(job: tuple[str, Path, Case, str], layout: RunLayout, params: EvalParams,
                  analyzers: AnalyzerPool | None) -> dict:
    """Evaluate one (method, case) and write its cache record and face analysis (in whichever
    process or Ray worker runs it); returns the record."""
    method, folder, case, key = job
    ctx = VideoContext(method, folder, case, params, analyzers or worker_analyzers(params))
    record = evaluate_video(ctx)
    save_faces(layout.cache_faces(method, case.case_id), ctx.face_analyses)
    write_json(layout.cache_record(method, case.case_id), {"fingerprint": key, "record": record})
    return record
