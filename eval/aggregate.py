"""Aggregates per method, computed only from per-video records (and the per-video artifacts the
aggregate-level metrics read), so they do not depend on how the work was split into runs.

Video-level metric values are averaged over the method's videos that have them (exact sum, in
case-id order). Per-identity keys (`.../id<k>`) are not aggregated: identity k is a different
person in every case. A metric missing in every video is reported missing with the reasons; one
missing in some videos is averaged over the rest and the gap is noted in missing.json.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from eval.params import EvalParams
from eval.registry import get_metric
from eval.run_layout import RunLayout, load_faces
from eval.video_faces import VideoFaces

PER_IDENTITY = re.compile(r"/id\d+$")


@dataclass
class AggregateInputs:
    """What an aggregate-level metric sees for one method."""

    method: str
    records: list[dict]
    params: EvalParams
    layout: RunLayout

    @property
    def case_ids(self) -> list[str]:
        return [r["case_id"] for r in self.records]

    def faces(self, case_id: str, backend: str) -> VideoFaces | None:
        return load_faces(self.layout.cache_faces(self.method, case_id)).get(backend)


def _describe(reasons: list[str]) -> str:
    counts = Counter(reasons).most_common()
    return "; ".join(f"{r} (x{n})" if n > 1 else r for r, n in counts)


def aggregate_video_metrics(records: list[dict]) -> tuple[dict[str, float], dict[str, str]]:
    """Means over one method's records; returns (values, missing)."""
    values: dict[str, list[float]] = defaultdict(list)
    reasons: dict[str, list[str]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: r["case_id"]):
        for name, v in rec["metrics"].items():
            if not PER_IDENTITY.search(name):
                values[name].append(float(v))
        for name, why in rec["missing"].items():
            if not PER_IDENTITY.search(name):
                reasons[name].append(why)
    n = len(records)
    out = {name: math.fsum(vs) / len(vs) for name, vs in values.items()}
    missing = {}
    for name, whys in reasons.items():
        if name in out:
            missing[name] = f"averaged over {len(values[name])} of {n} videos; missing in {len(whys)}: {_describe(whys)}"
        else:
            missing[name] = f"missing in all {n} videos: {_describe(whys)}"
    return out, missing


def aggregate(records: list[dict], params: EvalParams, layout: RunLayout) -> tuple[dict, dict]:
    """({method: {metric: value}}, {method: {metric: reason}}) over all records."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_method[rec["method"]].append(rec)
    metrics, missing = {}, {}
    for method in sorted(by_method):
        recs = sorted(by_method[method], key=lambda r: r["case_id"])
        ids = [r["case_id"] for r in recs]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"method {method!r}: duplicate per-video records for cases {dupes}")
        values, gaps = aggregate_video_metrics(recs)
        for name in params.metrics:
            spec = get_metric(name)
            if spec.level != "aggregate":
                continue
            result = spec.compute(AggregateInputs(method=method, records=recs, params=params, layout=layout))
            values.update(result.values)
            gaps.update(result.missing)
        metrics[method] = dict(sorted(values.items()))
        missing[method] = dict(sorted(gaps.items()))
    return metrics, missing
