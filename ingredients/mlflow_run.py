"""MLflow runs: one place that opens runs, tags them and checks the server (training logs live
through it; `experiments.mlflow_stage` logs each finished DVC stage through it).

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

from pydantic import BaseModel, ConfigDict

from ingredients.config import flatten, param_text, section, validate_model

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "ingredients"


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
