"""Device check: real peak memory and time of the full-size steps, beside the cost plan's predictions.

    python -m instruments.speed.device_check [--size full|rehearsal] [--plan outputs/plan/plan.json]
                                             [--compile regional|full|off] [--steps 2]

Random weights (nothing is downloaded), one device. Measures, each with the allocator's peaks
(`torch.cuda.max_memory_allocated` / `max_memory_reserved`; peak RSS on a CPU) and seconds:
- `train_stage2`: the stage-2 training step (projector, injectors and routers train, frozen backbone in
  bf16, gradient checkpointing, K = 2, micro-batch 1, AdamW), as `ingredients.training.synthetic_step` runs it;
- `sample_<bare|ours>_<eager|compiled>`: guided denoising steps (batch 2: negative and positive prompt)
  of the bare CogVideoX-5B-I2V transformer and of ours, eager and through torch.compile.
Each line is `RESULT <name> key=value ...`; with a plan JSON (`ingredients plan --json`), the plan's
prediction and the ratio measured / predicted are printed beside it ("no plan" without one). The
plan counts everything the stage holds on the device (text encoder, VAE, allowances); this check
holds the transformer only, so a ratio below 1 is expected where the plan adds those.
`--size rehearsal` runs the same code on a toy config on the CPU (the suite checks its output lines).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ingredients.models.full_size import (
    COGVIDEOX_5B_I2V,
    full_size_config,
    full_size_inputs,
    guided_denoising_step,
    index_mask_for,
)
from ingredients.peak_memory import peak_memory, reset_peak_memory

logger = logging.getLogger(__name__)

GIB = 1024**3
# (model config overrides, video frames / height / width) per size
SIZES: dict[str, tuple[dict[str, Any], tuple[int, int, int]]] = {
    "full": ({}, (49, 480, 720)),
    "rehearsal": (
        {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 64, "text_embed_dim": 32,
         "time_embed_dim": 32, "sample_frames": 9, "sample_height": 8, "sample_width": 12, "max_text_seq_length": 8,
         "id_embed_dim": 32, "vit_dim": 32, "mapping_hidden_dim": 32, "extractor_dim": 32, "extractor_depth": 5,
         "extractor_dim_head": 8, "extractor_heads": 4, "num_queries": 8, "id_token_dim": 64,
         "injector_dim_head": 16, "injector_heads": 4, "router_dim": 32},
        (9, 64, 96),
    ),
}
VIT_TOKENS = {"full": 577, "rehearsal": 17}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, steps: int) -> dict[str, float]:
    """One warm-up call (compilation, allocator growth), then `steps` timed calls; peaks over all of them."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak_memory(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = peak_memory(device)
    out = {"seconds": statistics.median(times), "first_call_seconds": first}
    if "max_memory_allocated_bytes" in peak:
        out["peak_allocated_gib"] = peak["max_memory_allocated_bytes"] / GIB
        out["peak_reserved_gib"] = peak["max_memory_reserved_bytes"] / GIB
    else:
        out["peak_rss_gib"] = peak["peak_rss_bytes"] / GIB
    return out


