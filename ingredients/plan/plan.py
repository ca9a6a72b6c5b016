"""The cost plan of every GPU stage: `python -m ingredients.plan.plan --params params.yaml [override ...]`
(also `ingredients plan`).

For train_stage1, train_stage2 and sample at the configured sizes it builds the real modules on the meta
device and runs one step fake (no weights, no arithmetic; see training_step.py and sampling_step.py),
then gives per device, for every accelerate config of `plan.configs` (training) and every offload /
VAE-tiling mode (sampling): parameters, memory terms in GiB, the stated allowance, fits or not and
what would make it fit, FLOPs, seconds per step at `plan.mfu` of `plan.gpu_peak_tflops`, and GPU-hours.
`--backbone-only` plans the bare CogVideoX transformer instead (LoRA, full fine-tune, frozen), to hold
against published measurements (docs/plan.md).

Writes `--json OUT` (default outputs/plan/plan.json) and a Markdown table beside it (plan.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ingredients.config import load_merged, section, stage_parser, validate_model
from ingredients.files.atomic import write_json, write_text
from ingredients.launch_params import LaunchParams
from ingredients.plan.configured_launch import launch_accelerate_config, mark_configured
from ingredients.plan.model_configs import ProfileModels, profile_models
from ingredients.plan.plan_params import PlanParams
from ingredients.plan.sampling_step import measure_sampling, sampling_peak_bytes, video_flops
from ingredients.plan.sharding import AccelerateConfig, device_memory, read_accelerate_config
from ingredients.plan.training_step import NothingToTrain, StepMemory, measure_training_step, video_shape
from ingredients.sampling.sample import SampleParams
from ingredients.training.stage_spec import StageSpec, build_stage_spec

logger = logging.getLogger(__name__)

GIB = float(2**30)
TRAIN_STAGES = {"train_stage1": "stage1", "train_stage2": "stage2"}
SAMPLE_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
OFFLOADS = ("none", "model", "sequential")


@dataclasses.dataclass
class Settings:
    """What the plan is made for (PlanParams with the command line's overrides)."""

    plan: PlanParams
    backbone_only: bool = False

    @property
    def flops_per_second(self) -> float:
        return self.plan.mfu * self.plan.gpu_peak_tflops * 1e12


def accelerate_configs(settings: Settings) -> list[AccelerateConfig]:
    folder = Path(settings.plan.configs)
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"plan.configs: no accelerate config (*.yaml) in {folder}")
    return [read_accelerate_config(f, settings.plan.gpus) for f in files]


