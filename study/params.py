"""The params schema over all sections: `python -m study.params params.yaml [override.yaml ...]`
validates every section with the schema of the stage that owns it and prints the merged params.

Each stage validates only its own sections when it runs; this module sees them all, so a profile or
an ablation file is checked before `dvc exp run` starts any stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eval.params import EvalParams
from eval.baselines import BaselineParams
from eval.build_benchmark import BenchmarkParams
from ingredients.compute import ComputeParams
from ingredients.config import ParamsError, load_merged, section, validate_model
from ingredients.data.curation_params import CurationParams
from ingredients.data.sources import DataParams, collect_items
from ingredients.data.synth import SynthParams
from ingredients.faces.reference import FaceSettings
from ingredients.launch_params import LaunchParams
from ingredients.mlflow_run import TrackingParams
from ingredients.model_folder.prepare import PrepareParams, full_face_settings
from ingredients.plan.plan_params import PlanParams
from ingredients.sampling.sample import SampleParams
from ingredients.training.stage_spec import COMMON_SECTION, build_stage_spec


def _model(cls) -> Callable[[Mapping[str, Any], str], Any]:
    return lambda data, where: validate_model(cls, data, where)


def _train(data: Mapping[str, Any], where: str) -> Any:
    return {name: build_stage_spec(data, name) for name in data if name != COMMON_SECTION}


SECTIONS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "tracking": _model(TrackingParams),
    "synth": _model(SynthParams),
    "prepare": _model(PrepareParams),
    "faces": _model(FaceSettings),
    "data": _model(DataParams),
    "curate": _model(CurationParams),
    "compute": _model(ComputeParams),
    "train": _train,
    "launch": _model(LaunchParams),
    "benchmark": _model(BenchmarkParams),
    "baselines": _model(BaselineParams),
    "sample": _model(SampleParams),
    "eval": _model(EvalParams),
    "plan": _model(PlanParams),
}


def stage_params(params: Mapping[str, Any], name: str) -> Any:
    """One section, validated into its typed config (errors name the key)."""
    if name not in SECTIONS:
        raise ParamsError(f"unknown params section {name!r}; sections: {', '.join(sorted(SECTIONS))}")
    return SECTIONS[name](section(params, name), name)


def validate_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate every section, then the rules between sections that the stages apply; returns
    {section: typed config}. Unknown sections are errors."""
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"unknown params section(s) {unknown}; allowed: {', '.join(sorted(SECTIONS))}")
    typed = {name: stage_params(params, name) for name in params}
    data = typed.get("data")
    if data is not None and data.source == "list":  # curation's rules for the list's lines, before any stage runs
        try:
            collect_items(data)
        except (OSError, ValueError) as err:
            raise ParamsError(f"data.list_file ({data.list_file} under data.path {data.path}): {err}") from None
    prepare = typed.get("prepare")
    if prepare is not None and prepare.profile == "full":  # the prepare stage's rule: faces.* paths = prepare.full.*
        full_face_settings(prepare, section(params, "faces"))
    return typed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.params", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("params", type=Path)
    parser.add_argument("overrides", type=Path, nargs="*")
    args = parser.parse_args(argv)
    params = load_merged(args.params, tuple(args.overrides))
    try:
        validate_params(params)
    except ParamsError as err:
        raise SystemExit(str(err)) from None
    sys.stdout.write(json.dumps(params, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
