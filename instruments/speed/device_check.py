"""Device check: real peak memory and time of the code the plan measures, beside the plan row of the same launch.

    python -m instruments.speed.device_check [--size full|rehearsal] [--params FILE ...] [--plan outputs/plan/plan.json]
                                             [--steps 2] [--tolerance 1.5] [--device cuda|cpu]

Random weights (nothing is downloaded), one device, one process. What runs is what the plan runs with
fake weights (ingredients/plan/stand_in_trainer.py, sampling_step.py), here with real ones:
- `train_stage1`, `train_stage2`: the trainer's own micro-step (`Trainer.micro_step`: data loader batch,
  canvas noise and encode, `compute_losses`, backward, clipping, AdamW, lr schedule, EMA when on) at the
  stage's `batch_size` on one process; one warm-up micro-step first, so the optimizer state exists.
- `sample`: the sample stage's pipeline (`configure_pipeline` with the stage's keys, offload none) and one
  `IngredientsPipeline.__call__` of `STEPS` guided steps and the decode.
Memory is what the device holds, weights included: `torch.cuda.max_memory_allocated` on a GPU; on a CPU
(no allocator statistics) the bytes of the weights, optimizer state and EMA held when the measured call
begins plus the live-storage counter's peak over them (real tensors, real kernels).

Like with like: each figure is compared with the plan row of the same launch, micro-batch, dtype and
phase: training with the plan's one-process config (its micro-batch must be the stage's batch_size,
its mixed precision the stage's), sampling with the row of offload none at the stage's VAE tiling (its
dtype the stage's); `peak_gib` of those rows is weights + activations, before the allowance. A row that
does not match says why (`plan=mismatch: ...`). Each line is `RESULT <name> key=value ...`; with a plan,
`peak_ratio` = measured / planned and `within=yes|no` (ratio within 1/tolerance .. tolerance); the
command exits 1 if a compared figure is outside or a row mismatches. Seconds are printed beside the
plan's (which assume `plan.mfu`; on a CPU they are not comparable). `--size full` (a GPU) reads
params.yaml + profiles/full.yaml; `--size rehearsal` adds profiles/rehearsal.yaml and writes the
rehearsal backbone configs (`instruments.rehearsal.write_backbone`) where it points, if missing.
Make the plan from the same params files (`ingredients plan --params ... --json PLAN`).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ingredients.config import load_merged, section, validate_model

logger = logging.getLogger(__name__)

GIB = float(2**30)
SIZES = {"full": ["params.yaml", "profiles/full.yaml"],
         "rehearsal": ["params.yaml", "profiles/full.yaml", "profiles/rehearsal.yaml"]}
STAGES = {"train_stage1": "stage1", "train_stage2": "stage2"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and id(t.untyped_storage()) not in seen:
            seen.add(id(t.untyped_storage()))
            total += t.untyped_storage().nbytes()
    return total


def measure(fn: Callable[[], Any], device: torch.device, steps: int, resident: Callable[[], list]) -> dict[str, float]:
    """`steps` timed calls of `fn` after the caller's warm-up; the peak allocated bytes over them (CUDA:
    the allocator's; CPU: `resident()`'s tensors + the live-storage counter's peak, module docstring)."""
    from ingredients.plan.storage_counter import LiveStorageCounter

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    held = _tensor_bytes(resident()) if device.type == "cpu" else 0
    counter = LiveStorageCounter() if device.type == "cpu" else None
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        if counter is not None:
            with counter:
                fn()
        else:
            fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        return {"seconds": statistics.median(times), "peak_allocated_gib": peak / GIB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB}
    return {"seconds": statistics.median(times), "peak_allocated_gib": (held + counter.peak) / GIB}


def train_stage(params: dict, stage: str, device: torch.device, steps: int) -> tuple[dict[str, float], dict[str, Any]]:
    """The stage's micro-step with random weights; returns the measurement and the launch it ran."""
    from ingredients.plan.model_configs import profile_models
    from ingredients.plan.stand_in_trainer import RandomWeights, StandInTrainer
    from ingredients.training.stage_spec import build_stage_spec

    spec = build_stage_spec(section(params, "train", required=True), STAGES[stage])
    k = spec.identities.max or int(section(params, "benchmark").get("max_identities", 2))
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        trainer = StandInTrainer(spec, profile_models(section(params, "prepare")), RandomWeights(device), Path(tmp), k)
        trainer.prepare_loop()
        batch = trainer.first_batch()
        trainer.micro_step(batch, 0)  # warm-up: the optimizer state, the allocator's pools
        micro = iter(range(1, steps + 1))

        def resident() -> list:
            parts = [trainer.transformer, trainer.pipe.vae] + ([] if trainer.text_encoder_parked else [trainer.pipe.text_encoder])
            state = [v for s in trainer.optimizer.optimizer.state.values() for v in s.values()]
            ema = list(trainer.ema.shadow_params) if trainer.ema is not None else []
            return [t for m in parts for t in (*m.parameters(), *m.buffers())] + state + ema

        result = measure(lambda: trainer.micro_step(trainer.first_batch(), next(micro)), device, steps, resident)
        launch = {"micro_batch": trainer.local_batch, "mixed_precision": spec.mixed_precision}
    return result, launch


