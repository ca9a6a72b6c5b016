"""The MLflow logging step of every DVC stage: `python -m study.mlflow_stage {log-stage,ui}`.

`log-stage` logs a finished stage's params sections, the numbers of its JSON metrics files and its
artifacts as one run; `ui` starts the MLflow UI on the store params.yaml logs to. Runs are opened and
tagged by `ingredients.mlflow_run`; an evaluation folder is logged by `study.mlflow_eval`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ingredients.config import load_params
from ingredients.mlflow_run import TrackingParams, absolute_uri, numeric_leaves, start_run, tracking_params

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
        logger.info("MLflow UI on http://%s:%d (%s)", args.host, args.port, " ".join(cmd[1:]))
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.execv(cmd[0], cmd)  # the UI takes over this process: its PID is this command's
    else:
        run_id = log_stage(args.stage, args.params, args.section, args.metrics, args.artifact)
        logger.info("logged stage %s to MLflow run %s", args.stage, run_id)


if __name__ == "__main__":
    main()
