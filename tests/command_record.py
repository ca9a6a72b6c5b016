"""The executed-command record: every command a test starts, as it started it.

While pytest runs, every `subprocess.Popen` of the test process (so `subprocess.run`, the e2e helpers
`shell()` and `dvc()`, `run_cli`, `run_and_kill`, ...) appends one JSON line to the record file, and so
does every command line one of this project's CLIs parses in the test process (a test calling a module's
`main([...])`: its argparse `parse_args`, called from a module of the project's packages, is recorded as
`python -m MODULE ARGS`, or `ingredients ARGS` for `ingredients.cli`). A line holds the test's node
id (`PYTEST_CURRENT_TEST`; a module fixture's commands count for the first test that used it), the
command's argument list exactly as started (argv[0] of this environment's `python`/`dvc`/... shortened to
its name) and, for `bash -c`, the command line bash ran. The e2e helpers add each stage command DVC
printed as run (`"how": "dvc stage"`, tests/e2e/project.py). Each finished test adds a `{"ran": nodeid,
"outcome": ...}` line, so a reader knows which tests the record covers.

The file is `$INGREDIENTS_COMMAND_RECORD` when set (`.ci/run` sets it once, so the default suite and the
slow uses it runs after it share one record), else `commands.jsonl` in the session's pytest base
temporary folder (its path is printed at the end of the run). tests/test_documented_commands.py
compares the docs with it.
"""

from __future__ import annotations

import argparse
import contextlib
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
    if _fixture:
        entry["fixture"] = _fixture[-1]
    if len(argv) >= 3 and Path(argv[0]).name in ("bash", "sh") and argv[1] == "-c":
        entry["line"] = argv[2]
    _append(entry)


_fixture: list[str] = []


@contextlib.contextmanager
def in_fixture(name: str):
    """Commands started inside mark their entries `"fixture": name`: a session fixture's commands run for
    whichever test takes it first, so a check can name the fixture instead of a test."""
    _fixture.append(name)
    try:
        yield
    finally:
        _fixture.pop()


def record_outcome(nodeid: str, outcome: str) -> None:
    _append({"ran": nodeid, "outcome": outcome})


def read(path: Path | None = None) -> list[dict]:
    path = path or record_path()
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


PACKAGES = ("ingredients", "eval", "study", "experiments", "instruments")
ORIGINAL_PARSE_ARGS = argparse.ArgumentParser.parse_args  # unrecorded: for checks that only parse


def _cli_module(frame) -> str | None:
    """The project module whose code called parse_args (a `python -m` run's `__main__` by its spec)."""
    g = frame.f_globals
    name = g.get("__name__", "")
    if name == "__main__" and g.get("__spec__") is not None:
        name = g["__spec__"].name
    return name if name.split(".")[0] in PACKAGES else None


class Recording:
    """Popen and argparse patched for the session: each start and each project CLI's parse is recorded,
    then runs as before."""

    def __init__(self):
        self._popen_init = subprocess.Popen.__init__
        self._parse_args = argparse.ArgumentParser.parse_args

    def __enter__(self):
        popen_init, parse_args = self._popen_init, self._parse_args

        def recording_init(popen, args, *a, **kw):
            record(args, cwd=kw.get("cwd"), shell=bool(kw.get("shell", False)))
            popen_init(popen, args, *a, **kw)

        def recording_parse_args(parser, args=None, namespace=None):
            module = _cli_module(sys._getframe(1))
            if module is not None:
                argv = list(sys.argv[1:] if args is None else args)
                program = ["ingredients"] if module == "ingredients.cli" else ["python", "-m", module]
                record([*program, *argv], how="in-process", cwd=os.getcwd())
            return parse_args(parser, args, namespace)

        subprocess.Popen.__init__ = recording_init
        argparse.ArgumentParser.parse_args = recording_parse_args
        return self

    def __exit__(self, *exc):
        subprocess.Popen.__init__ = self._popen_init
        argparse.ArgumentParser.parse_args = self._parse_args


def command_text(entry: dict) -> str:
    """The command as a shell line: bash's line for `bash -c`, else the quoted argument list."""
    return entry.get("line") or shlex.join(entry["argv"])