def sample(params: dict, device: torch.device, steps: int) -> tuple[dict[str, float], dict[str, Any]]:
    """One video through the sample stage's path with random weights (the second call measured)."""
    from ingredients.plan.model_configs import profile_models
    from ingredients.plan.sampling_step import prepare_stand_in_video
    from ingredients.plan.stand_in_trainer import RandomWeights
    from ingredients.sampling.sample import SampleParams

    sp = validate_model(SampleParams, section(params, "sample"), "sample")
    k = int(section(params, "benchmark").get("max_identities", 2))
    models = profile_models(section(params, "prepare"))
    pipe, video = prepare_stand_in_video(RandomWeights(device), models, sp, k, device=device)
    video()  # warm-up

    def resident() -> list:  # offload none: every component on the device
        return [t for m in (pipe.text_encoder, pipe.transformer, pipe.vae) for t in (*m.parameters(), *m.buffers())]

    result = measure(video, device, steps, resident)
    return result, {"dtype": sp.dtype, "vae_tiling": sp.vae_tiling}


def plan_row(plan: dict | None, name: str, launch: dict[str, Any]) -> tuple[dict | None, str | None]:
    """The plan row of the same launch as `name` ran, or (None, why not)."""
    if plan is None:
        return None, "no plan"
    stage = plan.get("stages", {}).get(name)
    if stage is None:
        return None, "not in plan"
    if "skipped" in stage:
        return None, f"skipped in the plan ({stage['skipped']})"
    if name in STAGES:
        single = sorted((n, c) for n, c in stage["configs"].items() if c.get("num_processes") == 1 and "memory_gib" in c)
        if not single:
            return None, "mismatch: the plan has no one-process config"
        row_name, row = single[0]
        if row["micro_batch"] != launch["micro_batch"]:
            return None, (f"mismatch: the plan's one-process row {row_name} has micro-batch {row['micro_batch']}, this "
                          f"check ran {launch['micro_batch']}: make the plan from the same params")
        if stage.get("mixed_precision") != launch["mixed_precision"]:
            return None, (f"mismatch: the plan's mixed precision is {stage.get('mixed_precision')}, this check ran "
                          f"{launch['mixed_precision']}")
        return {"peak_gib": row["peak_gib"], "seconds": row["seconds_per_step"] / max(row.get("grad_accum", 1), 1),
                "row": row_name}, None
    if stage.get("dtype") != launch["dtype"]:
        return None, f"mismatch: the plan samples in {stage.get('dtype')}, this check in {launch['dtype']}"
    rows = [(n, c) for n, c in stage["configs"].items() if c["offload"] == "none" and c["vae_tiling"] == launch["vae_tiling"]]
    if not rows:
        return None, "mismatch: the plan has no row of offload none at this VAE tiling"
    row_name, row = rows[0]
    return {"peak_gib": row["peak_gib"], "seconds": None, "row": row_name}, None


def result_line(name: str, measured: dict[str, float], row: dict | None, why: str | None, tolerance: float) -> tuple[str, bool]:
    """The RESULT line and whether it passes (a compared figure within tolerance, or nothing to compare)."""
    parts = [f"RESULT {name}"] + [f"{k}={v:.4f}" for k, v in measured.items()]
    if row is None:
        parts.append(f"plan={why}")
        return " ".join(parts), not why.startswith("mismatch")
    ratio = measured["peak_allocated_gib"] / row["peak_gib"]
    ok = 1 / tolerance <= ratio <= tolerance
    parts += [f"plan_row={row['row']}", f"plan_peak_gib={row['peak_gib']:.4f}", f"peak_ratio={ratio:.3f}",
              f"within={'yes' if ok else 'no'}"]
    if row.get("seconds"):
        parts += [f"plan_seconds={row['seconds']:.4f}", f"seconds_ratio={measured['seconds'] / row['seconds']:.3f}"]
    return " ".join(parts), ok


def ensure_rehearsal_backbone(params: dict) -> None:
    """profiles/rehearsal.yaml's backbone configs (tiny weights), written where it points if missing."""
    from ingredients.plan.model_configs import backbone_folder
    from instruments.rehearsal import write_backbone

    prepare = section(params, "prepare")
    folder = (prepare.get("full") or {}).get("backbone")
    if folder and backbone_folder(prepare) is None:
        logger.info("writing the rehearsal backbone to %s", folder)
        write_backbone(Path(folder), 0)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m instruments.speed.device_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--params", nargs="+", type=Path, help="params files, merged in order (default: by --size)")
    parser.add_argument("--plan", type=Path, default=Path("outputs/plan/plan.json"), help="the plan JSON, if present")
    parser.add_argument("--steps", type=int, default=2, help="measured calls after the warm-up call")
    parser.add_argument("--tolerance", type=float, default=1.5, help="a peak ratio outside 1/t .. t fails")
    parser.add_argument("--stage", action="append", choices=[*STAGES, "sample"], help="only these (default: all)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.size == "full" and args.params is None and device.type != "cuda":
        raise SystemExit("--size full needs a CUDA GPU (80 GB); use --size rehearsal on a CPU")
    files = args.params or [Path(f) for f in SIZES[args.size]]
    params = load_merged(files[0], tuple(files[1:]))
    if args.size == "rehearsal":
        ensure_rehearsal_backbone(params)
    plan = json.loads(args.plan.read_text()) if args.plan.is_file() else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = [f"DEVICE {name} size={args.size} torch={torch.__version__} plan={args.plan if plan else 'no plan'}"]
    print(lines[0], flush=True)  # noqa: T201 - the command's output is these lines
    ok = True
    for stage in args.stage or [*STAGES, "sample"]:
        measured, launch = train_stage(params, stage, device, args.steps) if stage in STAGES else sample(params, device, args.steps)
        line, passed = result_line(stage, measured, *plan_row(plan, stage, launch), args.tolerance)
        ok &= passed
        lines.append(line)
        print(line, flush=True)  # noqa: T201
    if not ok:
        sys.exit(1)
    return lines


if __name__ == "__main__":
    main()
