"""`python -m study.mlflow_eval --params params.yaml --eval outputs/eval`: log an evaluation to MLflow, one MLflow run per method, tagged, with the eval params, the
method's aggregate metrics (overall, and per identity count K as `by_k.<K>.<metric>`), the data the
evaluate stage read (dataset inputs, DVC's hashes) and the run's files as artifacts.

The method runs nest under their study run's parent (`ingredients.mlflow_run.StudyRun`), which gets
the headline numbers: the overall metrics of `ours` and of the key baselines, as `<method>/<metric>`,
so the runs table's study rows and *Compare* on them are the ablation table.

Tags: stage=evaluate, method, eval_dir, benchmark, git_revision (of the working directory, or
'unknown'), dvc_experiment (env DVC_EXP_NAME when DVC runs the stage), plus any `tags` given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from eval.aggregate import flat_items, split_by_k
from eval.run_layout import RunLayout
from ingredients.config import flatten, load_params, param_text
from ingredients.mlflow_run import (BASELINE_TAG, dvc_inputs, ensure_experiment, ensure_study_parent, git_revision,
                                    log_inputs, resolve_tracking_uri, study_run, tracking_params)

logger = logging.getLogger(__name__)

# the methods whose overall numbers a study run's parent holds: ours, the method without identity
# (what identity conditioning adds) and the oracle (the references pasted in: the metrics' ceiling)
HEADLINE_METHODS = ("ours", "no_identity", "oracle")


def headline_metrics(metrics: dict) -> dict[str, float]:
    """{"ours/face_sim/dlib": 0.41, ...}: the overall metrics of the `HEADLINE_METHODS` present."""
    return {f"{method}/{name}": float(value) for method in HEADLINE_METHODS if method in metrics
            for name, value in split_by_k(metrics[method])[0].items()}


def log_to_mlflow(out_dir: str | os.PathLike, tracking_uri: str, experiment: str,
                  tags: dict[str, str] | None = None, artifact_location: str | None = None,
                  params_file: Path | None = None) -> dict[str, str]:
    """Log every method of the evaluation in `out_dir`, nested under the study run of `params_file`,
    and the headline numbers on that parent; returns {method: MLflow run id}.

    `artifact_location` is used when the experiment is created (default: the project root's `mlruns/`,
    so logging from a repo does not scatter ./mlruns folders).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow.entities import Metric

    layout = RunLayout(Path(out_dir))
    if not layout.metrics.is_file():
        raise FileNotFoundError(f"{layout.metrics} not found: run `python -m eval.run ... --out {out_dir}` first")
    metrics = json.loads(layout.metrics.read_text(encoding="utf-8"))
    missing = json.loads(layout.missing.read_text(encoding="utf-8")) if layout.missing.is_file() else {}
    params = json.loads(layout.params.read_text(encoding="utf-8")) if layout.params.is_file() else {}
    sources = json.loads(layout.sources.read_text(encoding="utf-8")) if layout.sources.is_file() else {}

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment_id = ensure_experiment(client, experiment, artifact_location)
    study = study_run(params_file)
    parent_id = ensure_study_parent(client, experiment_id, study)
    inputs = dvc_inputs()
    base_tags = {
        "stage": "evaluate",
        "eval_dir": str(layout.root.resolve()),
        "benchmark": str(sources.get("benchmark", "")),
        "git_revision": git_revision(),
        "dvc_experiment": study.name,
        BASELINE_TAG: study.baseline_rev,
        **(tags or {}),
    }
    if inputs:
        with mlflow.start_run(run_id=parent_id):
            log_inputs(inputs)
    run_ids = {}
    for method in sorted(metrics):
        method_tags = {**base_tags, "method": method, "method_dir": str(sources.get("methods", {}).get(method, ""))}
        with mlflow.start_run(experiment_id=experiment_id, run_name=method, tags=method_tags, parent_run_id=parent_id) as run:
            run_id = run.info.run_id
            for key, value in flatten(params).items():
                client.log_param(run_id, key, param_text(value)[:6000])
            for name, value in flat_items(metrics[method]):
                client.log_metric(run_id, name, float(value))
            for name, reason in flat_items(missing.get(method, {})):
                client.set_tag(run_id, f"missing.{name}", reason[:5000])
            log_inputs(inputs, context="evaluate")
            for path in (layout.metrics, layout.missing, layout.per_video, layout.params):
                if path.is_file():
                    client.log_artifact(run_id, str(path))
        run_ids[method] = run_id
        logger.info("logged method %s to MLflow run %s", method, run_id)
    headline = headline_metrics(metrics)
    now = int(time.time() * 1000)
    items = [Metric(name, value, now, 0) for name, value in headline.items()]
    for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(parent_id, metrics=items[i : i + 1000])
    logger.info("study run %s (MLflow run %s): %d headline numbers of %s", study.name, parent_id, len(headline),
                ", ".join(m for m in HEADLINE_METHODS if m in metrics))
    return run_ids


def log_evaluation(params_file: Path, eval_dir: Path) -> dict[str, str]:
    """One MLflow run per evaluated method (the compare view is the results table), to the store and
    experiment of the params' `tracking:` section."""
    tracking = tracking_params(load_params(params_file), str(params_file))
    uri = resolve_tracking_uri(tracking.uri, tracking.fallback_to_local)
    return log_to_mlflow(eval_dir, uri, tracking.experiment, params_file=params_file)


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
