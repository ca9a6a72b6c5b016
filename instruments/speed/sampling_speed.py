"""Sampling speed and memory: ours vs ConsisID vs the bare CogVideoX backbone, one guided denoising run each.

    python -m instruments.speed.sampling_speed --size full --device cuda --steps 50 [--extrapolate-from M] --out FILE.json

`--mode loop` (default) builds the three transformers with random weights (no downloads), one after the
other in this process, and times the denoising loop of a 49 x 480 x 720 video (latents 13 x 60 x 90;
reduced size: 9 x 64 x 64) with classifier-free guidance (batch 2), K identities for ours (ID tokens
once per generation) and one for ConsisID, on the same inputs: seconds per step (median over the
measured steps), the total for `--steps` steps (measured, or extrapolated from the first M steps),
peak memory of the loop (CUDA max allocated / reserved; peak RSS on CPU) and the ratios ours/bare and
ours/ConsisID. bf16 on GPU, float32 on CPU.

Speed switches (flags; `--sweep` adds runs of ours with one switch flipped each, same process, same
inputs): `--identity-sdpa`, `--fused-injection`, `--id-tokens once|per_step`, `--step-cache`,
`--compile` (applies to all three models). `--mode pipeline` runs the whole (tiny, or `--pipeline-folder`)
pipeline with the memory switches `--vae-tiling --vae-slicing --cpu-offload`; `--mode quality` is the
step cache's quality guard on the tiny pipeline. See docs/speed.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from torch import nn

from ingredients.files.atomic import write_json
from ingredients.models import IngredientsTransformer3DModel
from instruments.speed import (
    COMPILE_MODES,
    ID_TOKEN_MODES,
    MODEL_KINDS,
    SIGNALS,
    SIZES,
    StepCacheConfig,
    StepCacheStats,
    apply_memory_switches,
    build_model,
    compile_transformer,
    denoise,
    disable_step_cache,
    enable_step_cache,
    identity_kwargs,
    make_sampling_inputs,
    num_parameters,
    set_fused_identity_injection,
    set_identity_sdpa,
    step_cache_quality,
    tiny_call_kwargs,
    warmup_forwards,
)
from ingredients.peak_memory import peak_bytes, peak_memory, reset_peak_memory
from instruments.speed.timed_models import identity_feature_dims

logger = logging.getLogger(__name__)

SWEEPABLE = ("identity_sdpa", "fused_injection", "id_tokens", "step_cache", "compile")


@dataclass(frozen=True)
class Switches:
    """The speed switches of our model in one run (compile applies to every model of the base runs)."""

    identity_sdpa: bool = True
    fused_injection: bool = True
    id_tokens: str = "once"
    step_cache: str = "off"
    cache_threshold: float = 0.05
    compile: str = "off"

    def flipped(self, name: str) -> "Switches":
        """The same switches with `name` turned the other way (step cache: off <-> first_block; compile: off -> regional)."""
        if name == "identity_sdpa":
            return dataclasses.replace(self, identity_sdpa=not self.identity_sdpa)
        if name == "fused_injection":
            return dataclasses.replace(self, fused_injection=not self.fused_injection)
        if name == "id_tokens":
            return dataclasses.replace(self, id_tokens="per_step" if self.id_tokens == "once" else "once")
        if name == "step_cache":
            return dataclasses.replace(self, step_cache="first_block" if self.step_cache == "off" else "off")
        if name == "compile":
            if self.compile != "off":
                raise ValueError("--sweep compile needs --compile off: a compiled model cannot be un-compiled")
            return dataclasses.replace(self, compile="regional")
        raise ValueError(f"unknown switch {name!r} to sweep; choose from {SWEEPABLE}")


def _parse_on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected 'on' or 'off', got {text!r}")
    return text == "on"


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _environment(device: torch.device, dtype: torch.dtype, threads: int) -> dict[str, Any]:
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    if device.type == "cpu":
        env["threads"] = threads
    return env


def measure_run(
    model: nn.Module,
    inputs,
    device: torch.device,
    steps: int,
    run_steps: int,
    id_tokens: str = "once",
    warmup: int = 1,
    guidance_scale: float = 6.0,
    seed: int = 0,
    cache=None,
) -> dict[str, Any]:
    """Time one sampling run of `model`: warm-up forwards, then `run_steps` of `steps` denoising steps."""
    extra, encode_seconds = identity_kwargs(model, inputs, id_tokens)
    warmup_seconds = warmup_forwards(model, inputs, extra, warmup) if warmup else []
    if cache is not None:  # the warm-up calls must not seed the cache of the measured run
        cache.reset()
        cache.stats = StepCacheStats()
    exact = reset_peak_memory(device)
    result = denoise(model, inputs, extra, steps, run_steps, guidance_scale, seed)
    peak = peak_memory(device, since_reset=exact)
    per_step = statistics.median(result.step_seconds)
    measured = sum(result.step_seconds)
    loop_seconds = measured if run_steps == steps else measured + per_step * (steps - run_steps)
    record: dict[str, Any] = {
        "num_parameters": num_parameters(model),
        "parameter_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "seconds_per_step_median": per_step,
        "step_seconds": result.step_seconds,
        "warmup_seconds": warmup_seconds,
        "id_encode_seconds": encode_seconds,
        "steps": steps,
        "measured_steps": run_steps,
        "total_method": "measured" if run_steps == steps else f"extrapolated_from_{run_steps}_steps",
        "denoise_seconds": loop_seconds,
        "total_seconds": loop_seconds + (encode_seconds or 0.0),
        "peak_memory": peak,
        "output_finite": bool(torch.isfinite(result.latents).all()),
    }
    if cache is not None:
        record["step_cache"] = cache.stats.summary()
    return record


def _apply_ours_switches(model: IngredientsTransformer3DModel, switches: Switches):
    """Set SDPA / fused injection / step cache on our model; returns the step cache or None."""
    set_identity_sdpa(model, switches.identity_sdpa)
    set_fused_identity_injection(model, switches.fused_injection)
    if "forward" in vars(model):
        disable_step_cache(model)
    if switches.step_cache == "off":
        return None
    return enable_step_cache(model, StepCacheConfig(threshold=switches.cache_threshold, signal=switches.step_cache))


def _ratios(runs: dict[str, dict[str, Any]], num: str, den: str) -> dict[str, float] | None:
    if num not in runs or den not in runs:
        return None
    a, b = runs[num], runs[den]
    return {
        "seconds_per_step": a["seconds_per_step_median"] / b["seconds_per_step_median"],
        "total_seconds": a["total_seconds"] / b["total_seconds"],
        "peak_memory": peak_bytes(a["peak_memory"]) / peak_bytes(b["peak_memory"]),
    }


def run_loop_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """`--mode loop`: the three models' denoising loops and the switch sweep, as one JSON-ready dict."""
    device = torch.device(args.device)
    dtype = _dtype(args.dtype, device)
    size = SIZES[args.size]
    run_steps = args.extrapolate_from or args.steps
    switches = Switches(
        identity_sdpa=args.identity_sdpa, fused_injection=args.fused_injection, id_tokens=args.id_tokens,
        step_cache=args.step_cache, cache_threshold=args.cache_threshold, compile=args.compile,
    )
    sweep = [s for s in args.sweep.split(",") if s] if args.sweep else []
    flipped = {name: switches.flipped(name) for name in sweep}  # validates names up front
    if args.extrapolate_from and (switches.step_cache != "off" or any(f.step_cache != "off" for f in flipped.values())):
        raise ValueError(
            "--extrapolate-from cannot be combined with a step cache (--step-cache or --sweep step_cache): "
            "which of the remaining steps it skips is unknown; measure all --steps"
        )
    id_dim, vit_dim, scales = identity_feature_dims(size)
    inputs = make_sampling_inputs(size, args.identities, id_dim, vit_dim, scales, seed=args.seed).to(device, dtype)
    frames, height, width = size.latent_shape
    report: dict[str, Any] = {
        "mode": "loop",
        "size": args.size,
        **_environment(device, dtype, args.threads),
        "video": {"frames": size.frames, "height": size.height, "width": size.width},
        "latents": [frames, 16, height, width],
        "video_tokens": frames * (height // 2) * (width // 2),
        "text_tokens": size.text_tokens,
        "guidance_batch": 2,
        "identities": {"ours": args.identities, "consisid": 1, "bare": 0},
        "steps": args.steps,
        "measured_steps": run_steps,
        "total_method": "measured" if run_steps == args.steps else f"extrapolated_from_{run_steps}_steps",
        "warmup_forwards": args.warmup,
        "switches": dataclasses.asdict(switches),
        "compile_applies_to": list(args.models) if switches.compile != "off" else [],
        "configs": {},
        "runs": {},
    }
    common = dict(steps=args.steps, run_steps=run_steps, warmup=args.warmup, guidance_scale=args.guidance_scale, seed=args.seed)
    for kind in [k for k in MODEL_KINDS[::-1] if k in args.models]:  # bare, consisid, ours (kept for the sweep)
        start = time.perf_counter()
        model = build_model(kind, size, device, dtype, seed=args.seed)
        _free(device)  # the float32 build's cached blocks must not count as the loop's reserved memory
        report["configs"][kind] = {k: v for k, v in model.config.items() if not k.startswith("_")}
        cache = _apply_ours_switches(model, switches) if kind == "ours" else None
        compile_transformer(model, switches.compile)
        logger.info("%s: built in %.1fs, %.2fB parameters", kind, time.perf_counter() - start, num_parameters(model) / 1e9)
        record = measure_run(model, inputs, device, id_tokens=switches.id_tokens if kind == "ours" else "once", cache=cache, **common)
        report["runs"][kind] = record
        logger.info("%s: %.4fs/step, total %.2fs (%s)", kind, record["seconds_per_step_median"], record["total_seconds"], record["total_method"])
        if kind == "ours":
            for name, variant in flipped.items():
                cache = _apply_ours_switches(model, variant)
                if variant.compile != "off":
                    compile_transformer(model, variant.compile)
                label = f"ours[{name}={_switch_value(variant, name)}]"
                report["runs"][label] = measure_run(model, inputs, device, id_tokens=variant.id_tokens, cache=cache, **common)
                report["runs"][label]["switches"] = dataclasses.asdict(variant)
                logger.info("%s: %.4fs/step", label, report["runs"][label]["seconds_per_step_median"])
            if "forward" in vars(model):
                disable_step_cache(model)
        del model, cache
        _free(device)
    report["ratios"] = {
        key: value
        for key, value in (("ours/bare", _ratios(report["runs"], "ours", "bare")), ("ours/consisid", _ratios(report["runs"], "ours", "consisid")))
        if value is not None
    }
    report["sweep_ratios_vs_ours"] = {
        label: _ratios(report["runs"], label, "ours") for label in report["runs"] if label.startswith("ours[")
    }
    return report


def _switch_value(switches: Switches, name: str) -> str:
    value = getattr(switches, name)
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def run_pipeline_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """`--mode pipeline`: one whole generation (text encoder, transformer loop, VAE decode) with the memory switches."""
    device = torch.device(args.device)
    pipe = _load_pipeline(args, device)
    tile = tuple(args.vae_tile) if args.vae_tile else None
    apply_memory_switches(pipe, args.vae_tiling, args.vae_slicing, args.cpu_offload, device, tile)
    call = tiny_call_kwargs(pipe, args.identities, args.steps, args.seed)
    seed = call.pop("seed")
    exact = reset_peak_memory(device)
    start = time.perf_counter()
    frames = pipe(**call, generator=torch.Generator().manual_seed(seed), output_type="np").frames
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "mode": "pipeline",
        "pipeline": str(args.pipeline_folder) if args.pipeline_folder else "tiny",
        **_environment(device, pipe.transformer.dtype, args.threads),
        "steps": args.steps,
        "identities": args.identities,
        "switches": {"vae_tiling": args.vae_tiling, "vae_tile": list(tile) if tile else None, "vae_slicing": args.vae_slicing, "cpu_offload": args.cpu_offload},
        "frames_shape": list(frames.shape),
        "seconds": seconds,
        "peak_memory": peak_memory(device, since_reset=exact),
    }


