"""The compute engine: the `compute:` schema and run_map on the local engine and on Ray."""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import pytest

from ingredients.compute import ComputeParams, compute_params, ray_session, run_map
from ingredients.config import ParamsError, validate_model
from tests.ray_helpers import ray_env  # noqa: F401 (fixture)


def _square(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x


def _die_on(x: int, victim: int) -> int:
    if x == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _record_and_sleep(x: int, folder: str) -> int:
    import time

    Path(folder, f"{x}.pid").write_text(str(os.getpid()))
    time.sleep(120)
    return x


def test_a_dead_local_worker_costs_only_its_own_item():
    """The OOM killer takes one pool worker: the pool breaks and every unfinished item with it; they
    rerun, each in a process of its own, and only the item that kills its worker every time fails."""
    from concurrent.futures.process import BrokenProcessPool

    out = dict(run_map(functools.partial(_die_on, victim=1), range(6), ComputeParams(max_retries=1), workers=2))
    assert {k: v for k, v in out.items() if k != 1} == {0: 0, 2: 2, 3: 3, 4: 4, 5: 5}
    assert isinstance(out[1], BrokenProcessPool)


def test_killing_the_stage_kills_its_pool_workers(tmp_path):
    """SIGKILL of the stage (the parent): its pool workers die with it instead of working on."""
    import subprocess
    import sys
    import time

    script = ("import functools, sys\n"
              "from ingredients.compute import run_map\n"
              "from tests.test_compute import _record_and_sleep\n"
              "for _ in run_map(functools.partial(_record_and_sleep, folder=sys.argv[1]), range(2), workers=2): pass\n")
    stage = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*.pid"))) < 2:
        assert stage.poll() is None and time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.2)
    workers = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    stage.send_signal(signal.SIGKILL)
    stage.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, f"pool workers {workers} outlived the killed stage"
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_schema_names_the_key(tmp_path):
    assert compute_params(None) == ComputeParams()
    with pytest.raises(ParamsError, match=r"compute\.engine: .*got 'spark'"):
        validate_model(ComputeParams, {"engine": "spark"}, "compute")
    with pytest.raises(ParamsError, match=r"compute\.address: .*'auto'"):
        validate_model(ComputeParams, {"address": "localhost"}, "compute")
    with pytest.raises(ParamsError, match=r"compute\.workers: unknown key; allowed keys here: .*num_cpus"):
        validate_model(ComputeParams, {"workers": 2}, "compute")
    with pytest.raises(ParamsError, match="num_cpus and object_store_mb size a local Ray instance"):
        validate_model(ComputeParams, {"address": "auto", "num_cpus": 2}, "compute")
    params = tmp_path / "params.yaml"
    params.write_text("compute:\n  engine: ray\n  address: head:6379\n  task_gpus: 0.5\n")
    assert compute_params(params) == ComputeParams(engine="ray", address="head:6379", task_gpus=0.5)


def test_a_ray_client_address_without_the_client_extra_is_refused_at_validation(monkeypatch):
    """`ray://` needs `ray[client]` (grpcio), which the project does not install: refused when the
    params are validated, naming the install command, not when the stage is half way."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a))
    with pytest.raises(ParamsError, match=r"compute\.address: .*pip install 'ray\[client\]==2\.60\.0'"):
        validate_model(ComputeParams, {"engine": "ray", "address": "ray://head:10001"}, "compute")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_address_fails_within_the_timeout_naming_the_key(address, monkeypatch):
    """Ray's own connection attempt to a dead address retried for over 10 minutes, naming nothing."""
    import importlib.util
    import time

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real("json") if name == "grpc" else real(name, *a))
    params = ComputeParams(engine="ray", address=address, connect_timeout_s=2)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"compute\.address: nothing answers at '{address}' within 2 s"):
        dict(run_map(_square, range(2), params))
    assert time.monotonic() - start < 10
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize("workers", [1, 2])
def test_local_engine_returns_results_and_exceptions(workers):
    out = dict(run_map(_square, range(5), workers=workers))
    assert {k: v for k, v in out.items() if k != 3} == {0: 0, 1: 1, 2: 4, 4: 16}
    assert isinstance(out[3], ValueError) and str(out[3]) == "three"


def test_ray_engine_exceptions_and_dead_workers_are_results(ray_env):
    with ray_session(ray_env) as ray:  # one instance for both maps; shut down on exit
        out = dict(run_map(_square, range(5), ray_env))
        assert {k: v for k, v in out.items() if k != 3} == {0: 0, 1: 1, 2: 4, 4: 16}
        assert isinstance(out[3], ValueError) and str(out[3]) == "three"  # the cause, not Ray's wrapper
        # a worker that dies on every try: counted after max_retries, the other items finish
        no_retry = ray_env.model_copy(update={"max_retries": 0})
        out = dict(run_map(functools.partial(_die_on, victim=1), range(3), no_retry))
        assert ray.is_initialized()
    assert not ray.is_initialized()
    assert out[0] == 0 and out[2] == 2
    assert type(out[1]).__name__ == "WorkerCrashedError"
