"""The executed-command record: every command a test starts, as it started it.

While pytest runs, every `subprocess.Popen` of the test process (so `subprocess.run`, the e2e helpers
`shell()` and `dvc()`, `run_cli`, `run_and_kill`, ...) appends one JSON line to the record file, and
`run_in_process` does the same for a CLI a test runs in the test process. A line holds the test's node
id (`PYTEST_CURRENT_TEST`; a module fixture's commands count for the first test that used it), the
command's argument list exactly as started (argv[0] of this environment's `python`/`dvc`/... shortened to
its name) and, for `bash -c`, the command line bash ran. Each finished test adds a `{"ran": nodeid,
"outcome": ...}` line, so a reader knows which tests the record covers.

The file is `$INGREDIENTS_COMMAND_RECORD` when set (`.ci/run` sets it once, so the default suite and the
slow uses it runs after it share one record), else `commands.jsonl` in the session's pytest base
temporary folder (its path is printed at the end of the run). tests/test_documented_commands.py
compares the docs with it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

RECORD_ENV = "INGREDIENTS_COMMAND_RECORD"
_lock = threading.Lock()
_BIN = Path(sys.executable).parent


def record_path() -> Path | None:
    value = os.environ.get(RECORD_ENV)
    return Path(value) if value else None


def current_test() -> str:
    """The running test's node id ("" outside a test)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def _program(word: str) -> str:
    """`/…/.venv/bin/python3.11` -> `python`, `/…/.venv/bin/dvc` -> `dvc`; other paths unchanged."""
    path = Path(word)
    if path.parent == _BIN or word == sys.executable:
        return "python" if path.name.startswith("python") else path.name
    return word


def normalized(argv: list[str]) -> list[str]:
    return [_program(str(argv[0])), *map(str, argv[1:])] if argv else []


def _append(entry: dict) -> None:
    path = record_path()
    if path is None:
        return
    line = json.dumps(entry) + "\n"
    with _lock, path.open("a", encoding="utf-8") as f:
        f.write(line)


def record(args, how: str = "subprocess", cwd=None, shell: bool = False) -> None:
    """Append one started command (`args` as given to Popen: a list, or a string with shell=True)."""
    if isinstance(args, (str, bytes, os.PathLike)) and not isinstance(args, (list, tuple)):
        argv = ["/bin/sh", "-c", os.fsdecode(args)] if shell else [os.fsdecode(args)]
    else:
        argv = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args]
    argv = normalized(argv)
    entry = {"test": current_test(), "how": how, "argv": argv, "cwd": str(cwd) if cwd is not None else None}
    if len(argv) >= 3 and Path(argv[0]).name in ("bash", "sh") and argv[1] == "-c":
        entry["line"] = argv[2]
    _append(entry)


def record_outcome(nodeid: str, outcome: str) -> None:
    _append({"ran": nodeid, "outcome": outcome})


def read(path: Path | None = None) -> list[dict]:
    path = path or record_path()
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Recording:
    """Popen patched for the session: each start is recorded, then started as before."""

    def __init__(self):
        self._original = subprocess.Popen.__init__

    def __enter__(self):
        original = self._original

        def recording_init(popen, args, *a, **kw):
            record(args, cwd=kw.get("cwd"), shell=bool(kw.get("shell", False)))
            original(popen, args, *a, **kw)

        subprocess.Popen.__init__ = recording_init
        return self

    def __exit__(self, *exc):
        subprocess.Popen.__init__ = self._original


def run_in_process(program: list[str], argv: list[str]):
    """Run a documented CLI in this process, recorded like a started command: `program` is
    `["python", "-m", MODULE]` (run as `__main__` with `sys.argv` set) or `["ingredients"]`
    (`ingredients.cli.main`). Returns what main returns; SystemExit propagates."""
    import runpy

    record([*program, *argv], how="in-process", cwd=os.getcwd())
    if program == ["ingredients"]:
        from ingredients.cli import main

        return main(argv)
    assert program[:2] == ["python", "-m"], program
    saved = sys.argv
    sys.argv = [program[2], *argv]
    try:
        return runpy.run_module(program[2], run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


def command_text(entry: dict) -> str:
    """The command as a shell line: bash's line for `bash -c`, else the quoted argument list."""
    return entry.get("line") or shlex.join(entry["argv"])
