"""Run or queue the ablation override files of `experiments/` as DVC experiments.

    python -m experiments.ablations run experiments/no_routing_loss.yaml [--dry-run]
    python -m experiments.ablations queue experiments/*.yaml [--dry-run]   # then: dvc exp run --run-all
    python -m experiments.ablations queue experiments/*.yaml --run         # queue, run all, fail on a failure

A file's nested keys become `dvc exp run -n <file stem> -S key.path=value ...`, so DVC records the
experiment with exactly those parameter changes and reruns only the stages that read them.
`dvc exp run --run-all` exits 0 even when experiments fail (they are marked Failed in
`dvc queue status`); `queue --run` runs the queue and exits 1 naming each experiment of these files
that did not succeed, with the command that shows its log.
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

from study.params import validate_params
from ingredients.config import deep_merge, flatten, load_params

logger = logging.getLogger(__name__)


def _has_key(params: Mapping[str, Any], dotted: str) -> bool:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def override_args(paths: Path | list[Path], base: Path = Path("params.yaml")) -> list[str]:
    """`-S` arguments for override files (merged in order), after validating the merged params.

    DVC applies `-S` with Hydra's grammar on a struct config: `key=value` may only change a key that
    `base` has, and `+key=value` only add one it lacks ("Key 'full' is not in struct" otherwise), so
    each key gets the form its presence in `base` asks for.
    """
    override: dict = {}
    for path in [paths] if isinstance(paths, Path) else paths:
        override = deep_merge(override, load_params(path))
    base_params = load_params(base)
    validate_params(deep_merge(base_params, override))
    args = []
    for key, value in flatten(override).items():
        args += ["-S", f"{'' if _has_key(base_params, key) else '+'}{key}={json.dumps(value)}"]
    return args


def exp_command(path: Path | list[Path], queue: bool) -> list[str]:
    """The `dvc exp run` command of one experiment: an override file, or several merged in order
    (named by their stems joined with '+')."""
    paths = [path] if isinstance(path, Path) else list(path)
    return ["dvc", "exp", "run", *(["--queue"] if queue else []), "-n", experiment_name(paths), *override_args(paths)]


def experiment_name(paths: list[Path]) -> str:
    """An experiment's name: its override files' stems joined with '+'."""
    return "+".join(p.stem for p in paths)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.ablations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "queue"])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc commands instead of running them")
    parser.add_argument("--run", action="store_true",
                        help="queue only: then run the queue (dvc exp run --run-all) and exit 1 if any of these experiments failed")
    args = parser.parse_args(argv)
    if args.run and args.command != "queue":
        parser.error("--run goes with queue (run starts its experiment itself)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # run: the files are merged into one experiment (e.g. a profile and your study's settings);
    # queue: one experiment per file
    groups = [args.files] if args.command == "run" else [[p] for p in args.files]
    if args.command == "queue" and not args.dry_run:
        done = existing_experiments() & {experiment_name(g) for g in groups}
        for name in sorted(done):
            logger.warning("experiment %r already exists for this commit (an earlier run): kept as it is, not queued "
                           "again; `dvc exp remove %s` to run it anew", name, name)
        groups = [g for g in groups if experiment_name(g) not in done]
    for group in groups:
        cmd = exp_command(group, queue=args.command == "queue")
        if args.dry_run:
            print(shlex.join(cmd))  # noqa: T201 - the command is the output
        else:
            logger.info("%s", shlex.join(cmd))
            subprocess.run(cmd, check=True)
    if args.run and not args.dry_run:
        names = [experiment_name(group) for group in groups]
        subprocess.run(["dvc", "exp", "run", "--run-all"], check=False)
        failed = {name: state for name, state in queue_states(names).items() if state != "Success"}
        if failed:
            raise SystemExit("experiments that did not succeed: " + ", ".join(f"{n} ({s})" for n, s in sorted(failed.items()))
                             + "; see `dvc queue logs <name>`")
        logger.info("all %d experiments succeeded; compare them: dvc exp show --only-changed", len(names))


def existing_experiments() -> set[str]:
    """Names of the DVC experiments of the current commit (DVC refuses to queue a name twice)."""
    out = subprocess.run(["dvc", "exp", "list", "--name-only"], capture_output=True, text=True, check=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def queue_states(names: list[str]) -> dict[str, str]:
    """{experiment name: its newest state in DVC's queue (Queued, Running, Success, Failed)}; a name the
    queue does not know is 'Missing'."""
    from dvc.repo import Repo

    states: dict[str, tuple[Any, str]] = {}
    with Repo() as repo:
        for entry in repo.experiments.celery_queue.status():
            name, when = entry.get("name"), entry.get("timestamp")
            if name in names and (name not in states or (when and states[name][0] and when >= states[name][0])):
                states[name] = (when, entry.get("status", "Unknown"))
    return {name: states[name][1] if name in states else "Missing" for name in names}


if __name__ == "__main__":
    main()
