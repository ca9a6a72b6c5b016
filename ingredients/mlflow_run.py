"""MLflow runs: one place that opens runs, tags them and checks the server (training logs live
through it; `study.mlflow_stage` logs each finished DVC stage through it).

Runs are tagged with the stage, the DVC experiment name (`DVC_EXP_NAME`, set by `dvc exp run`) and the
git revision. Every run nests under the parent run of its study run (`StudyRun`: a `dvc repro` in the
workspace, or one DVC experiment), found by its tags or created by the first stage that runs in it, so
the UI's runs table has one row per study run and ablation. A run started by DVC logs the data its
stage depends on as MLflow dataset inputs, with DVC's hash as the digest (`dvc_inputs`). The default store is a SQLite
file in the repository; an `http(s)://` URI points at a server, which is checked before any work is
done (an unreachable server fails fast, or falls back to the local store when configured).

One store per project: the local store and its artifacts live in the DVC project's root, which DVC
names in `$DVC_ROOT` for every stage it runs; for a queued or temp-dir experiment (run in a temporary
copy under `.dvc/tmp/exps/`, deleted afterwards) that is the project that queued it. So workspace,
queued and temp-dir runs all land where `mlflow ui` looks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ingredients.config import flatten, load_params, param_text, parse_yaml, section, validate_model

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # relative to the project root (`project_root`)
DEFAULT_EXPERIMENT = "ingredients"
ARTIFACTS_DIR = "mlruns"
# The experiment's kind, as MLflow 3 records it (the UI's ExperimentKind enum; MLflow 3.17's Python
# package has no constant for it): model training, not GenAI. MLflow 3.17's UI itself shows a browser's
# first visit in its GenAI view unless the URL names the view (`study.mlflow_stage.UI_VIEW`).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
WORKSPACE = "workspace"  # the study run of a plain `dvc repro` (no DVC experiment name)
STUDY_RUN_TAG = "study_run"  # on a study run's parent run only: its name
BASELINE_TAG = "dvc_baseline_rev"  # the commit the study run started from
PARAMS_DIGEST_TAG = "params_digest"  # of the study run's whole params file


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


def ensure_experiment(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment `name`, a model-training experiment (`MODEL_TRAINING_KIND`), created with
    its artifacts in `artifact_location` (default: the project root's `mlruns/`; MLflow's default is
    relative to the working directory, a temporary copy in a queued run) when new.

    An existing experiment without a kind, or with one the UI only inferred, is given the kind; a
    kind someone chose is kept."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=artifact_location or (project_root() / ARTIFACTS_DIR).as_uri(),
                                         tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    kind = found.tags.get(EXPERIMENT_KIND_TAG, "")
    if kind in ("", "no_inferred_type") or kind.endswith("_inferred"):
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return found.experiment_id


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


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of `git ARGS` in `cwd`, or None when git fails there (no repository, unknown revision)."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=cwd).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


@dataclass(frozen=True)
class StudyRun:
    """One run of the study as MLflow shows it: a `dvc repro` in the workspace, or one DVC experiment
    (`dvc exp run`, queued or not: DVC names it in `DVC_EXP_NAME` and its start commit in
    `DVC_EXP_BASELINE_REV`). Its parent run holds the params that differ from the commit's params file
    and, once evaluated, the headline numbers; every stage and method run nests under it.

    It is told apart from another by name, start commit and a digest of its whole params file, so a
    workspace rerun with other params is a new row, and a rerun DVC skips logs nothing at all."""

    name: str
    baseline_rev: str
    params_digest: str
    changed: dict[str, Any] = field(default_factory=dict)  # {"train.stage2.routing.weight": 0.0}
    baseline_note: str = ""  # why no params could be compared with the commit's (empty when they were)

    @property
    def tags(self) -> dict[str, str]:
        """The tags that find this study run's parent run."""
        return {STUDY_RUN_TAG: self.name, BASELINE_TAG: self.baseline_rev, PARAMS_DIGEST_TAG: self.params_digest}


def params_digest(params: Mapping[str, Any]) -> str:
    """A short digest of loaded params (key order and YAML formatting aside: `-S` rewrites the file)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_params(baseline: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened keys whose value in `params` differs from `baseline` ("<absent>": removed)."""
    old, new = flatten(baseline), flatten(params)
    return {key: new.get(key, "<absent>") for key in sorted(old.keys() | new.keys()) if old.get(key, "<absent>") != new.get(key, "<absent>")}


def committed_params(rev: str, params_file: Path) -> Mapping[str, Any] | None:
    """`params_file` as commit `rev` holds it (None when git cannot show it). Looked up in the
    working copy, then in `project_root()` (a queued experiment's copy may lack the commit)."""
    params_file = Path(params_file).resolve()
    places = [params_file.parent]
    try:
        places.append(project_root() / params_file.parent.relative_to(Path.cwd().resolve()))
    except ValueError:
        pass
    for place in places:
        text = _git(place, "show", f"{rev}:./{params_file.name}")
        if text is not None:
            return parse_yaml(text) or {}
    return None


