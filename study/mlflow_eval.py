"""`python -m study.mlflow_eval --params params.yaml --eval outputs/eval`: log an evaluation to MLflow, one MLflow run per method, tagged, with the eval params, the
method's aggregate metrics (overall, and per identity count K as `by_k.<K>.<metric>`) and the
run's files as artifacts.

Tags: stage=evaluate, method, eval_dir, benchmark, git_revision (of the working directory, or
'unknown'), dvc_experiment (env DVC_EXP_NAME when DVC runs the stage), plus any `tags` given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from eval.aggregate import flat_items
from eval.run_layout import RunLayout
from ingredients.config import flatten, load_params, param_text
from ingredients.mlflow_run import ensure_experiment, git_revision, resolve_tracking_uri, tracking_params

logger = logging.getLogger(__name__)


def log_to_mlflow(out_dir: str | os.PathLike, tracking_uri: str, experiment: str,
                  tags: dict[str, str] | None = None, artifact_location: str | None = None) -> dict[str, str]:
    """Log every method of the evaluation in `out_dir`; returns {method: MLflow run id}.

    `artifact_location` is used when the experiment is created (default: the project root's `mlruns/`,
    so logging from a repo does not scatter ./mlruns folders).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    layout = RunLayout(Path(out_dir))
    if not layout.metrics.is_file():
        raise FileNotFoundError(f"{layout.metrics} not found: run `python -m eval.run ... --out {out_dir}` first")
    metrics = json.loads(layout.metrics.read_text(encoding="utf-8"))
    missing = json.loads(layout.missing.read_text(encoding="utf-8")) if layout.missing.is_file() else {}
    params = json.loads(layout.params.read_text(encoding="utf-8")) if layout.params.is_file() else {}
    sources = json.loads(layout.sources.read_text(encoding="utf-8")) if layout.sources.is_file() else {}

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None and artifact_location:
        experiment_id = client.create_experiment(experiment, artifact_location=artifact_location)
    else:
        experiment_id = ensure_experiment(client, experiment)
    base_tags = {
        "stage": "evaluate",
        "eval_dir": str(layout.root.resolve()),
        "benchmark": str(sources.get("benchmark", "")),
        "git_revision": git_revision(),
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", ""),
        **(tags or {}),
    }
    run_ids = {}
    for method in sorted(metrics):
        run = client.create_run(experiment_id, run_name=method, tags={**base_tags, "method": method,
                                                                     "method_dir": str(sources.get("methods", {}).get(method, ""))})
        run_id = run.info.run_id
        try:
            for key, value in flatten(params).items():
                client.log_param(run_id, key, param_text(value)[:6000])
            for name, value in flat_items(metrics[method]):
                client.log_metric(run_id, name, float(value))
            for name, reason in flat_items(missing.get(method, {})):
                client.set_tag(run_id, f"missing.{name}", reason[:5000])
            for path in (layout.metrics, layout.missing, layout.per_video, layout.params):
                if path.is_file():
                    client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, "FINISHED")
        except Exception:
            client.set_terminated(run_id, "FAILED")
            raise
        run_ids[method] = run_id
        logger.info("logged method %s to MLflow run %s", method, run_id)
    return run_ids


def log_evaluation(params_file: Path, eval_dir: Path) -> dict[str, str]:
    """One MLflow run per evaluated method (the compare view is the results table), to the store and
    experiment of the params' `tracking:` section."""
    tracking = tracking_params(load_params(params_file), str(params_file))
    uri = resolve_tracking_uri(tracking.uri, tracking.fallback_to_local)
    return log_to_mlflow(eval_dir, uri, tracking.experiment,
                         tags={"dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace")})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.mlflow_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--eval", type=Path, required=True, help="evaluation folder (metrics.json, per_video.jsonl, ...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runs = log_evaluation(args.params, args.eval)
    logger.info("logged %d methods to MLflow: %s", len(runs), runs)


if __name__ == "__main__":
    main()
