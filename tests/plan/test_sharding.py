"""The accelerate-config sharding arithmetic on a step whose bytes are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingredients.plan.sharding import AccelerateConfig, device_memory, read_accelerate_config
from ingredients.plan.training_step import StepMemory

GIB = 2**30
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def step(trainable: int = 1_000_000_000, frozen: int = 5_000_000_000) -> StepMemory:
    """A 6 B model, 1 B trainable (fp32) + 5 B frozen (bf16), AdamW, no EMA."""
    return StepMemory(
        parameters={"backbone": frozen, "projector": trainable}, trainable={"projector": trainable},
        weight_bytes={"transformer.backbone": 2 * frozen, "transformer.projector": 4 * trainable},
        trainable_bytes=4 * trainable, grad_bytes=4 * trainable, optimizer_bytes=8 * trainable, ema_bytes=0,
        step_peak_bytes=4 * trainable + 10 * GIB, activation_peak_bytes=10 * GIB, encode_peak_bytes=0, flops=10**15,
        largest_block_bytes=2 * 100_000_000, autocast_cache_bytes=2 * trainable,
    )


def cfg(kind: str, n: int = 8, **kw) -> AccelerateConfig:
    return AccelerateConfig(name=kind, kind=kind, num_processes=n, offload_optimizer=kw.get("opt", False),
                            offload_params=kw.get("params", False))


def test_zero3_holds_less_weight_per_gpu_than_ddp_and_zero2_shards_optimizer_and_gradients():
    m = step()
    ddp, z2, z3, fsdp = (device_memory(m, cfg(k), 0.5, 0.1) for k in ("ddp", "zero2", "zero3", "fsdp"))
    assert ddp.weights_gib == pytest.approx((10e9 + 4e9) / GIB)
    assert ddp.gradient_buckets_gib == ddp.gradients_gib == pytest.approx(4e9 / GIB)  # DDP's bucket copy
    assert z2.weights_gib == pytest.approx(2 * 6e9 / GIB)  # the engine's bf16 copy of everything
    assert z3.weights_gib == pytest.approx((2 * 6e9 / 8 + 2 * 2e8) / GIB)
    assert z3.weights_gib < z2.weights_gib < ddp.weights_gib
    assert z2.optimizer_gib == pytest.approx(12 * 1e9 / 8 / GIB)  # fp32 master + two moments, / 8
    assert fsdp.weights_gib == pytest.approx((4 * 6e9 / 8 + 2 * 2e8) / GIB)  # fp32 shards (trainer does not cast)
    assert fsdp.optimizer_gib == pytest.approx(8e9 / 8 / GIB) and fsdp.gradients_gib == pytest.approx(4e9 / 8 / GIB)
    assert ddp.activations_gib == pytest.approx(10.0)  # measured without the gradients
    assert z3.activations_gib == fsdp.activations_gib == pytest.approx(10.0 - 2e9 / GIB)  # no autocast weight cache
    assert ddp.allowance_gib == pytest.approx(0.5 + 0.1 * ddp.peak_gib)
    assert ddp.total_gib == pytest.approx(ddp.peak_gib + ddp.allowance_gib)


def test_offloading_the_optimizer_removes_it_from_the_device():
    m = step()
    assert device_memory(m, cfg("zero2", opt=True), 0, 0).optimizer_gib == 0
    assert device_memory(m, cfg("zero2"), 0, 0).total_gib - device_memory(m, cfg("zero2", opt=True), 0, 0).total_gib == \
        pytest.approx(12e9 / 8 / GIB)


def test_the_repositorys_accelerate_configs_are_read_and_gpus_replaces_multi_process_counts():
    read = {p.stem: read_accelerate_config(p) for p in CONFIGS.glob("*.yaml")}
    assert {k: (v.kind, v.num_processes) for k, v in read.items()} == {
        "cpu_single": ("single", 1), "cpu_ddp": ("ddp", 2), "multi_gpu_ddp": ("ddp", 8), "fsdp": ("fsdp", 8),
        "deepspeed_zero2": ("zero2", 8), "deepspeed_zero3": ("zero3", 8)}
    assert read_accelerate_config(CONFIGS / "deepspeed_zero3.yaml", gpus=4).num_processes == 4
    assert read_accelerate_config(CONFIGS / "cpu_single.yaml", gpus=4).num_processes == 1


def test_an_unknown_distributed_type_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "tpu.yaml"
    bad.write_text("distributed_type: XLA\nnum_processes: 8\n")
    with pytest.raises(ValueError, match=r"tpu.yaml: distributed_type 'XLA'"):
        read_accelerate_config(bad)


def test_the_optimizer_steps_peak_and_the_precompute_pass_count_when_they_are_the_largest():
    """The loop's peak is the persistent state plus the largest of the step's activations and the optimizer
    step's own peak; before the loop the precompute pass holds the whole transformer as loaded (float32
    under FSDP / DeepSpeed, whose engines take it over after), the encoders and the encode pass."""
    from dataclasses import replace

    m = replace(step(), activation_peak_bytes=1 * GIB, optimizer_step_bytes=3 * GIB)
    ddp = device_memory(m, cfg("ddp"), 0.5, 0.1)
    assert ddp.optimizer_step_gib == pytest.approx(3.0)
    assert ddp.peak_gib == pytest.approx((10e9 + 4e9 + 4e9 + 4e9 + 8e9) / GIB + 3.0)  # weights, grads, buckets, Adam
    pre = replace(m, precompute_peak_bytes=6 * GIB, parked_bytes=9 * GIB, weight_bytes={**m.weight_bytes, "vae": GIB // 2})
    fsdp = device_memory(pre, cfg("fsdp"), 0.5, 0.1)
    assert fsdp.precompute_gib == pytest.approx(4 * 6e9 / GIB + 0.5 + 9 + 6)  # fp32 transformer, VAE, T5, encode
    assert fsdp.peak_gib == pytest.approx(fsdp.precompute_gib)
