"""Per-device memory of a measured training step under one accelerate config (one GPU, DDP, FSDP2,
DeepSpeed ZeRO-2/3, with the offload the config names): the sharding arithmetic, stated per term.

- one process / DDP: every device holds all weights, gradients, optimizer state and EMA; DDP adds
  its gradient buckets (a copy of the gradients: accelerate leaves `gradient_as_bucket_view` off).
- DeepSpeed ZeRO-2 (bf16): the engine casts the whole transformer to bf16 (2 bytes per parameter on
  every device); fp32 master weights and Adam moments of the trainable parameters are sharded over N
  (ZeRO paper: 12 bytes per trainable parameter / N) and so are the bf16 gradients (2 / N), plus the
  reduce bucket (DeepSpeed's default reduce_bucket_size, 5e8 elements, at most the trainable count).
- DeepSpeed ZeRO-3: as ZeRO-2 with the bf16 weights sharded too (2 / N) plus the gathered working set
  (two blocks, the one running and the one prefetched, at the size the measured step holds them).
- FSDP2: parameters sharded in float32 (/ N: the trainer leaves the frozen ones uncast under FSDP,
  whose mixed-precision policy casts per block), gradients and optimizer state sharded, plus the working
  set of two blocks unsharded in bf16 (reshard after forward).
- Offload (`offload_optimizer_device: cpu`, `fsdp_offload_params: true`) moves those terms off the device.
Activations are the measured ones at the config's micro-batch (global batch / processes), measured under
autocast as the trainer runs without FSDP / DeepSpeed: autocast keeps a bf16 copy of every trainable fp32
weight for the whole forward (its weight cache), 2 bytes per trainable parameter. DeepSpeed (bf16 engine
weights) and FSDP2 (bf16 gathered weights) cast no fp32 weight, so that copy is taken off their activations. The text
encoder and VAE (when they encode on the device) are outside the DeepSpeed / FSDP engine: whole on
every device. EMA under FSDP / DeepSpeed is refused by the trainer.

The loop's peak is the persistent state (weights, gradients, buckets, optimizer state, EMA) plus the
largest of the step's activations (the batch and its encodings included), an encode pass outside the
step, and the optimizer step's own peak (the batch still alive and the update's temporaries). Before
the loop, with precompute on, the precompute pass runs with the whole transformer on the device as
loaded (cast to the weight dtype where frozen; in float32 under FSDP / DeepSpeed, whose engines take
it over only after), the text encoder and the VAE: the device's peak is the larger of the two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ingredients.plan.training_step import StepMemory

DEEPSPEED_REDUCE_BUCKET = 500_000_000  # elements; DeepSpeed's default reduce_bucket_size
GIB = float(2**30)


@dataclass(frozen=True)
class AccelerateConfig:
    """What the plan reads from an accelerate config file."""

    name: str
    kind: str                 # single | ddp | fsdp | zero2 | zero3
    num_processes: int
    offload_optimizer: bool
    offload_params: bool


def read_accelerate_config(path: Path, gpus: int | None = None) -> AccelerateConfig:
    """An accelerate config yaml -> AccelerateConfig; `gpus` replaces num_processes of multi-process configs."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    dist = str(data.get("distributed_type", "NO"))
    n = int(data.get("num_processes", 1))
    if gpus is not None and n > 1:
        n = gpus
    ds = data.get("deepspeed_config") or {}
    fsdp = data.get("fsdp_config") or {}
    if dist == "DEEPSPEED":
        stage = int(ds.get("zero_stage", 2))
        if stage not in (2, 3):
            raise ValueError(f"{path}: deepspeed_config.zero_stage {stage}: the plan knows ZeRO-2 and ZeRO-3")
        kind = f"zero{stage}"
    elif dist == "FSDP":
        kind = "fsdp"
    elif dist in ("MULTI_GPU", "MULTI_CPU") and n > 1:
        kind = "ddp"
    elif dist in ("NO", "MULTI_GPU", "MULTI_CPU"):
        kind = "single"
    else:
        raise ValueError(f"{path}: distributed_type {dist!r} is not one the plan knows (NO, MULTI_GPU, MULTI_CPU, FSDP, DEEPSPEED)")
    return AccelerateConfig(
        name=Path(path).stem, kind=kind, num_processes=n,
        offload_optimizer=str(ds.get("offload_optimizer_device", "none")) not in ("none", "None") or bool(fsdp.get("fsdp_offload_params")),
        offload_params=str(ds.get("offload_param_device", "none")) not in ("none", "None") or bool(fsdp.get("fsdp_offload_params")),
    )


