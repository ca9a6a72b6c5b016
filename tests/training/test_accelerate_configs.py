"""Every accelerate config loads with accelerate's own reader and says what its name says."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from tests.training.conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs" / "accelerate"
EXPECTED = {
    "cpu_single.yaml": (DistributedType.NO, 1),
    "cpu_ddp.yaml": (DistributedType.MULTI_GPU, 2),  # torchrun launcher; the trainer picks gloo on CPU
    "multi_gpu_ddp.yaml": (DistributedType.MULTI_GPU, 8),
    "fsdp.yaml": (DistributedType.FSDP, 8),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 8),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, 8),
}


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads(name):
    config = load_config_from_file(str(CONFIGS / name))
    assert (config.distributed_type, config.num_processes) == EXPECTED[name]
    if name.startswith("cpu_"):
        assert config.mixed_precision == "no"
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-6])
    if name == "fsdp.yaml":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")[0] == "CogVideoXBlock"
    assert Path(CONFIGS / "README.md").read_text().count(name) >= 1
