"""Ray in tests: a 2-CPU local instance with a small object store, token auth off, and a check
that no Ray process outlives the test."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import psutil
import pytest

from ingredients.compute import ComputeParams, ray_session

RAY_PARAMS = ComputeParams(engine="ray", num_cpus=2, object_store_mb=100, max_retries=2)
RAY_PROCESS_NAMES = ("raylet", "gcs_server")


WORKER_ENV = "PYTEST_XDIST_WORKER"  # set by pytest-xdist in each worker (gw0, gw1); inherited by what it starts


def ray_processes() -> set[int]:
    """PIDs of Ray's daemons and workers on this machine (raylet, gcs_server, ray::*) started from this
    pytest worker: those of another xdist worker's Ray test (their environment names another worker)
    are not this test's."""
    worker = os.environ.get(WORKER_ENV)
    found = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if not (proc.info["name"] in RAY_PROCESS_NAMES or cmd.startswith("ray::") or "ray/_private/workers" in cmd
                    or "ray/dashboard/agent.py" in cmd or "ray/_private/runtime_env/agent" in cmd):
                continue
            if worker is not None and proc.environ().get(WORKER_ENV) != worker:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found.add(proc.pid)
    return found


RAY_ENV = {"RAY_AUTH_MODE": "disabled",  # 2.60 would write ~/.ray/auth_token
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}


@contextmanager
def ray_test_env():
    """The environment of a local test instance; on exit, no Ray process started inside remains."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    before = ray_processes()
    try:
        yield RAY_PARAMS
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    deadline = time.monotonic() + 15
    while (left := ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes left behind: {[psutil.Process(p).cmdline()[:2] for p in left if psutil.pid_exists(p)]}"


@pytest.fixture
def ray_env():
    """RAY_PARAMS; each run_map starts and stops its own local instance."""
    with ray_test_env() as params:
        yield params


@pytest.fixture(scope="module")
def ray_shared():
    """RAY_PARAMS with one local instance for the whole module (run_map joins it), shut down after."""
    with ray_test_env() as params, ray_session(params):
        yield params
