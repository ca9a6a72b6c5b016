"""Run or queue the ablation override files of `experiments/` as DVC experiments.

    python -m ingredients.experiments run experiments/no_routing_loss.yaml [--dry-run]
    python -m ingredients.experiments queue experiments/*.yaml [--dry-run]   # then: dvc exp run --run-all

A file's nested keys become `dvc exp run -n <file stem> -S key.path=value ...`, so DVC records the
experiment with exactly those parameter changes and reruns only the stages that read them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import deep_merge, load_params, validate_params

logger = logging.getLogger(__name__)


def flatten_overrides(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"stage2": {"routing": {"weight": 0}}}} -> {"train.stage2.routing.weight": 0}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_overrides(value, name + "."))
        else:
            out[name] = value
    return out


def override_args(path: Path, base: Path = Path("params.yaml")) -> list[str]:
    """`-S key=value` arguments for an override file, after validating the merged params."""
    override = load_params(path)
    validate_params(deep_merge(load_params(base), override))
    args = []
    for key, value in flatten_overrides(override).items():
        args += ["-S", f"{key}={json.dumps(value)}"]
    return args


def exp_command(path: Path, queue: bool) -> list[str]:
    return ["dvc", "exp", "run", *(["--queue"] if queue else []), "-n", path.stem, *override_args(path)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ingredients.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "queue"])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc commands instead of running them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "run" and len(args.files) != 1:
        parser.error("`run` takes one file; use `queue` for several")
    for path in args.files:
        cmd = exp_command(path, queue=args.command == "queue")
        if args.dry_run:
            print(shlex.join(cmd))  # noqa: T201 - the command is the output
        else:
            logger.info("%s", shlex.join(cmd))
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
