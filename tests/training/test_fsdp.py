"""FSDP on CPU: accelerate 1.15 never selects FSDP without an accelerator, so configs/accelerate/
fsdp.yaml cannot be rehearsed on CPU processes (configs/accelerate/README.md). This pins the
behaviour the README reports: launched with fsdp.yaml's settings on 2 CPU processes, an Accelerator
with cpu=True (what the trainer builds without a GPU) runs DDP over gloo (MULTI_CPU) and drops the
FSDP plugin; with cpu=False each process runs alone (DistributedType.NO)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.training.conftest import REPO_ROOT

PROBE = r"""
import sys, torch
from accelerate import Accelerator
acc = Accelerator(cpu=sys.argv[1] == "cpu")
model, opt = acc.prepare(torch.nn.Linear(4, 1), torch.optim.AdamW(torch.nn.Linear(4, 1).parameters()))
with open(f"{sys.argv[2]}.{acc.process_index}", "a") as f:
    f.write(f"{acc.process_index} {acc.num_processes} {acc.distributed_type} {type(model).__name__}\n")
"""


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the CPU fallback only shows without a GPU")
def test_fsdp_config_on_cpu_processes_is_not_fsdp(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "the accelerate CLI is not installed beside this Python"
    config = yaml.safe_load((REPO_ROOT / "configs/accelerate/fsdp.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no")
    (tmp_path / "fsdp2.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "probe.py").write_text(PROBE)
    seen = {}
    for mode in ("cpu", "default"):
        done = subprocess.run([accelerate, "launch", "--config_file", str(tmp_path / "fsdp2.yaml"), str(tmp_path / "probe.py"), mode, str(tmp_path / mode)],
                              capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
        assert done.returncode == 0, done.stderr[-3000:]
        seen[mode] = sorted(line.split() for f in sorted(tmp_path.glob(f"{mode}.*")) for line in f.read_text().splitlines())
    assert seen["cpu"] == [["0", "2", "DistributedType.MULTI_CPU", "DistributedDataParallel"],
                           ["1", "2", "DistributedType.MULTI_CPU", "DistributedDataParallel"]]
    assert seen["default"] == [["0", "1", "DistributedType.NO", "Linear"]] * 2
