"""Aggregates per method, computed only from per-video records (and the per-video artifacts the
aggregate-level metrics read), so they do not depend on how the work was split into runs.

Video-level metric values are averaged over the method's videos that have them (exact sum, in
case-id order). Per-identity keys (`.../id<k>`) are not aggregated: identity k is a different
person in every case. A metric missing in every video is reported missing with the reasons; one
missing in some videos is averaged over the rest and the gap is noted in missing.json.

Every method's aggregates are given overall and per identity count K (the number of references of
the case), since single-identity cases dilute multi-identity scores:
`{method: {metric: value, ..., "by_k": {"<K>": {metric: value}}}}`, and missing.json likewise
(`"by_k"` only where some K has gaps). K comes from the benchmark named in the run's sources.json,
else from the stored face analysis of the case; a case whose K is unknown is left out of by_k
(with a warning).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from eval.params import EvalParams
from eval.registry import get_metric
from eval.run_layout import RunLayout, load_faces
from eval.video_faces import VideoFaces
from ingredients.sampling.benchmark import read_benchmark

logger = logging.getLogger(__name__)

PER_IDENTITY = re.compile(r"/id\d+$")
BY_K = "by_k"


@dataclass
class AggregateInputs:
    """What an aggregate-level metric sees for one method. `references`: {case_id: reference
    paths} from the run's benchmark ({} when unknown)."""

    method: str
    records: list[dict]
    params: EvalParams
    layout: RunLayout
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
            where = f"all {n} videos" if len(whys) == n else f"{len(whys)} of {n} videos, no value in any"
            missing[name] = f"missing in {where}: {_describe(whys)}"
    return out, missing


def case_references(layout: RunLayout) -> dict[str, tuple[str, ...]]:
    """{case_id: reference paths} of the benchmark named in the run's sources.json ({} when there is
    none or it cannot be read, with a warning)."""
    if not layout.sources.is_file():
        return {}
    benchmark = json.loads(layout.sources.read_text(encoding="utf-8")).get("benchmark")
    try:
        return {c.case_id: tuple(str(p) for p in c.references) for c in read_benchmark(benchmark)}
    except (OSError, ValueError) as exc:
        logger.warning("benchmark %s of %s unreadable (%s); identity counts K come from the face analyses",
                       benchmark, layout.sources, exc)
        return {}


def identity_count(method: str, case_id: str, references: dict[str, tuple[str, ...]], layout: RunLayout) -> int | None:
    """K of a case: its number of references (benchmark, else the stored face analysis), or None."""
    if case_id in references:
        return len(references[case_id])
    for faces in load_faces(layout.cache_faces(method, case_id)).values():
        return int(faces.refs.shape[0])
    return None


def aggregate_method(method: str, records: list[dict], params: EvalParams, layout: RunLayout,
                     references: dict[str, tuple[str, ...]]) -> tuple[dict[str, float], dict[str, str]]:
    """(values, missing) of one method over `records`: video-level means and aggregate-level metrics."""
    values, gaps = aggregate_video_metrics(records)
    for name in params.metrics:
        spec = get_metric(name)
        if spec.level != "aggregate":
            continue
        result = spec.compute(AggregateInputs(method=method, records=records, params=params, layout=layout,
                                              references=references))
        values.update(result.values)
        gaps.update(result.missing)
    return dict(sorted(values.items())), dict(sorted(gaps.items()))


def aggregate(records: list[dict], params: EvalParams, layout: RunLayout) -> tuple[dict, dict]:
    """({method: {metric: value, "by_k": {K: {...}}}}, {method: {metric: reason[, "by_k": ...]}})."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        by_method[rec["method"]].append(rec)
    references = case_references(layout)
    metrics, missing = {}, {}
    for method in sorted(by_method):
        recs = sorted(by_method[method], key=lambda r: r["case_id"])
        ids = [r["case_id"] for r in recs]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"method {method!r}: duplicate per-video records for cases {dupes}")
        values, gaps = aggregate_method(method, recs, params, layout, references)
        groups: dict[int, list[dict]] = defaultdict(list)
        unknown = []
        for rec in recs:
            k = identity_count(method, rec["case_id"], references, layout)
            if k is None:
                unknown.append(rec["case_id"])
            else:
                groups[k].append(rec)
        if unknown:
            logger.warning("method %s: identity count K unknown for %d cases (no benchmark in sources.json and no "
                           "face analysis), left out of by_k: %s", method, len(unknown), unknown[:5])
        by_k_values, by_k_gaps = {}, {}
        for k in sorted(groups):
            by_k_values[str(k)], k_gaps = aggregate_method(method, groups[k], params, layout, references)
            if k_gaps:
                by_k_gaps[str(k)] = k_gaps
        metrics[method] = {**values, BY_K: by_k_values}
        missing[method] = {**gaps, BY_K: by_k_gaps} if by_k_gaps else gaps
    return metrics, missing


def split_by_k(entry: dict) -> tuple[dict, dict[str, dict]]:
    """A method's entry of metrics.json or missing.json -> (overall {name: value}, {K: {name: value}})."""
    overall = {name: v for name, v in entry.items() if name != BY_K}
    return overall, dict(entry.get(BY_K, {}))


def flat_items(entry: dict) -> list[tuple[str, object]]:
    """A method's entry with by_k flattened to `by_k.<K>.<name>` keys (for MLflow), sorted."""
    overall, by_k = split_by_k(entry)
    items = list(overall.items())
    items += [(f"{BY_K}.{k}.{name}", v) for k, d in by_k.items() for name, v in d.items()]
    return sorted(items)


__all__ = ["AggregateInputs", "BY_K", "aggregate", "aggregate_method", "aggregate_video_metrics", "case_references",
           "flat_items", "identity_count", "split_by_k"]
