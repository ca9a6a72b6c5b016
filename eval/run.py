"""Evaluate method output folders on a benchmark.

    python -m eval.run --benchmark FILE --method NAME=DIR [--method NAME=DIR ...] --out DIR
                       [--params params.yaml] [--shard I/N]

Writes DIR/per_video.jsonl (one record per method x case: {"method", "case_id", "metrics":
{name: value}, "missing": {name: reason}}), then DIR/metrics.json ({method: {metric: value}}) and
DIR/missing.json computed from those records alone. Each (method, case) is cached under DIR/cache
keyed by a fingerprint of the video, routing file, references, prompt and params, so a rerun
resumes and only recomputes what changed (temp files a killed run left in DIR are removed first).
The videos run on the `compute:` engine of the params (`ingredients.compute`: this process, or one
Ray task each, which writes its cache files itself; the work is `eval.video_job.evaluate_job`, an
importable module, since under `python -m eval.run` this module is `__main__` and cloudpickle would
ship its functions by value with their globals); a video whose evaluation raises, or whose
worker dies past the retries, has every metric missing with the reason and is not cached.
A method folder may list cases it has no video for, with the reason, in `absent.json`
({case_id: reason}; e.g. the vae_roundtrip baseline for cases without a ground-truth clip): those
cases get every metric missing with that reason. `--shard I/N` evaluates every N-th case starting at I;
`python -m eval.merge` combines shard or per-method runs into the same aggregates.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
from pathlib import Path

from eval.aggregate import aggregate
from ingredients.compute import ComputeParams, compute_params, run_map
from ingredients.files.atomic import write_json, write_jsonl
from ingredients.sampling.benchmark import CASE_ID_PATTERN, Case, read_benchmark
from eval.context import VideoContext
from eval.face_backends import AnalyzerPool
from ingredients.files.hashing import file_sha256
from eval.params import EvalParams, eval_params
from eval.registry import get_metric
from eval.run_layout import RunLayout, read_records
from eval.video_job import evaluate_job, evaluate_video  # noqa: F401 (evaluate_video: the per-video API)
from ingredients.files.atomic import remove_stale_temps
from ingredients.files.video_io import VideoReadError

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


def parse_method(spec: str) -> tuple[str, Path]:
    """'NAME=DIR' -> (NAME, DIR); NAME must be a plain folder name."""
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise ValueError(f"--method {spec!r}: expected NAME=DIR")
    if not CASE_ID_PATTERN.match(name):
        raise ValueError(f"--method {spec!r}: method name {name!r} may only use letters, digits, '.', '_' and '-'")
    return name, Path(folder)


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError as exc:
        raise ValueError(f"--shard {spec!r}: expected I/N, e.g. 0/4") from exc
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {spec!r}: need 0 <= I < N")
    return index, count


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """Digest of the source that determines per-video values (metric modules, matching, face
    analysis, flow, and the face backends), so editing it invalidates cached records."""
    import eval as eval_pkg
    import ingredients.faces as faces_pkg

    root = Path(eval_pkg.__file__).parent
    files = sorted((root / "metrics").glob("*.py")) + [
        root / n for n in ("context.py", "face_matching.py", "video_faces.py", "optical_flow.py", "face_backends.py")
    ] + sorted(Path(faces_pkg.__file__).parent.glob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


WEIGHT_SUFFIXES = {".bin", ".pt", ".pth", ".safetensors", ".onnx", ".dat", ".json"}


@functools.lru_cache(maxsize=4)
def weights_digest(params_json: str) -> dict[str, str]:
    """{path: sha256} of every existing file the params name (face backend, CLIP and RAFT weights;
    a folder counts by its files), so replacing weights in place invalidates cached records."""
    def leaves(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from leaves(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from leaves(v)
        elif isinstance(value, str) and value:
            yield value

    digests = {}
    for leaf in leaves(json.loads(params_json)):
        path = Path(leaf).expanduser()
        if "/" not in leaf and path.suffix not in WEIGHT_SUFFIXES:
            continue  # a name such as a metric or backend, not a path
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path] if path.is_file() else []
        for f in files:
            digests[str(f)] = file_sha256(f)
    return digests


def fingerprint(ctx: VideoContext) -> str:
    """Cache key of one (method, case) evaluation: the inputs' content, the params (and the content
    of the weight files they name) and the code."""
    case = ctx.case
    routing = file_sha256(ctx.routing_path) if ctx.routing_path.is_file() else None
    payload = {
        "version": CACHE_VERSION,
        "case": {"case_id": case.case_id, "prompt": case.prompt, "seed": case.seed,
                 "references": [file_sha256(p) for p in case.references],
                 "targets": [[file_sha256(p) for p in per_id] for per_id in case.targets]},
        "video": file_sha256(ctx.video_path),
        "routing": routing,
        "params": ctx.params.to_dict(),
        "weights": weights_digest(json.dumps(ctx.params.to_dict(), sort_keys=True, default=str)),
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def failed_record(method: str, case_id: str, params: EvalParams, exc: BaseException) -> dict:
    """The record of a video whose evaluation raised (or whose worker died): every metric missing
    with the reason; not cached, so the next run tries it again."""
    logger.error("evaluation of %s/%s failed: %s: %s", method, case_id, type(exc).__name__, exc)
    reason = f"evaluation failed: {type(exc).__name__}: {exc}"
    return {"method": method, "case_id": case_id, "metrics": {}, "missing": {name: reason for name in sorted(params.metrics)}}


ABSENT_FILE = "absent.json"


def absent_cases(folder: Path) -> dict[str, str]:
    """{case_id: reason} a method folder declares it has no video for (its absent.json; {} without one)."""
    path = Path(folder) / ABSENT_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a JSON object {{case_id: reason}}")
    return data


def check_method_dirs(methods: dict[str, Path], cases: list[Case]) -> None:
    """Every method folder exists and holds a video for every case it does not declare absent."""
    for name, folder in methods.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"method {name!r}: output folder not found: {folder}")
        declared = absent_cases(folder)
        absent = [c.case_id for c in cases if not (folder / f"{c.case_id}.mp4").is_file() and c.case_id not in declared]
        if absent:
            shown = ", ".join(f"{a}.mp4" for a in absent[:5]) + (" ..." if len(absent) > 5 else "")
            raise FileNotFoundError(
                f"method {name!r}: {len(absent)} of {len(cases)} videos missing in {folder}: {shown}; "
                "generate them, or evaluate a benchmark that lists only the cases present"
            )


def evaluate(benchmark: str | os.PathLike, methods: dict[str, Path], out_dir: str | os.PathLike,
             params: EvalParams | None = None, shard: tuple[int, int] = (0, 1),
             analyzers: AnalyzerPool | None = None, compute: ComputeParams | None = None) -> dict:
    """Evaluate `methods` ({name: folder}) on a benchmark into `out_dir` on the `compute` engine
    (default: this process); returns metrics.json's dict."""
    params = params or EvalParams()
    for name in params.metrics:
        get_metric(name)  # fail fast on unknown names
    cases = read_benchmark(benchmark)[shard[0]::shard[1]]
    if not cases:
        raise ValueError(f"shard {shard[0]}/{shard[1]} of {benchmark} has no cases")
    if not methods:
        raise ValueError("no --method given")
    check_method_dirs(methods, cases)
    analyzers = analyzers or AnalyzerPool(params.face_backend_options)
    analyzers.check_names(params.face_backends)
    layout = RunLayout(Path(out_dir))
    remove_stale_temps(layout.root, recursive=False)  # a killed run's temps; not to be cached with OUT
    remove_stale_temps(layout.root / "cache")
    records = []
    jobs = []
    for method, folder in methods.items():
        declared = absent_cases(folder)
        for case in cases:
            if case.case_id in declared and not (folder / f"{case.case_id}.mp4").is_file():
                reason = f"no video: {declared[case.case_id]}"
                records.append({"method": method, "case_id": case.case_id, "metrics": {},
                                "missing": {name: reason for name in sorted(params.metrics)}})
            else:
                jobs.append((method, folder, case))
    n_absent = len(records)
    todo = []
    for method, folder, case in jobs:
        key = fingerprint(VideoContext(method, folder, case, params, analyzers))
        cache_path = layout.cache_record(method, case.case_id)
        if cache_path.is_file():
            cached = json.loads(cache_path.read_text(encoding="utf-8"))
            if cached.get("fingerprint") == key:
                records.append(cached["record"])
                continue
        todo.append((method, folder, case, key))
    reused = len(records) - n_absent
    compute = compute or ComputeParams()
    # in this process the analyzers are shared; a Ray worker builds its own once
    work = functools.partial(evaluate_job, layout=layout, params=params,
                             analyzers=analyzers if compute.engine == "local" else None)
    for (method, _, case, _), record in run_map(work, todo, compute, desc="evaluate"):
        records.append(failed_record(method, case.case_id, params, record) if isinstance(record, BaseException) else record)
    logger.info("evaluated %d videos (%d from cache, %d declared absent) into %s", len(jobs), reused, n_absent, layout.root)
    records.sort(key=lambda r: (r["method"], r["case_id"]))
    write_json(layout.params, {"eval": params.to_dict()})
    write_json(layout.sources, {"benchmark": str(Path(benchmark).resolve()),
                                "methods": {m: str(Path(f).resolve()) for m, f in sorted(methods.items())}})
    write_jsonl(layout.per_video, records)
    return write_aggregates(layout, params)