@dataclass
class DeviceMemory:
    """GiB on one device; `peak_gib` = the sum of the terms, `total_gib` = peak + allowance."""

    weights_gib: float
    gradients_gib: float
    gradient_buckets_gib: float
    optimizer_gib: float
    ema_gib: float
    activations_gib: float
    encode_gib: float
    optimizer_step_gib: float
    precompute_gib: float     # the device before the loop: transformer as loaded + encoders + the precompute pass
    peak_gib: float
    allowance_gib: float
    total_gib: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def device_memory(m: StepMemory, cfg: AccelerateConfig, context_gib: float, allocator_fraction: float) -> DeviceMemory:
    """Per-device memory of step `m` (measured at this config's micro-batch) under `cfg`."""
    n = cfg.num_processes
    transformer = {k: v for k, v in m.weight_bytes.items() if k.startswith("transformer.")}
    encoders = sum(v for k, v in m.weight_bytes.items() if not k.startswith("transformer."))
    stored = sum(transformer.values())
    trainable_numel = sum(m.trainable.values())
    all_numel = sum(m.parameters.values())
    buckets = 0.0
    ema = m.ema_bytes
    if cfg.kind in ("single", "ddp"):
        weights, grads, optimizer = stored, m.grad_bytes, m.optimizer_bytes
        buckets = m.grad_bytes if cfg.kind == "ddp" else 0
    elif cfg.kind in ("zero2", "zero3"):
        bf16_all = 2 * all_numel
        weights = bf16_all if cfg.kind == "zero2" else bf16_all / n + 2 * m.largest_block_bytes
        grads = 2 * trainable_numel / n
        optimizer = 12 * trainable_numel / n  # fp32 master + Adam's two moments
        buckets = 2 * min(DEEPSPEED_REDUCE_BUCKET, trainable_numel)
        ema = 0
    else:  # fsdp
        weights = 4 * all_numel / n + 2 * m.largest_block_bytes
        grads = m.grad_bytes / n
        optimizer = m.optimizer_bytes / n
        ema = 0
    if cfg.offload_optimizer:
        optimizer = 0
    if cfg.offload_params:
        weights = 2 * m.largest_block_bytes if cfg.kind in ("zero3", "fsdp") else weights
        grads = 0 if cfg.kind == "fsdp" else grads
    weights += encoders
    activations = m.activation_bytes
    if cfg.kind in ("zero2", "zero3", "fsdp"):
        activations = max(activations - m.autocast_cache_bytes, 0)
    loop = weights + grads + buckets + optimizer + ema + max(activations, m.encode_peak_bytes, m.optimizer_step_bytes)
    precompute = 0.0
    if m.precompute_peak_bytes:
        loaded = stored if cfg.kind in ("single", "ddp") else 4 * all_numel
        precompute = loaded + encoders + m.parked_bytes + m.precompute_peak_bytes
    peak = max(loop, precompute)
    allowance = context_gib * GIB + allocator_fraction * peak
    return DeviceMemory(
        weights_gib=weights / GIB, gradients_gib=grads / GIB, gradient_buckets_gib=buckets / GIB,
        optimizer_gib=optimizer / GIB, ema_gib=ema / GIB, activations_gib=activations / GIB,
        encode_gib=m.encode_peak_bytes / GIB, optimizer_step_gib=m.optimizer_step_bytes / GIB,
        precompute_gib=precompute / GIB, peak_gib=peak / GIB, allowance_gib=allowance / GIB,
        total_gib=(peak + allowance) / GIB,
    )
