"""The MLflow logging step of every DVC stage: `python -m study.mlflow_stage {log-stage,ui}`.

`log-stage` logs a finished stage's params sections, the numbers of its JSON metrics files and its
artifacts as one run; `ui` starts the MLflow UI on the store params.yaml logs to and prints the URLs
of the experiment's runs table and of the comparison of the current study's runs (the workspace's and
each DVC experiment of the current commit, ablations included). Runs are opened, tagged and nested
under their study run by `ingredients.mlflow_run`; an evaluation folder is logged by `study.mlflow_eval`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from ingredients.config import load_params
from ingredients.mlflow_run import (BASELINE_TAG, PARAMS_DIGEST_TAG, STUDY_RUN_TAG, WORKSPACE, TrackingParams, absolute_uri,
                                    numeric_leaves, params_digest, project_root, start_run, tracking_params)

logger = logging.getLogger(__name__)


def tracking_of(params_file: Path) -> TrackingParams:
    """The validated `tracking:` section of a params file."""
    return tracking_params(load_params(params_file), str(params_file))


def log_stage(stage: str, params_file: Path, sections: list[str], metrics_files: list[Path], artifacts: list[Path]) -> str:
    """Log one finished stage: its params sections, the numbers in its JSON metrics files, its artifacts."""
    import mlflow

    params = load_params(params_file)
    tracking = tracking_of(params_file)
    chosen = {name: params.get(name) or {} for name in sections}
    with start_run(stage, chosen, tracking.uri, tracking.experiment, fallback_to_local=tracking.fallback_to_local,
                   params_file=params_file) as run:
        for path in metrics_files:
            leaves = numeric_leaves(json.loads(Path(path).read_text()))
            if leaves:
                mlflow.log_metrics(leaves)
        for path in artifacts:
            path = Path(path)
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            elif path.is_file():
                mlflow.log_artifact(str(path))
            else:
                raise FileNotFoundError(f"artifact to log not found: {path}")
        return run.info.run_id


def ui_command(params_file: Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow ui` command line for the local store that params.yaml's stages log to.

    Binds 127.0.0.1 unless another host is given: the UI has no authentication.
    """
    import sys

    uri = absolute_uri(tracking_of(params_file).uri)
    if uri.startswith(("http://", "https://")):
        raise ValueError(f"tracking.uri in {params_file} is the server {uri}: open it in a browser instead")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
            "--workers", "1"]


# MLflow 3.17's UI shows an experiment by its global GenAI / Model training switch (the browser's
# localStorage, GenAI in a fresh browser) unless the URL names the view: the URLs `ui` prints do.
UI_VIEW = "workflowType=machine_learning"


def study_runs(client: Any, experiment_id: str, commit: str, params: dict) -> list[Any]:
    """The parent runs of the current study: the workspace's newest run with these params (the one
    whose outputs the workspace holds, whatever commit it ran on), then every study run started from
    `commit` (its DVC experiments: the real study, the ablations), oldest first."""
    def search(query: str) -> list[Any]:
        return list(client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"],
                                       max_results=1000))

    workspace = search(f"tags.{STUDY_RUN_TAG} = '{WORKSPACE}' and tags.{PARAMS_DIGEST_TAG} = '{params_digest(params)}'")
    runs = workspace[-1:]
    for run in search(f"tags.{BASELINE_TAG} = '{commit}' and tags.{STUDY_RUN_TAG} LIKE '%'"):
        if run.info.run_id not in {r.info.run_id for r in runs}:
            runs.append(run)
    return runs


def ui_urls(params_file: Path, base: str) -> dict[str, str]:
    """{"runs": the experiment's runs table, "compare": the comparison view of `study_runs`} on the UI
    at `base`; empty when the store holds no run yet, no "compare" for fewer than two study runs."""
    uri = absolute_uri(tracking_of(params_file).uri)
    if not Path(uri.removeprefix("sqlite:///")).is_file():
        return {}
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking_of(params_file).experiment)
    if experiment is None:
        return {}
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=project_root())
    runs = study_runs(client, experiment.experiment_id, head.stdout.strip(), load_params(params_file))
    urls = {"runs": f"{base}/#/experiments/{experiment.experiment_id}/runs?{UI_VIEW}"}
    if len(runs) >= 2:
        ids = json.dumps([r.info.run_id for r in runs], separators=(",", ":"))
        experiments = urllib.parse.quote(json.dumps([experiment.experiment_id]))
        urls["compare"] = f"{base}/#/compare-runs?runs={urllib.parse.quote(ids)}&experiments={experiments}&{UI_VIEW}"
        urls["compared"] = ", ".join(r.info.run_name for r in runs)
    return urls


def main(argv: list[str] | None = None) -> None:
    """`python -m study.mlflow_stage {log-stage,ui} ...`: the MLflow logging step of DVC stages,
    and the UI on the local store (evaluation: `python -m study.mlflow_eval`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m study.mlflow_stage", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("log-stage", help="log a finished stage's params, metrics and artifacts")
    s.add_argument("--stage", required=True)
    s.add_argument("--params", type=Path, default=Path("params.yaml"))
    s.add_argument("--section", action="append", default=[], help="params section to log (repeat)")
    s.add_argument("--metrics", type=Path, action="append", default=[], help="JSON file whose numbers are logged")
    s.add_argument("--artifact", type=Path, action="append", default=[], help="file or folder to attach")
    u = sub.add_parser("ui", help="start the MLflow UI on the local store (127.0.0.1 unless --host)")
    u.add_argument("--params", type=Path, default=Path("params.yaml"))
    u.add_argument("--host", default="127.0.0.1", help="interface to bind; 0.0.0.0 exposes the UI to the network")
    u.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "ui":
        cmd = ui_command(args.params, args.host, args.port)
        base = f"http://{args.host}:{args.port}"
        logger.info("MLflow UI on %s (%s)", base, " ".join(cmd[1:]))
        urls = ui_urls(args.params, base)
        if not urls:
            logger.info("no runs logged yet: `dvc repro` logs one per stage")
        else:  # the URLs are the command's output
            print(f"runs (one row per study run; its stage and method runs nested): {urls['runs']}", flush=True)  # noqa: T201
            if "compare" in urls:
                print(f"compare {urls['compared']}: {urls['compare']}", flush=True)  # noqa: T201
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.execv(cmd[0], cmd)  # the UI takes over this process: its PID is this command's
    else:
        run_id = log_stage(args.stage, args.params, args.section, args.metrics, args.artifact)
        logger.info("logged stage %s to MLflow run %s", args.stage, run_id)


if __name__ == "__main__":
    main()