def run_quality(args: argparse.Namespace) -> dict[str, Any]:
    """`--mode quality`: the step cache on vs off on the tiny (or `--pipeline-folder`) pipeline: latent MSE,
    frame PSNR, skipped steps. Face features are random, of the pipeline's sizes."""
    device = torch.device(args.device)
    pipe = _load_pipeline(args, device)
    pipe.to(device)
    config = StepCacheConfig(threshold=args.cache_threshold, signal=args.step_cache)
    result = step_cache_quality(pipe, config, tiny_call_kwargs(pipe, args.identities, args.steps, args.seed))
    if math.isinf(result["frame_psnr_db"]):  # identical frames; JSON has no infinity
        result["frame_psnr_db"] = None
        result["frames_identical"] = True
    return {
        "mode": "quality",
        "pipeline": str(args.pipeline_folder) if args.pipeline_folder else "tiny",
        **_environment(device, pipe.transformer.dtype, args.threads),
        **result,
    }


def _load_pipeline(args: argparse.Namespace, device: torch.device):
    """The pipeline of `--pipeline-folder` (in --dtype), or the tiny one built in memory."""
    if args.pipeline_folder is not None:
        from ingredients.model_folder.folder import load_pipeline

        pipe = load_pipeline(args.pipeline_folder, _dtype(args.dtype, device))
    else:
        from ingredients.model_folder.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(args.seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m instruments.speed.sampling_speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("loop", "pipeline", "quality"), default="loop")
    parser.add_argument("--size", choices=sorted(SIZES), default="reduced")
    parser.add_argument("--device", default="cpu", help="cuda, cuda:N or cpu")
    parser.add_argument("--dtype", choices=("auto", "bfloat16", "float16", "float32"), default="auto", help="auto: bf16 on GPU, float32 on CPU")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps of the sampling run")
    parser.add_argument("--extrapolate-from", type=int, default=None, metavar="M", help="measure the first M steps only and extrapolate")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards before each measured loop")
    parser.add_argument("--models", default=",".join(MODEL_KINDS), help="comma list of ours,consisid,bare")
    parser.add_argument("--identities", type=int, default=2, help="K identities for ours (ConsisID takes one)")
    parser.add_argument("--guidance-scale", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads (torch.set_num_threads); 1 by default: on a loaded shared CPU, 2 threads spin-wait for "
        "each other and the same step took 0.01 s or 2 s from run to run",
    )
    parser.add_argument("--identity-sdpa", type=_parse_on_off, default=True, metavar="on|off")
    parser.add_argument("--fused-injection", type=_parse_on_off, default=True, metavar="on|off")
    parser.add_argument("--id-tokens", choices=ID_TOKEN_MODES, default="once")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="off")
    parser.add_argument("--step-cache", choices=("off", *SIGNALS), default="off")
    parser.add_argument("--cache-threshold", type=float, default=0.05)
    parser.add_argument("--sweep", default="", help=f"comma list of switches to flip one at a time: {','.join(SWEEPABLE)}")
    parser.add_argument("--vae-tiling", action="store_true")
    parser.add_argument("--vae-tile", type=int, nargs=2, metavar=("H", "W"), help="VAE tile size in pixels (tiny: 64 64)")
    parser.add_argument("--vae-slicing", action="store_true")
    parser.add_argument("--cpu-offload", action="store_true")
    parser.add_argument("--pipeline-folder", type=Path, default=None, help="--mode pipeline|quality: a saved pipeline folder (default: tiny)")
    parser.add_argument("--out", type=Path, help="write the JSON result here (atomically)")
    return parser


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """Validate the arguments with errors that name the flag and the fix; normalise --models."""
    models = tuple(m for m in args.models.split(",") if m)
    unknown = set(models) - set(MODEL_KINDS)
    if unknown or not models:
        raise ValueError(f"--models {args.models!r}: choose a comma list from {MODEL_KINDS}")
    args.models = models
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.extrapolate_from is not None and not 1 <= args.extrapolate_from <= args.steps:
        raise ValueError(f"--extrapolate-from must be in 1..--steps ({args.steps}), got {args.extrapolate_from}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if not 1 <= args.identities <= 8:
        raise ValueError(f"--identities must be in 1..8, got {args.identities}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu --size reduced")
    if args.mode == "quality" and args.step_cache == "off":
        raise ValueError("--mode quality compares a step cache with none: pass --step-cache first_block|modulated_input")
    if args.sweep and "ours" not in models:
        raise ValueError("--sweep flips switches of our model: include 'ours' in --models")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_args(args)
    except ValueError as err:
        build_parser().error(str(err))
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads)
    runners = {"loop": run_loop_benchmark, "pipeline": run_pipeline_benchmark, "quality": run_quality}
    result = runners[args.mode](args)
    result["command"] = "python -m instruments.speed.sampling_speed " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        write_json(args.out, result)
        logger.info("wrote %s", args.out)
    print(json.dumps(result, indent=2, sort_keys=True))  # noqa: T201 - the command's output is the JSON result
    return result


if __name__ == "__main__":
    main()
