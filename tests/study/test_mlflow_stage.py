"""MLflow services: the UI command binds 127.0.0.1, an unreachable server fails fast with a clear
message (or falls back to the local store when configured), and a failed log keeps DVC's files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from study.mlflow_stage import log_stage, ui_command
from ingredients.mlflow_run import TrackingUnavailable

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params(tmp_path: Path, **tracking) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tracking": {"experiment": "test", **tracking}, "sample": {"steps": 3}}))
    return path


def _listening_hosts(port: int) -> set[str]:
    """Local addresses in LISTEN state on `port`, from /proc/net/tcp{,6}."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                hosts.add(address)
    return hosts


def test_the_readme_documents_the_ui_command():
    assert "python -m study.mlflow_stage ui" in (ROOT / "README.md").read_text()


def test_ui_binds_loopback_only_and_stops_by_pid(tmp_path):
    port = _free_port()
    cmd = [sys.executable, "-m", "study.mlflow_stage", "ui", "--params", str(_params(tmp_path)), "--port", str(port)]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200
                break
            except OSError:
                assert server.poll() is None, "the UI exited before answering"
                assert time.monotonic() < deadline, "the UI did not answer within 90 s"
                time.sleep(0.5)
        assert _listening_hosts(port) == {"0100007F"}  # 127.0.0.1, and nothing else (no 0.0.0.0, no ::)
        assert (tmp_path / "mlflow.db").is_file()  # the store the stages log to, relative to the repo
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert _listening_hosts(port) == set()


def test_ui_command_refuses_a_server_uri(tmp_path):
    with pytest.raises(ValueError, match="is the server http://example.invalid:5000: open it in a browser"):
        ui_command(_params(tmp_path, uri="http://example.invalid:5000"))
    assert ui_command(_params(tmp_path), host="0.0.0.0")[-5:] == ["0.0.0.0", "--port", "5000", "--workers", "1"]


def test_unreachable_server_fails_fast_naming_the_uri_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=rf"MLflow tracking server {uri} is unreachable .*--host 127\.0\.0\.1"):
        log_stage("sample", _params(tmp_path, uri=uri), ["sample"], [], [])
    assert time.monotonic() - start < 5
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged elsewhere behind the user's back


def test_unreachable_server_falls_back_to_the_local_store_when_configured(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"videos": 6, "timing": {"seconds": 1.5}}))
    params = _params(tmp_path, uri=f"http://127.0.0.1:{_free_port()}", fallback_to_local=True)
    run_id = log_stage("sample", params, ["sample"], [metrics], [])
    run = mlflow.MlflowClient(tracking_uri="sqlite:///mlflow.db").get_run(run_id)
    assert run.data.metrics == {"videos": 6.0, "timing.seconds": 1.5}
    assert run.data.params == {"sample.steps": "3"} and run.data.tags["stage"] == "sample"


def test_failed_evaluation_logging_keeps_the_metrics_file(tmp_path):
    """The evaluate stage's logging step fails on an unreachable server: clear exit, metrics.json untouched."""
    out = tmp_path / "eval"
    out.mkdir()
    content = json.dumps({"ours": {"face_sim/dlib": 0.5}}, indent=2) + "\n"
    (out / "metrics.json").write_text(content)
    params = _params(tmp_path, uri=f"http://127.0.0.1:{_free_port()}")
    proc = subprocess.run([sys.executable, "-m", "study.mlflow_eval", "--params", str(params),
                           "--eval", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "is unreachable" in proc.stderr and "set tracking.uri to a local store" in proc.stderr
    assert (out / "metrics.json").read_text() == content
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_a_stage_in_a_queued_experiments_temporary_copy_logs_to_the_projects_store(tmp_path, monkeypatch):
    """A queued experiment runs in DVC's temporary copy `.dvc/tmp/exps/<tmp>/`, deleted afterwards; DVC
    names the queuing project in $DVC_ROOT. The run, and its artifacts, must land in that project."""
    import mlflow

    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(project))
    monkeypatch.setenv("DVC_EXP_NAME", "no_routing_loss")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    artifact = copy / "report.json"
    artifact.write_text("{}")
    run_id = log_stage("curate", _params(copy), ["sample"], [], [artifact])
    assert not (copy / "mlflow.db").exists() and not (copy / "mlruns").exists()
    run = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").get_run(run_id)
    assert run.data.tags["dvc_experiment"] == "no_routing_loss" and run.data.tags["stage"] == "curate"
    assert run.info.artifact_uri.startswith((project / "mlruns").as_uri())
    assert list((project / "mlruns").rglob("report.json"))
    assert ui_command(_params(copy))[5] == f"sqlite:///{project / 'mlflow.db'}"
