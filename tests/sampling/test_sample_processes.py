"""Sampling split across 2 CPU processes (accelerate launch with configs/accelerate/cpu_ddp.yaml,
gloo) gives the files of one process, and a rerun of the 2-process run resumes per rank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from instruments.photo_cases import write_photo_cases
from tests.training.conftest import REPO_ROOT, SMALL_MODEL

METHODS = ("ours", "no_identity")  # ours also writes routing files
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread: reproducible across processes
# routing logits are float32 network outputs: the 2-process run's differ from one process's in the
# last bits (measured: at most 1e-6); the videos (uint8) and samples.json are equal byte for byte
ROUTING_ATOL = 1e-5


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


@pytest.mark.slow  # 3 launches that each load torch and the model: ~1 min idle, 3 min on a loaded 2-core machine
@pytest.mark.timeout(900)
def test_two_processes_give_the_files_of_one(tmp_path):
    from ingredients.model_folder.folder import prepare_tiny_folder

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "the accelerate CLI is not installed beside this Python"
    prepare_tiny_folder(tmp_path / "model", seed=0, **SMALL_MODEL)
    bench = write_photo_cases(tmp_path / "bench")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sample": {"methods": list(METHODS), "steps": 1, "guidance_scale": 1.0}}))

    def sample(launcher: list[str], out: str) -> str:
        cmd = [*launcher, "-m", "ingredients.sampling.sample", "--params", "params.yaml", "--benchmark", str(bench),
               "--model", "model", "--out", out, "--cache-dir", f"cache_{out}"]
        done = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    sample([sys.executable], "one")
    launch = [accelerate, "launch", "--config_file", str(REPO_ROOT / "configs/accelerate/cpu_ddp.yaml")]
    log = sample(launch, "two")
    assert log.count("sampled 3 videos (0 already present)") == 2  # 6 (method, case) videos split 3 + 3
    one, two = tmp_path / "one", tmp_path / "two"
    # 6 videos, 3 routing files, samples.json, processes.json
    assert _files(two) == _files(one) and len(_files(one)) == 3 * 3 + 2
    assert json.loads((one / "processes.json").read_text()) == {"num_processes": 1}
    assert json.loads((two / "processes.json").read_text()) == {"num_processes": 2}
    for rel in _files(one):
        if rel == "processes.json":
            continue
        if rel.endswith(".routing.safetensors"):
            a, b = load_file(str(one / rel)), load_file(str(two / rel))
            assert sorted(a) == sorted(b)
            for key in a:
                np.testing.assert_allclose(b[key], a[key], rtol=0, atol=ROUTING_ATOL, err_msg=f"{rel}: {key}")
        else:
            assert (two / rel).read_bytes() == (one / rel).read_bytes(), rel
    # resume per rank: a video of the second process's share is gone; only it is sampled again
    lost = two / "no_identity" / "t1b_astronaut.mp4"
    lost.unlink()
    log = sample(launch, "two")
    assert "sampled 0 videos (3 already present)" in log and "sampled 1 videos (2 already present)" in log
    assert lost.read_bytes() == (one / "no_identity" / "t1b_astronaut.mp4").read_bytes()
