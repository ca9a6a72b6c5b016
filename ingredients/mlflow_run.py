"""MLflow runs: one place that opens runs, tags them and checks the server (training logs live
through it; `study.mlflow_stage` logs each finished DVC stage through it).

Runs are tagged with the stage, the DVC experiment name (`DVC_EXP_NAME`, set by `dvc exp run`) and the
git revision, so the MLflow UI compares stages, methods and ablations. The default store is a SQLite
file in the repository; an `http(s)://` URI points at a server, which is checked before any work is
done (an unreachable server fails fast, or falls back to the local store when configured).

One store per project: the local store and its artifacts live in the DVC project's root, which DVC
names in `$DVC_ROOT` for every stage it runs; for a queued or temp-dir experiment (run in a temporary
copy under `.dvc/tmp/exps/`, deleted afterwards) that is the project that queued it. So workspace,
queued and temp-dir runs all land where `mlflow ui` looks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ingredients.config import flatten, param_text, section, validate_model

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # relative to the project root (`project_root`)
DEFAULT_EXPERIMENT = "ingredients"
ARTIFACTS_DIR = "mlruns"


def project_root() -> Path:
    """The DVC project whose store runs log to: `$DVC_ROOT` (set by DVC for every stage it runs; the
    queuing project for a queued or temp-dir experiment), else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def absolute_uri(uri: str | None) -> str:
    """`uri` (default: the local store) with a relative SQLite path resolved against `project_root()`;
    servers and absolute paths are returned as they are."""
    uri = uri or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(project_root() / uri[len(prefix):])
    return uri


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment `name`, created with its artifacts in the project root (`mlruns/`) when
    new: MLflow's default is relative to the working directory, a temporary copy in a queued run."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=(project_root() / ARTIFACTS_DIR).as_uri())


class TrackingParams(BaseModel):
    """The `tracking:` section: `uri` null = the repository's SQLite store (or $MLFLOW_TRACKING_URI);
    `fallback_to_local` logs there when the server is down. Every stage reads it, training included."""

    model_config = ConfigDict(extra="forbid")
    uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    fallback_to_local: bool = False


def tracking_params(params: Mapping[str, Any], where: str = "params") -> TrackingParams:
    """The validated `tracking:` section of loaded params (defaults when absent)."""
    return validate_model(TrackingParams, section(params, "tracking", where), "tracking")


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
    """The URI to log to: `uri` (default: the project's SQLite store, `absolute_uri`), checked;
    optionally falls back to the local store."""
    uri = absolute_uri(uri or os.environ.get("MLFLOW_TRACKING_URI"))
    try:
        check_server(uri, timeout)
    except TrackingUnavailable:
        if not fallback_to_local:
            raise
        local = absolute_uri(None)
        logger.warning("tracking server %s unreachable: logging to the local store %s instead", uri, local)
        uri = local
    return uri


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
    mlflow.set_experiment(experiment_id=ensure_experiment(mlflow.MlflowClient(uri), experiment))
    all_tags = {
        "stage": stage,
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "git_revision": git_revision(),
        **dict(tags or {}),
    }
    with mlflow.start_run(run_name=run_name or stage, tags=all_tags) as run:
        if params:
            items = [(key, param_text(value)[:6000]) for key, value in flatten(params).items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                mlflow.log_params(dict(items[i : i + 100]))
        yield run


def numeric_leaves(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested JSON value as {'a.b': 1.0} (MLflow metric names)."""
    out: dict[str, float] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(numeric_leaves(value, f"{prefix}{key}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix.rstrip(".").replace("/", "_")] = float(data)
    return out
