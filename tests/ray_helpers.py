"""Ray in tests: a 2-CPU local instance with a small object store, token auth off, and a check
that no Ray process outlives the test."""

from __future__ import annotations

import time

import psutil
import pytest

from ingredients.compute import ComputeParams

RAY_PARAMS = ComputeParams(engine="ray", num_cpus=2, object_store_mb=100, max_retries=2)
RAY_PROCESS_NAMES = ("raylet", "gcs_server")


def ray_processes() -> set[int]:
    """PIDs of Ray's daemons and workers on this machine (raylet, gcs_server, ray::*)."""
    found = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.info["name"] in RAY_PROCESS_NAMES or cmd.startswith("ray::") or "ray/_private/workers" in cmd \
                or "ray/dashboard/agent.py" in cmd or "ray/_private/runtime_env/agent" in cmd:
            found.add(proc.pid)
    return found


@pytest.fixture
def ray_env(monkeypatch):
    """Environment of a local test instance; afterwards, no Ray process started by the test remains."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # 2.60 would write ~/.ray/auth_token
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    before = ray_processes()
    yield RAY_PARAMS
    deadline = time.monotonic() + 15
    while (left := ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes left behind: {[psutil.Process(p).cmdline()[:2] for p in left if psutil.pid_exists(p)]}"
