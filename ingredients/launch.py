"""How a GPU stage gets its processes: `python -m ingredients.launch [launch options] -m MODULE [args]`.

Every GPU stage of dvc.yaml (train_stage1, train_stage2, sample) runs its module through this
launcher, with the launch taken from params.yaml's `launch:` section by DVC templating:

    python -m ingredients.launch --params params.yaml --stage train_stage2 --engine ${launch.train.engine}
      --accelerate-config ${launch.train.accelerate_config} --num-processes ${launch.train.num_processes}
      -m ingredients.training.train --params params.yaml ... --resume auto

Engines (the module's code is the same under each; see docs/scaling.md):
- `local`: the module runs in this process, as `python -m MODULE args` would (the tiny default);
- `accelerate`: `accelerate launch --config_file CONFIG --num_processes N -m MODULE args` on this
  machine, one process per GPU (2 CPU processes over gloo with configs/accelerate/cpu_ddp.yaml);
- `ray`: Ray Train (`TorchTrainer`, ingredients/launch_ray.py) runs the module's `main(args)` on N
  workers of the Ray cluster `compute.address` names (null: a local Ray instance); after a lost
  worker or node the group restarts (`launch.ray.max_failures`) and the module resumes: training from
  its last checkpoint (`--resume auto`), sampling per case (finished videos are skipped).

`train.<stage>.batch_size` stays the global batch whatever the process count (the trainer splits it).
Before a training stage starts, the pre-flight (ingredients/preflight.py) plans the configured launch
against the device's memory and refuses, naming the plan's fixes, when it cannot fit; the planned peak
reaches the trainer, which logs it beside the measured one in MLflow. `--dry-run` prints what would run.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

from ingredients.config import load_params, section, validate_model
from ingredients.launch_params import ENGINES, PLANNED_PEAK_ENV, STAGE_LAUNCH, LaunchParams, StageLaunch

logger = logging.getLogger(__name__)


def split_module(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """`[launch options] -m MODULE [module args]` -> (launch options, MODULE, module args)."""
    if "-m" not in argv or argv.index("-m") == len(argv) - 1:
        raise SystemExit("python -m ingredients.launch: expected `-m MODULE [args]` after the launch options")
    i = argv.index("-m")
    return argv[:i], argv[i + 1], argv[i + 2:]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ingredients.launch", description=__doc__,
                                     usage="%(prog)s --params FILE --stage STAGE [options] -m MODULE [args]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, required=True, help="params YAML (launch:, compute:, plan: sections)")
    parser.add_argument("--stage", required=True, choices=list(STAGE_LAUNCH), help="the dvc.yaml stage being run")
    parser.add_argument("--engine", choices=ENGINES, help="default: launch.<train|sample>.engine")
    parser.add_argument("--accelerate-config", help="default: launch.<train|sample>.accelerate_config")
    parser.add_argument("--num-processes", type=int, help="default: launch.<train|sample>.num_processes")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    return parser


def stage_launch(launch: LaunchParams, stage: str, args: argparse.Namespace) -> StageLaunch:
    """The stage's launch from params, with the command line's values (DVC's templating) on top."""
    given = {k: v for k, v in (("engine", args.engine), ("accelerate_config", args.accelerate_config),
                               ("num_processes", args.num_processes)) if v is not None}
    return validate_model(StageLaunch, {**launch.for_stage(stage).model_dump(), **given},
                          f"launch.{STAGE_LAUNCH[stage]} (with the command line)")


def accelerate_command(chosen: StageLaunch, module: str, module_args: list[str]) -> list[str]:
    """The `accelerate launch` command line of an `accelerate` launch (this environment's accelerate)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", chosen.accelerate_config,
            "--num_processes", str(chosen.num_processes), "-m", module, *module_args]


def run_local(module: str, module_args: list[str]) -> None:
    """`python -m MODULE args`, in this process."""
    sys.argv = [module, *module_args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> None:
    own, module, module_args = split_module(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    launch = validate_model(LaunchParams, section(params, "launch"), "launch")
    chosen = stage_launch(launch, args.stage, args)
    where = {"local": "1 process here", "accelerate": f"{chosen.num_processes} processes here ({chosen.accelerate_config})",
             "ray": f"{chosen.num_processes} Ray Train workers"}[chosen.engine]
    logger.info("%s: %s on %s", args.stage, module, where)
    if args.dry_run:
        if chosen.engine == "accelerate":
            sys.stdout.write(shlex.join(accelerate_command(chosen, module, module_args)) + "\n")
        else:
            sys.stdout.write(f"{chosen.engine}: {shlex.join([module, *module_args])} on {where}\n")
        return

    planned = None
    if args.stage.startswith("train_"):
        from ingredients.preflight import PreflightError, preflight

        try:
            planned = preflight(params, args.stage, chosen, launch)
        except PreflightError as err:
            raise SystemExit(str(err)) from None
    if planned is not None:
        os.environ[PLANNED_PEAK_ENV] = repr(planned)

    if chosen.engine == "local":
        run_local(module, module_args)
    elif chosen.engine == "accelerate":
        cmd = accelerate_command(chosen, module, module_args)
        logger.info("%s", shlex.join(cmd))
        code = subprocess.run(cmd, check=False).returncode
        if code:
            raise SystemExit(code)
    else:
        from ingredients.compute import ComputeParams
        from ingredients.launch_ray import run_ray_train

        compute = validate_model(ComputeParams, section(params, "compute"), "compute")
        run_ray_train(module, module_args, chosen, launch, compute, params, args.stage)


if __name__ == "__main__":
    main()