def write_aggregates(layout: RunLayout, params: EvalParams) -> dict:
    """Compute metrics.json and missing.json from the run's per_video.jsonl."""
    metrics, missing = aggregate(read_records(layout.per_video), params, layout)
    write_json(layout.metrics, metrics)
    write_json(layout.missing, missing)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", required=True, help="benchmark JSONL")
    parser.add_argument("--method", action="append", default=[], metavar="NAME=DIR",
                        help="a method's output folder of {case_id}.mp4 (repeatable)")
    parser.add_argument("--methods-dir", action="append", default=[], metavar="DIR",
                        help="a folder whose sub-folders are methods, named after them (repeatable)")
    parser.add_argument("--out", required=True, help="evaluation output folder")
    parser.add_argument("--params", default=None, help="params.yaml with an eval: section")
    parser.add_argument("--shard", default="0/1", metavar="I/N", help="evaluate every N-th case from I")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    specs = list(args.method)
    for parent in args.methods_dir:
        subdirs = sorted(p for p in Path(parent).iterdir() if p.is_dir()) if Path(parent).is_dir() else []
        if not subdirs:
            parser.error(f"--methods-dir {parent}: no method sub-folders")
        specs += [f"{p.name}={p}" for p in subdirs]
    if not specs:
        parser.error("give at least one --method NAME=DIR or --methods-dir DIR")
    methods: dict[str, Path] = {}
    for spec in specs:
        name, folder = parse_method(spec)
        if name in methods:
            parser.error(f"method {name!r} given twice")
        methods[name] = folder
    metrics = evaluate(args.benchmark, methods, args.out, eval_params(args.params), parse_shard(args.shard),
                       compute=compute_params(args.params))
    logger.info("metrics: %s", json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
