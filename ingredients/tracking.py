"""MLflow tracking for every stage: one place that opens runs, tags them and checks the server.

Runs are tagged with the stage, the DVC experiment name (`DVC_EXP_NAME`, set by `dvc exp run`) and the
git revision, so the MLflow UI compares stages, methods and ablations. The default store is a SQLite
file in the repository; an `http(s)://` URI points at a server, which is checked before any work is
done (an unreachable server fails fast, or falls back to the local store when configured).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "ingredients"


class TrackingUnavailable(RuntimeError):
    """The configured tracking server cannot be reached."""


def git_revision(cwd: str | Path | None = None) -> str:
    """HEAD of the repository (with '-dirty' when the work tree has changes), or 'unknown'."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=cwd).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               check=True, cwd=cwd).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def check_server(uri: str, timeout: float = 3.0) -> None:
    """Raise TrackingUnavailable when an http(s) tracking server does not answer within `timeout` s."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as e:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({type(e).__name__}); start it "
            f"(`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri {DEFAULT_TRACKING_URI}`) "
            "or set tracking.uri to a local store"
        ) from e


def resolve_tracking_uri(uri: str | None, fallback_to_local: bool = False, timeout: float = 3.0) -> str:
    """The URI to log to: `uri` (default: the repo's SQLite store), checked; optionally falls back."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    try:
        check_server(uri, timeout)
    except TrackingUnavailable:
        if not fallback_to_local:
            raise
        logger.warning("tracking server %s unreachable: logging to the local store %s instead", uri, DEFAULT_TRACKING_URI)
        uri = DEFAULT_TRACKING_URI
    return uri


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value)[:6000]
    return flat


@contextlib.contextmanager
def start_run(
    stage: str,
    params: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    fallback_to_local: bool = False,
) -> Iterator[Any]:
    """Open an MLflow run for a stage, log its params (flattened) and the standard tags; yields the run."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = resolve_tracking_uri(tracking_uri, fallback_to_local)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    all_tags = {
        "stage": stage,
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "git_revision": git_revision(),
        **dict(tags or {}),
    }
    with mlflow.start_run(run_name=run_name or stage, tags=all_tags) as run:
        if params:
            flat = _flatten(params)
            items = list(flat.items())
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                mlflow.log_params(dict(items[i : i + 100]))
        yield run


def _numeric_leaves(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested JSON value as {'a.b': 1.0} (MLflow metric names)."""
    out: dict[str, float] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(_numeric_leaves(value, f"{prefix}{key}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix.rstrip(".").replace("/", "_")] = float(data)
    return out


def log_stage(stage: str, params_file: Path, sections: list[str], metrics_files: list[Path], artifacts: list[Path]) -> str:
    """Log one finished stage: its params sections, the numbers in its JSON metrics files, its artifacts."""
    import json

    import mlflow

    from .config import load_params

    params = load_params(params_file)
    tracking = params.get("tracking") or {}
    chosen = {name: params.get(name) or {} for name in sections}
    with start_run(stage, chosen, tracking.get("uri"), tracking.get("experiment", DEFAULT_EXPERIMENT),
                   fallback_to_local=bool(tracking.get("fallback_to_local", False))) as run:
        for path in metrics_files:
            leaves = _numeric_leaves(json.loads(Path(path).read_text()))
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


def log_evaluation(params_file: Path, eval_dir: Path) -> dict[str, str]:
    """One MLflow run per evaluated method (the compare view is the results table)."""
    from eval.mlflow_log import log_to_mlflow

    from .config import load_params

    tracking = load_params(params_file).get("tracking") or {}
    uri = resolve_tracking_uri(tracking.get("uri"), bool(tracking.get("fallback_to_local", False)))
    return log_to_mlflow(eval_dir, uri, tracking.get("experiment", DEFAULT_EXPERIMENT),
                         tags={"dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace")})


def ui_command(params_file: Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow ui` command line for the local store that params.yaml's stages log to.

    Binds 127.0.0.1 unless another host is given: the UI has no authentication.
    """
    import sys

    from .config import load_params

    uri = (load_params(params_file).get("tracking") or {}).get("uri") or DEFAULT_TRACKING_URI
    if uri.startswith(("http://", "https://")):
        raise ValueError(f"tracking.uri in {params_file} is the server {uri}: open it in a browser instead")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
            "--workers", "1"]


def main(argv: list[str] | None = None) -> None:
    """`python -m ingredients.tracking {log-stage,log-eval,ui} ...`: the MLflow logging step of DVC
    stages, and the UI on the local store."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ingredients.tracking", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("log-stage", help="log a finished stage's params, metrics and artifacts")
    s.add_argument("--stage", required=True)
    s.add_argument("--params", type=Path, default=Path("params.yaml"))
    s.add_argument("--section", action="append", default=[], help="params section to log (repeat)")
    s.add_argument("--metrics", type=Path, action="append", default=[], help="JSON file whose numbers are logged")
    s.add_argument("--artifact", type=Path, action="append", default=[], help="file or folder to attach")
    e = sub.add_parser("log-eval", help="log an evaluation folder, one run per method")
    e.add_argument("--params", type=Path, default=Path("params.yaml"))
    e.add_argument("--eval", type=Path, required=True)
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
    elif args.command == "log-stage":
        run_id = log_stage(args.stage, args.params, args.section, args.metrics, args.artifact)
        logger.info("logged stage %s to MLflow run %s", args.stage, run_id)
    else:
        runs = log_evaluation(args.params, args.eval)
        logger.info("logged %d methods to MLflow: %s", len(runs), runs)


if __name__ == "__main__":
    main()