# ---------------------------------------------------------------------------------------------- training
def plan_training(spec: StageSpec, models: ProfileModels, configs: list[AccelerateConfig], settings: Settings,
                  num_identities: int) -> dict[str, Any]:
    """One training stage: a fake step per distinct micro-batch, then every config's per-device numbers."""
    p = settings.plan
    measured: dict[int, StepMemory] = {}
    out_configs: dict[str, Any] = {}
    for cfg in configs:
        if spec.batch_size % cfg.num_processes:
            out_configs[cfg.name] = {"num_processes": cfg.num_processes, "kind": cfg.kind, "fits": False,
                                     "peak_gib": None, "error": f"batch_size {spec.batch_size} is not divisible by "
                                     f"{cfg.num_processes} processes (the trainer refuses it)"}
            continue
        micro = spec.batch_size // cfg.num_processes
        if micro not in measured:
            t0 = time.perf_counter()
            measured[micro] = measure_training_step(spec, models, micro, num_identities, settings.backbone_only)
            logger.info("%s: fake step at micro-batch %d in %.1f s", spec.stage, micro, time.perf_counter() - t0)
        m = measured[micro]
        mem = device_memory(m, cfg, p.cuda_context_gib, p.allocator_fraction)
        step_flops = m.flops * spec.grad_accum  # per device per optimizer step
        seconds = step_flops / settings.flops_per_second
        entry = {
            "kind": cfg.kind, "num_processes": cfg.num_processes, "micro_batch": micro, "grad_accum": spec.grad_accum,
            "memory_gib": mem.as_dict(), "peak_gib": round(mem.peak_gib, 3), "total_gib": round(mem.total_gib, 3),
            "fits": mem.total_gib <= p.gpu_memory_gib, "flops_per_device_step": float(step_flops),
            "seconds_per_step": round(seconds, 3), "stage_hours": round(seconds * spec.steps / 3600, 3),
            "gpu_hours": round(seconds * spec.steps * cfg.num_processes / 3600, 2),
        }
        if spec.ema.enabled and cfg.kind in ("zero2", "zero3", "fsdp"):
            entry["error"] = "EMA is refused by the trainer under FSDP / DeepSpeed (ema.enabled: false, or DDP)"
            entry["fits"] = False
        out_configs[cfg.name] = entry
    for cfg in configs:
        entry = out_configs[cfg.name]
        if not entry["fits"] and "memory_gib" in entry:
            entry["to_fit"] = training_fixes(spec, measured[entry["micro_batch"]], cfg, out_configs, settings)
    first = next(iter(measured.values())) if measured else None
    one = measured.get(spec.batch_size)  # one process: the global micro-batch, FLOPs of a whole step
    flops_step = (one.flops if one else (first.flops * spec.batch_size // max(_micro_of(measured, first), 1))) * spec.grad_accum
    return {
        "parameters": int(sum(first.parameters.values())) if first else None,
        "trainable_parameters": int(sum(first.trainable.values())) if first else None,
        "parameters_by_group": first.parameters if first else {},
        "trainable_by_group": first.trainable if first else {},
        "weights_gib_by_part": {k: round(v / GIB, 3) for k, v in first.weight_bytes.items()} if first else {},
        "flops_per_step": float(flops_step),
        "flops_by_op_per_micro_batch": {str(k): float(v) for k, v in (one or first).flops_by_op.items()} if first else {},
        "steps": spec.steps, "global_batch": spec.batch_size, "grad_accum": spec.grad_accum,
        "mixed_precision": spec.mixed_precision, "gradient_checkpointing": spec.gradient_checkpointing,
        "backbone": spec.train.backbone, "identities": num_identities, "precompute": spec.precompute.enabled,
        "ema": spec.ema.enabled, "video": list(video_shape(spec.data, models)),
        "configs": out_configs,
    }


def _micro_of(measured: dict[int, StepMemory], m: StepMemory) -> int:
    return next(k for k, v in measured.items() if v is m)


def training_fixes(spec: StageSpec, m: StepMemory, cfg: AccelerateConfig, all_configs: dict[str, Any],
                   settings: Settings) -> list[str]:
    """Settings that would make `cfg` fit, each with the per-device total it gives where the arithmetic
    allows (configs that fit; optimizer offload; precompute; EMA off; checkpointing; micro-batch)."""
    p, fixes = settings.plan, []
    for name, other in all_configs.items():
        if other.get("fits"):
            fixes.append(f"accelerate config {name} ({other['total_gib']:.1f} GiB per device)")
    def total(mm: StepMemory, c: AccelerateConfig) -> float:
        return device_memory(mm, c, p.cuda_context_gib, p.allocator_fraction).total_gib
    if cfg.kind in ("zero2", "zero3") and not cfg.offload_optimizer:
        t = total(m, dataclasses.replace(cfg, offload_optimizer=True))
        fixes.append(f"deepspeed offload_optimizer_device: cpu ({t:.1f} GiB)")
    if not spec.precompute.enabled and "text_encoder" in m.weight_bytes:
        lighter = dataclasses.replace(m, weight_bytes={k: v for k, v in m.weight_bytes.items() if k != "text_encoder"})
        fixes.append(f"train.*.precompute.enabled: true (text encoder off the device: at most {total(lighter, cfg):.1f} GiB)")
    if spec.ema.enabled and cfg.kind in ("single", "ddp"):
        fixes.append(f"ema.enabled: false ({total(dataclasses.replace(m, ema_bytes=0), cfg):.1f} GiB)")
    if not spec.gradient_checkpointing:
        fixes.append("gradient_checkpointing: true (activations measured without it: "
                     f"{m.activation_bytes / GIB:.1f} GiB)")
    micro = spec.batch_size // cfg.num_processes
    if micro > 1:
        fixes.append(f"a smaller micro-batch than {micro} per device (batch_size / processes, with grad_accum "
                     "for the same global batch): activations scale with it")
    return fixes


# ---------------------------------------------------------------------------------------------- sampling
def plan_sampling(params: dict, models: ProfileModels, settings: Settings) -> dict[str, Any]:
    """The sample stage: one video's phases fake, then every offload x VAE-tiling mode."""
    sp = validate_model(SampleParams, section(params, "sample"), "sample")
    dtype_name = str(getattr(sp, "dtype", "float32"))
    if dtype_name not in SAMPLE_DTYPES:
        raise ValueError(f"sample.dtype {dtype_name!r}: the plan knows {sorted(SAMPLE_DTYPES)}")
    offload = str(getattr(sp, "offload", "none"))
    tiling = bool(getattr(sp, "vae_tiling", False))
    k = int(section(params, "benchmark").get("max_identities", 2))
    frames, height, width = sp.num_frames or models.num_frames, sp.height or models.height, sp.width or models.width
    m = measure_sampling(models, sp, k, settings.backbone_only)
    p = settings.plan
    methods = 1 if settings.backbone_only else len(sp.methods)
    configs: dict[str, Any] = {}
    for mode in OFFLOADS:
        for tiled in (False, True):
            peak, phase = sampling_peak_bytes(m, mode, tiled)
            allowance = p.cuda_context_gib * GIB + p.allocator_fraction * peak
            flops = video_flops(m, sp.steps, tiled)
            seconds = flops / settings.flops_per_second
            configs[f"offload_{mode}{'_tiled' if tiled else ''}"] = {
                "offload": mode, "vae_tiling": tiled, "configured": mode == offload and tiled == tiling,
                "peak_gib": round(peak / GIB, 3), "peak_phase": phase, "allowance_gib": round(allowance / GIB, 3),
                "total_gib": round((peak + allowance) / GIB, 3), "fits": (peak + allowance) / GIB <= p.gpu_memory_gib,
                "seconds_per_video": round(seconds, 2),
                "gpu_hours": round(seconds * methods * p.sample_cases / 3600, 2),
            }
    configured = next(v for v in configs.values() if v["configured"])
    if not configured["fits"]:
        configured["to_fit"] = [f"sample.offload: {v['offload']}, vae_tiling: {v['vae_tiling']} ({v['total_gib']:.1f} GiB)"
                                for v in configs.values() if v["fits"]]
    return {
        "parameters": int(sum(m.parameters.values())),
        "trainable_parameters": 0,
        "parameters_by_part": m.parameters,
        "weights_gib_by_part": {k2: round(v / GIB, 3) for k2, v in m.weight_bytes.items()},
        "phase_peak_gib": {k2: round(v / GIB, 3) for k2, v in m.phase_peak_bytes.items()},
        "phase_flops": {k2: float(v) for k2, v in m.phase_flops.items()},
        "flops_per_step": float(m.phase_flops["denoise"]),
        "flops_per_video": float(video_flops(m, sp.steps, tiling)),
        "flops_by_op_per_step": {str(k2): float(v) for k2, v in m.flops_by_op.items()},
        "dtype": dtype_name, "steps": sp.steps, "guidance_scale": sp.guidance_scale, "identities": k,
        "methods": methods, "cases": p.sample_cases, "video": [frames, height, width],
        "configs": configs,
    }


# ---------------------------------------------------------------------------------------------- all
def make_plan(params: dict, settings: Settings, stages: list[str] | None = None) -> dict[str, Any]:
    """The plan of `stages` (default: train_stage1, train_stage2, sample) for merged `params`."""
    models = profile_models(section(params, "prepare"))
    configs = accelerate_configs(settings)
    train = section(params, "train", required=True)
    k_default = int(section(params, "benchmark").get("max_identities", 2))
    launch = validate_model(LaunchParams, section(params, "launch"), "launch")
    out: dict[str, Any] = {}
    for stage in stages or [*TRAIN_STAGES, "sample"]:
        t0 = time.perf_counter()
        if stage in TRAIN_STAGES:
            spec = build_stage_spec(train, TRAIN_STAGES[stage])
            if settings.backbone_only:
                spec = backbone_only_spec(spec)
            # the stage's configured launch (params `launch:`) is one of the rows, marked
            stage_configs, configured = mark_configured(configs, launch_accelerate_config(launch.for_stage(stage)))
            try:
                out[stage] = plan_training(spec, models, stage_configs, settings, spec.identities.max or k_default)
            except NothingToTrain as e:
                logger.info("%s skipped: %s", stage, e)
                out[stage] = {"skipped": str(e), "configs": {}}
            else:
                out[stage]["configured"] = configured
                out[stage]["configs"][configured]["configured"] = True
        elif stage == "sample":
            out[stage] = plan_sampling(params, models, settings)
        else:
            raise ValueError(f"no plan for stage {stage!r}; stages: {', '.join([*TRAIN_STAGES, 'sample'])}")
        out[stage]["plan_seconds"] = round(time.perf_counter() - t0, 1)
    p = settings.plan
    return {
        "settings": {**p.model_dump(), "backbone_only": settings.backbone_only, "profile": section(params, "prepare").get("profile", "tiny"),
                     "allowance": f"{p.cuda_context_gib} GiB CUDA context + {p.allocator_fraction:.0%} of the counted peak"},
        "stages": out,
    }


def backbone_only_spec(spec: StageSpec) -> StageSpec:
    """The stage with no identity modules training (the bare backbone has none): its backbone setting
    as given, no routing loss."""
    train = spec.train.model_copy(update={"projector": False, "injectors": False, "routers": False})
    return spec.model_copy(update={"train": train, "routing": spec.routing.model_copy(update={"weight": 0.0})})


def markdown_table(plan: dict[str, Any]) -> str:
    """One row per stage and config: memory terms, total, fits (the configured launch marked), time and
    GPU-hours; then what does not fit, the configured launches first."""
    s = plan["settings"]
    lines = [f"Plan for profile `{s['profile']}`{' (bare backbone)' if s['backbone_only'] else ''}: "
             f"{s['gpu_memory_gib']:g} GiB per GPU, {s['mfu']:.0%} MFU of {s['gpu_peak_tflops']:g} TFLOP/s, "
             f"allowance {s['allowance']}.", "",
             "| stage | config | GPUs | micro-batch | weights | grads | optimizer | EMA | activations | peak | total | fits | s/step | GPU-h |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for stage, st in plan["stages"].items():
        if "skipped" in st:
            lines.append(f"| {stage} | | | | | | | | | | | skipped: {st['skipped']} | | |")
        for name, c in st["configs"].items():
            if stage == "sample":
                act = st["phase_peak_gib"]["decode_tiled" if c["vae_tiling"] and c["peak_phase"] == "decode" else c["peak_phase"]]
                lines.append(f"| {stage} | {name} | 1 | 1 | {c['peak_gib'] - act:.1f} | | | | {act:.1f} ({c['peak_phase']}) | "
                             f"{c['peak_gib']:.1f} | {c['total_gib']:.1f} | {'yes' if c['fits'] else 'no'}"
                             f"{' (configured)' if c['configured'] else ''} | {c['seconds_per_video'] / st['steps']:.2f} | "
                             f"{c['gpu_hours']:.1f} ({st['cases']} cases x {st['methods']} methods) |")
                continue
            if "memory_gib" not in c:
                lines.append(f"| {stage} | {name} | {c['num_processes']} | | | | | | | | | no: {c['error']}"
                             f"{' (configured)' if c.get('configured') else ''} | | |")
                continue
            mem = c["memory_gib"]
            fits = ("yes" if c["fits"] else ("no" + (f": {c['error']}" if "error" in c else ""))) + \
                (" (configured)" if c.get("configured") else "")
            lines.append(
                f"| {stage} | {name} | {c['num_processes']} | {c['micro_batch']} | {mem['weights_gib']:.1f} | "
                f"{mem['gradients_gib'] + mem['gradient_buckets_gib']:.1f} | {mem['optimizer_gib']:.1f} | {mem['ema_gib']:.1f} | "
                f"{max(mem['activations_gib'], mem['encode_gib'], mem['optimizer_step_gib']):.1f} | {c['peak_gib']:.1f}"
                f"{' (precompute)' if mem['precompute_gib'] >= mem['peak_gib'] > 0 else ''} | {c['total_gib']:.1f} | {fits} | "
                f"{c['seconds_per_step']:.2f} | {c['gpu_hours']:.1f} |")
    lines.append("")
    for line in configured_misfits(plan):  # what the stages will run cannot fit: first, in bold
        lines.append(f"- **DOES NOT FIT: {line}**")
    for stage, st in plan["stages"].items():
        for name, c in st["configs"].items():
            if c.get("to_fit"):
                lines.append(f"- {stage} / {name} does not fit; would fit with: " + "; ".join(c["to_fit"]))
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("ingredients.plan.plan", __doc__)
    add_plan_arguments(parser)
    return parser


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The plan's flags (shared with `ingredients plan`); --params comes from the caller."""
    parser.add_argument("overrides", nargs="*", type=Path, help="override params files merged on top, in order")
    parser.add_argument("--gpus", type=int, help="processes of every multi-process accelerate config (plan.gpus)")
    parser.add_argument("--gpu-memory-gib", type=float, help="memory of one GPU in GiB (plan.gpu_memory_gib)")
    parser.add_argument("--mfu", type=float, help="model FLOPs utilisation for time (plan.mfu)")
    parser.add_argument("--backbone-only", action="store_true", help="plan the bare CogVideoX transformer")
    parser.add_argument("--stage", action="append", choices=[*TRAIN_STAGES, "sample"], help="only these stages")
    parser.add_argument("--json", type=Path, default=Path("outputs/plan/plan.json"), help="output JSON (a .md table beside it)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Merge params, make the plan, write JSON and Markdown atomically; returns the plan."""
    params = load_merged(args.params, tuple(args.overrides))
    plan_params = validate_model(PlanParams, section(params, "plan"), "plan")
    updates = {k: v for k, v in (("gpus", args.gpus), ("gpu_memory_gib", args.gpu_memory_gib), ("mfu", args.mfu)) if v is not None}
    if updates:
        plan_params = validate_model(PlanParams, {**plan_params.model_dump(), **updates}, "plan (command line)")
    plan = make_plan(params, Settings(plan_params, args.backbone_only), args.stage)
    write_json(args.json, plan)
    write_text(args.json.with_suffix(".md"), markdown_table(plan))
    logger.info("plan written to %s", args.json)
    return plan


def configured_misfits(plan: dict[str, Any]) -> list[str]:
    """One line per stage whose configured launch (training) or runtime (sampling) does not fit."""
    lines = []
    for stage, st in plan["stages"].items():
        for name, c in st["configs"].items():
            if c.get("configured") and not c["fits"]:
                need = f"{c['total_gib']:.1f} GiB" if c.get("total_gib") is not None else c.get("error", "")
                fixes = "; ".join(c.get("to_fit") or []) or "none the plan knows"
                lines.append(f"{stage}: the configured {name} needs {need} of {plan['settings']['gpu_memory_gib']:g} GiB "
                             f"per device; would fit with: {fixes}")
    return lines


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    plan = run(build_parser().parse_args(argv))
    logger.info("\n%s", markdown_table(plan))
    for line in configured_misfits(plan):  # the launch the stages will run cannot fit: say so loudly
        logger.warning("DOES NOT FIT: %s", line)


if __name__ == "__main__":
    main()