def study_run(params_file: Path | None = None) -> StudyRun:
    """The study run this process belongs to: the DVC experiment DVC runs it in (`DVC_EXP_NAME`,
    `DVC_EXP_BASELINE_REV`), else the workspace at the project's HEAD; `params_file` is the params
    file it was configured from (None: a run without one, e.g. a trainer built in Python)."""
    name = os.environ.get("DVC_EXP_NAME") or WORKSPACE
    rev = os.environ.get("DVC_EXP_BASELINE_REV") or (_git(project_root(), "rev-parse", "HEAD") or "").strip() or "unknown"
    if params_file is None:
        return StudyRun(name, rev, params_digest({}), baseline_note="no params file")
    params = load_params(params_file)
    baseline = committed_params(rev, params_file) if rev != "unknown" else None
    if baseline is None:
        return StudyRun(name, rev, params_digest(params), baseline_note=f"{params_file} is not in commit {rev}")
    return StudyRun(name, rev, params_digest(params), changed_params(baseline, params))


def _filter_value(value: str) -> str:
    """`value` quoted for an MLflow search filter."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"cannot search MLflow for a value with both quote characters: {value!r}")


def ensure_study_parent(client: Any, experiment_id: str, study: StudyRun) -> str:
    """The id of `study`'s parent run: found by its tags, else created (finished at once: it holds
    numbers, its children run) with the params that differ from the commit's."""
    from mlflow.entities import Param

    query = " and ".join(f"tags.{key} = {_filter_value(value)}" for key, value in study.tags.items())
    found = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        return found[0].info.run_id
    note = (f"DVC experiment `{study.name}`" if study.name != WORKSPACE else "`dvc repro` in the workspace") + \
        f" from commit {study.baseline_rev}: its stage and method runs are nested below. " + \
        (f"Params changed from the commit's: {len(study.changed)}." if not study.baseline_note else
         f"No params compared: {study.baseline_note}.")
    run = client.create_run(experiment_id, run_name=study.name, tags={
        **study.tags, "dvc_experiment": study.name, "git_revision": study.baseline_rev, "mlflow.note.content": note})
    run_id = run.info.run_id
    items = [Param(key, param_text(value)[:6000]) for key, value in study.changed.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i : i + 100])
    client.set_terminated(run_id, "FINISHED")
    logger.info("MLflow parent run %s for study run %s (commit %s)", run_id, study.name, study.baseline_rev)
    return run_id


@dataclass(frozen=True)
class DataInput:
    """A data dependency of a DVC stage: its path as dvc.yaml names it, DVC's hash of it (md5; a
    folder's ends in `.dir`, as in dvc.lock), and its place in the project."""

    name: str
    digest: str
    uri: str


def dvc_inputs(stage: str | None = None) -> list[DataInput]:
    """The data a DVC stage reads: its deps (code files, `*.py`, and params left out), hashed by DVC
    as `dvc.lock` records them (DVC's state makes an unchanged folder cheap). `stage`: the stage's
    name (default `$DVC_STAGE`, which DVC sets for the stage it runs; none outside DVC: [])."""
    stage = stage or os.environ.get("DVC_STAGE")
    if not stage:
        return []
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo() as repo:  # the working copy DVC runs the stage in (a queued experiment's temporary copy)
        (found,) = repo.stage.collect(stage)
        return [DataInput(dep.def_path, dep.get_hash().value, (project_root() / dep.def_path).as_uri())
                for dep in found.deps if not isinstance(dep, ParamsDependency) and not dep.def_path.endswith(".py")]


def log_inputs(inputs: list[DataInput], context: str | None = None) -> None:
    """Log `inputs` as MLflow dataset inputs of the active run (name, source, DVC's digest), with the
    stage that read them as the context (none on a study run's parent: its stages read them)."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    for item in inputs:
        mlflow.log_input(MetaDataset(LocalArtifactDatasetSource(item.uri), name=item.name, digest=item.digest), context=context)


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
    params_file: Path | None = None,
) -> Iterator[Any]:
    """Open an MLflow run for a stage under its study run's parent (`study_run(params_file)`), log its
    params (flattened), the standard tags and the data its DVC stage reads (`dvc_inputs`, on the
    parent too, so its row names the data); yields the run."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = resolve_tracking_uri(tracking_uri, fallback_to_local)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment_id = ensure_experiment(client, experiment)
    mlflow.set_experiment(experiment_id=experiment_id)
    study = study_run(params_file)
    parent_id = ensure_study_parent(client, experiment_id, study)
    inputs = dvc_inputs()
    if inputs:
        with mlflow.start_run(run_id=parent_id):
            log_inputs(inputs)
    all_tags = {
        "stage": stage,
        "dvc_experiment": study.name,
        BASELINE_TAG: study.baseline_rev,
        "git_revision": git_revision(),
        **dict(tags or {}),
    }
    with mlflow.start_run(run_name=run_name or stage, tags=all_tags, parent_run_id=parent_id) as run:
        if params:
            items = [(key, param_text(value)[:6000]) for key, value in flatten(params).items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                mlflow.log_params(dict(items[i : i + 100]))
        log_inputs(inputs, context=stage)
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
