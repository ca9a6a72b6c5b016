"""Curation on Ray (a local 2-CPU instance shared by the module's tests) gives the files of the local engine, also when a Ray
worker is SIGKILLed in the middle of a video."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import yaml

from ingredients.data.curate import curate
from ingredients.data.curation_params import CurationParams
from tests.ray_helpers import RAY_PARAMS, ray_shared, ray_test_env  # noqa: F401 (fixture)


def _report_without_timing(path) -> dict:
    """report.json less `throughput`: wall-clock seconds and rates (and the engine's name), the one
    part of the report that depends on the machine and not on the videos."""
    report = json.loads(path.read_text())
    del report["throughput"]
    return report


def assert_same_outputs(out, ref_out) -> None:
    assert (out / "manifest.jsonl").read_bytes() == (ref_out / "manifest.jsonl").read_bytes()
    assert _report_without_timing(out / "report.json") == _report_without_timing(ref_out / "report.json")
    refs = sorted(p.relative_to(ref_out) for p in (ref_out / "refs").rglob("*.png")) + sorted(
        p.relative_to(ref_out) for p in (ref_out / "masks").rglob("*.npz"))
    assert refs and sorted(p.relative_to(out) for p in (out / "refs").rglob("*.png")) + sorted(
        p.relative_to(out) for p in (out / "masks").rglob("*.npz")) == refs
    for rel in refs:
        assert (out / rel).read_bytes() == (ref_out / rel).read_bytes(), rel


def test_the_stage_command_runs_on_ray(tiny_raw, tiny_curated):
    """Issue 20: `compute.engine: ray` through the curate stage's own command, `python -m
    ingredients.data.curate`: the work Ray pickles must live in an importable module, not `__main__`
    (whose globals the driver fills with dlib models: "cannot pickle '_dlib_pybind11...'"). Its own
    local instance (before this module's shared one starts), stopped with the stage."""
    ref_out, _ = tiny_curated
    out = tiny_raw.parent / "ray_cli"  # same depth as the reference: same relative video paths
    params = tiny_raw.parent / "params_ray.yaml"
    params.write_text(yaml.safe_dump({"data": {"source": "synth", "path": str(tiny_raw)}, "curate": {},
                                      "compute": RAY_PARAMS.model_dump(exclude_defaults=True)}))
    with ray_test_env():
        run = subprocess.run([sys.executable, "-m", "ingredients.data.curate", "--params", str(params), "--out", str(out)],
                             capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["throughput"]["engine"] == "ray"
    assert_same_outputs(out, ref_out)


def test_ray_engine_gives_the_local_engine_files(tiny_raw, tiny_curated, ray_shared):
    ref_out, ref_report = tiny_curated
    out = tiny_raw.parent / "ray"  # same depth as the reference: same relative video paths
    report = curate(tiny_raw, out, CurationParams(), ray_shared)
    assert report["throughput"]["engine"] == "ray" and report["throughput"]["run_videos"] == 4
    assert_same_outputs(out, ref_out)
    # only the timing differs; the rest of report.json is byte for byte the local one's
    assert json.dumps(_report_without_timing(out / "report.json")) == json.dumps(_report_without_timing(ref_out / "report.json"))


def _kill_first_task(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a task (its title is `ray::_call` while it works)."""
    me = psutil.Process()
    while not stop.is_set() and not killed:
        for proc in me.children(recursive=True):
            try:
                if proc.cmdline()[:1] == ["ray::_call"]:
                    time.sleep(0.5)  # well inside the video (one takes seconds)
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
                    return
            except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                continue
        time.sleep(0.05)


def test_worker_killed_mid_video_is_retried(tiny_raw, tiny_curated, ray_shared):
    ref_out, _ = tiny_curated
    out = tiny_raw.parent / "ray_kill"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_task, args=(killed, stop), daemon=True)
    killer.start()
    try:
        report = curate(tiny_raw, out, CurationParams(), ray_shared)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was seen running a video"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert report["videos"]["skipped"].get("failed") is None  # the video was retried, not lost
    assert report["throughput"]["run_videos"] == 4
    assert_same_outputs(out, ref_out)