def _build(cls, config: dict[str, Any], device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    with torch.device(device):
        return cls(**config).to(dtype=dtype)


def train_stage2(size: str, device: torch.device, steps: int) -> dict[str, float]:
    from ingredients.models import IngredientsTransformer3DModel
    from ingredients.training.stage_spec import TrainModules
    from ingredients.training.synthetic_step import setup_stage, training_step

    overrides, (frames, height, width) = SIZES[size]
    model = _build(IngredientsTransformer3DModel, full_size_config(**overrides), device, torch.float32)
    weight_dtype = torch.bfloat16
    setup = setup_stage(model, TrainModules(projector=True, injectors=True, routers=True, backbone="frozen"), 1e-5,
                        weight_dtype, gradient_checkpointing=True)
    inputs = full_size_inputs(model.config, 1, 2, frames, height, width, device=device, vit_tokens=VIT_TOKENS[size])
    index_mask = index_mask_for(model.config, 1, 2, device, num_frames=frames, height=height, width=width)

    def step():
        training_step(model, inputs, setup.optimizer, index_mask, weight_dtype)
        setup.optimizer.zero_grad(set_to_none=True)

    result = measure(step, device, steps)
    del model, setup
    return result


def sample_steps(size: str, device: torch.device, steps: int, compile_mode: str) -> dict[str, dict[str, float]]:
    from diffusers.models import CogVideoXTransformer3DModel

    from ingredients.models import IngredientsTransformer3DModel
    from ingredients.pipelines.switches import compile_transformer

    overrides, (frames, height, width) = SIZES[size]
    config = full_size_config(**overrides)
    bare_config = {k: config[k] for k in COGVIDEOX_5B_I2V}
    results = {}
    for name, cls, cfg in (("bare", CogVideoXTransformer3DModel, bare_config), ("ours", IngredientsTransformer3DModel, config)):
        model = _build(cls, cfg, device, torch.bfloat16).eval()
        inputs = full_size_inputs(model.config if name == "ours" else _Config(config), 2, 2, frames, height, width,
                                  torch.bfloat16, device, vit_tokens=VIT_TOKENS[size])
        modes = ["eager"] + ([] if compile_mode == "off" else ["compiled"])
        for mode in modes:
            if mode == "compiled":
                torch._dynamo.reset()
                compile_transformer(model, compile_mode, fullgraph=True)
            if name == "ours":
                def fn(model=model, inputs=inputs):
                    with torch.no_grad():
                        return guided_denoising_step(model, inputs)
            else:
                def fn(model=model, inputs=inputs):
                    with torch.no_grad():
                        out = model(hidden_states=inputs["hidden_states"], encoder_hidden_states=inputs["encoder_hidden_states"],
                                    timestep=inputs["timestep"], image_rotary_emb=inputs["image_rotary_emb"], return_dict=False)[0]
                        uncond, text = out.float().chunk(2)
                        return uncond + 6.0 * (text - uncond)
            results[f"sample_{name}_{mode}"] = measure(fn, device, steps)
        del model
    return results


class _Config(dict):
    """A config dict read by attribute, as `full_size_inputs` reads a model config."""

    __getattr__ = dict.__getitem__


def plan_predictions(plan: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """The plan's per-device peak and seconds for what this check measures (one process)."""
    if plan is None:
        return {}
    stages = plan.get("stages", {})
    out: dict[str, dict[str, float]] = {}
    train = stages.get("train_stage2", {})
    single = [c for c in train.get("configs", {}).values() if c.get("num_processes") == 1 and c.get("peak_gib")]
    if single:
        c = single[0]
        out["train_stage2"] = {"peak_gib": c["peak_gib"],
                               "seconds": c.get("seconds_per_step", 0) / max(c.get("grad_accum", 1), 1) or None}
    sample = stages.get("sample", {})
    if "phase_peak_gib" in sample:
        denoise = sample["phase_peak_gib"].get("denoise")
        configured = next((c for c in sample.get("configs", {}).values() if c.get("configured")), {})
        per_step = configured.get("seconds_per_video", 0) / max(sample.get("steps", 1), 1) or None
        for name in ("sample_ours_eager", "sample_ours_compiled"):
            out[name] = {"peak_gib": denoise, "seconds": per_step}
    return out


def result_line(name: str, measured: dict[str, float], predicted: dict[str, float] | None, have_plan: bool) -> str:
    parts = [f"RESULT {name}"] + [f"{k}={v:.3f}" for k, v in measured.items()]
    peak = measured.get("peak_allocated_gib", measured.get("peak_rss_gib"))
    if not have_plan:
        parts.append("plan=no plan")
    elif not predicted:
        parts.append("plan=not in plan")
    else:
        if predicted.get("peak_gib"):
            parts += [f"plan_peak_gib={predicted['peak_gib']:.3f}", f"peak_ratio={peak / predicted['peak_gib']:.3f}"]
        if predicted.get("seconds"):
            parts += [f"plan_seconds={predicted['seconds']:.3f}", f"seconds_ratio={measured['seconds'] / predicted['seconds']:.3f}"]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m instruments.speed.device_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--plan", type=Path, default=Path("outputs/plan/plan.json"), help="the plan JSON, if present")
    parser.add_argument("--compile", choices=("regional", "full", "off"), default="regional",
                        help="compiled sampling: each block (regional, short compile) or the whole model (full)")
    parser.add_argument("--steps", type=int, default=2, help="timed calls after the warm-up call")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.size == "full" and device.type != "cuda":
        raise SystemExit("--size full needs a CUDA GPU (80 GB); use --size rehearsal on a CPU")
    plan = json.loads(args.plan.read_text()) if args.plan.is_file() else None
    predictions = plan_predictions(plan)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = [f"DEVICE {name} size={args.size} torch={torch.__version__} plan={args.plan if plan else 'no plan'}"]
    print(lines[0], flush=True)  # noqa: T201 - the command's output is these lines
    measured = {"train_stage2": train_stage2(args.size, device, args.steps)}
    print(result_line("train_stage2", measured["train_stage2"], predictions.get("train_stage2"), plan is not None), flush=True)  # noqa: T201
    for key, value in sample_steps(args.size, device, args.steps, args.compile).items():
        measured[key] = value
        print(result_line(key, value, predictions.get(key), plan is not None), flush=True)  # noqa: T201
    return [lines[0]] + [result_line(k, v, predictions.get(k), plan is not None) for k, v in measured.items()]


if __name__ == "__main__":
    main()
