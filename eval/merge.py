"""Merge evaluation runs (shards of the cases, or separate methods) into one run folder.

    python -m eval.merge --runs DIR [DIR ...] --out DIR

Concatenates the runs' per-video records (identical duplicates collapse; conflicting ones are an
error), copies their per-video artifacts, and recomputes metrics.json from the merged records,
which equals a single run over the same methods and cases. All runs must use the same params.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from ingredients.files.atomic import atomic_path, write_json, write_jsonl
from eval.params import params_from_dict
from eval.run import write_aggregates
from eval.run_layout import RunLayout, read_records

logger = logging.getLogger(__name__)


def merge_runs(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Merge `run_dirs` into `out_dir`; returns the merged metrics.json dict."""
    if not run_dirs:
        raise ValueError("merge_runs: no run folders given")
    out = RunLayout(Path(out_dir))
    params_dict = None
    merged: dict[tuple[str, str], dict] = {}
    benchmarks: set[str] = set()
    method_dirs: dict[str, str] = {}
    for run_dir in run_dirs:
        src = RunLayout(Path(run_dir))
        if not src.params.is_file():
            raise FileNotFoundError(f"{src.params} not found: {run_dir} is not an evaluation run folder")
        this = json.loads(src.params.read_text(encoding="utf-8"))
        if params_dict is None:
            params_dict = this
        elif this != params_dict:
            raise ValueError(f"{run_dir} was evaluated with different params than {run_dirs[0]}; rerun it with the same --params")
        if src.sources.is_file():
            sources = json.loads(src.sources.read_text(encoding="utf-8"))
            benchmarks.add(sources["benchmark"])
            for name, folder in sources["methods"].items():
                if method_dirs.setdefault(name, folder) != folder:
                    raise ValueError(f"{run_dir}: method {name!r} was read from {folder}, another run read it from {method_dirs[name]}")
        for rec in read_records(src.per_video):
            key = (rec["method"], rec["case_id"])
            if key in merged and merged[key] != rec:
                raise ValueError(f"{run_dir}: record for method {key[0]!r} case {key[1]!r} differs from an earlier run's")
            merged[key] = rec
            faces = src.cache_faces(*key)
            if faces.is_file() and faces.resolve() != out.cache_faces(*key).resolve():
                with atomic_path(out.cache_faces(*key)) as tmp:
                    shutil.copyfile(faces, tmp)
    params = params_from_dict(params_dict["eval"], "params.json:eval")
    write_json(out.params, params_dict)
    if benchmarks:
        if len(benchmarks) > 1:
            raise ValueError(f"the runs evaluated different benchmarks: {sorted(benchmarks)}")
        write_json(out.sources, {"benchmark": benchmarks.pop(), "methods": dict(sorted(method_dirs.items()))})
    write_jsonl(out.per_video, [merged[k] for k in sorted(merged)])
    return write_aggregates(out, params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.merge", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    merge_runs(args.runs, args.out)


if __name__ == "__main__":
    main()
