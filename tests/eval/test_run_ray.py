"""Evaluation on Ray (a local 2-CPU instance started by the run) gives the local engine's files."""

from __future__ import annotations

import pytest

from eval.baselines import make_no_face, make_oracle
from eval.face_backends import AnalyzerPool
from eval.params import EvalParams
from eval.run import evaluate
from eval.run_layout import RunLayout
from tests.ray_helpers import ray_env  # noqa: F401 (fixture)

N_FRAMES = 12
# video-level, face and aggregate-level metrics (fid_face reads the faces the tasks cached)
PARAMS = EvalParams(max_frames=N_FRAMES, face_frame_stride=3,
                    metrics=("face_sim", "face_found", "id_confusion", "fid_face", "flicker", "clip_score"))
PAIRS = {"pair_a": ("astronaut", "grace"), "pair_b": ("hanks", "t1_a")}


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_ray_engine_gives_the_local_engine_files(tmp_path, make_benchmark, dlib_analyzer, ray_env):
    bench = make_benchmark(tmp_path / "bench", PAIRS)
    methods = {"oracle": make_oracle(bench, tmp_path / "oracle", dlib_analyzer, n_frames=N_FRAMES),
               "no_face": make_no_face(bench, tmp_path / "no_face", n_frames=N_FRAMES)}
    local = evaluate(bench, methods, tmp_path / "local", PARAMS, analyzers=AnalyzerPool(analyzers={"dlib": dlib_analyzer}))
    on_ray = evaluate(bench, methods, tmp_path / "ray", PARAMS, compute=ray_env)
    assert on_ray == local
    a, b = RunLayout(tmp_path / "local"), RunLayout(tmp_path / "ray")
    for name in ("per_video", "metrics", "missing", "params"):
        assert getattr(b, name).read_bytes() == getattr(a, name).read_bytes(), name
    for method in methods:
        for case in PAIRS:  # the tasks wrote the cache: same records and face analyses
            assert b.cache_record(method, case).read_bytes() == a.cache_record(method, case).read_bytes()
            assert b.cache_faces(method, case).read_bytes() == a.cache_faces(method, case).read_bytes()
    # a rerun on Ray reuses every cached record (no task runs)
    assert evaluate(bench, methods, tmp_path / "ray", PARAMS, compute=ray_env) == local


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_ray_engine_through_the_stage_command(tmp_path, make_benchmark, dlib_analyzer, ray_env):
    """`python -m eval.run` exactly as dvc.yaml runs it, with `compute.engine: ray`: eval.run is
    `__main__` there, and cloudpickle ships `__main__`'s functions by value with their globals; the
    work Ray runs must live in an importable module. Same metrics as the local engine."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    bench = make_benchmark(tmp_path / "bench", {"pair_a": ("astronaut", "grace")})
    oracle = make_oracle(bench, tmp_path / "oracle", dlib_analyzer, n_frames=N_FRAMES)
    eval_section = {"max_frames": N_FRAMES, "face_frame_stride": 3, "metrics": list(PARAMS.metrics)}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"eval": eval_section, "compute": ray_env.model_dump(mode="json")}))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "eval.run", "--benchmark", str(bench), "--params", str(params),
         "--out", str(tmp_path / "ray"), "--method", f"oracle={oracle}"],
        cwd=root, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = [line for line in proc.stderr.splitlines() if "evaluation of" in line and "failed" in line]
    assert not failed, failed
    local = evaluate(bench, {"oracle": oracle}, tmp_path / "local", PARAMS,
                     analyzers=AnalyzerPool(analyzers={"dlib": dlib_analyzer}))
    on_ray = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    assert on_ray == local
    assert on_ray["oracle"]["face_sim/dlib"] > 0.5
