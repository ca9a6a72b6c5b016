"""Test helpers for issue #9's interruption tests: SIGKILL a stage's CLI mid-run, then check that
nothing it left behind could be taken for a finished output.

    killed = run_and_kill([sys.executable, "-m", "ingredients.sampling.sample", ...], ready=lambda: n_done() >= 1)
    check = assert_no_partial_outputs(out, frames=5)   # raises on any truncated or undecodable file
    check.temps                                        # temp files of the interrupted writes

A plain module (not a conftest) so that tests of every package can import it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingredients.files.atomic import is_atomic_temp_name

# the training checkpoint's fixed-name temp folders (ingredients.training.checkpoint)
_CHECKPOINT_TEMP = re.compile(r"^\.step-\d{8}\.(tmp|old)$")


@dataclass
class Killed:
    """A run stopped by SIGKILL: its output (stdout and stderr together) and how long it ran."""

    output: str
    seconds: float


def run_and_kill(cmd: Sequence[str], ready: Callable[[], bool], timeout: float = 300.0, poll: float = 0.02,
                 env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None) -> Killed:
    """Start `cmd` in its own process group, wait until `ready()` is true, SIGKILL the whole group.

    Fails (AssertionError with the output's tail) when the command ends before `ready()` turns true,
    i.e. when the kill would not have interrupted anything, or when `timeout` seconds pass.
    """
    with tempfile.TemporaryFile() as log:
        start = time.monotonic()
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)  # its own group: the kill takes workers too
        try:
            while not ready():
                if proc.poll() is not None:
                    raise AssertionError(f"{' '.join(cmd[:3])} ... ended (exit {proc.returncode}) before it "
                                         f"could be killed mid-run:\n{_tail(log)}")
                if time.monotonic() - start > timeout:
                    raise AssertionError(f"not ready within {timeout} s:\n{_tail(log)}")
                time.sleep(poll)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group is gone already
                pass
            proc.wait()
        seconds = time.monotonic() - start
        if proc.returncode != -signal.SIGKILL:
            raise AssertionError(f"the run ended with exit {proc.returncode}, not by the kill:\n{_tail(log)}")
        return Killed(_tail(log, 1 << 20), seconds)


def run_to_end(cmd: Sequence[str], timeout: float = 300.0, env: dict[str, str] | None = None,
               cwd: str | os.PathLike | None = None) -> str:
    """Run `cmd` to completion; returns its output, fails with the output's tail on a non-zero exit."""
    proc = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd[:3])} ... exit {proc.returncode}:\n{proc.stdout[-4000:]}"
    return proc.stdout


def _tail(log, limit: int = 4000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]


@dataclass
class OutputCheck:
    """What `assert_no_partial_outputs` looked at: files checked by kind, files of other kinds (not
    trusted by any reader, not checked), and temp files or folders of interrupted writes."""

    checked: Counter = field(default_factory=Counter)
    unchecked: list[Path] = field(default_factory=list)
    temps: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.checked.values())


def is_temp_name(name: str) -> bool:
    """A temp file or folder of an interrupted write: `ingredients.files.atomic`'s names, or a training
    checkpoint being assembled (`.step-XXXXXXXX.tmp`) or replaced (`.step-XXXXXXXX.old`)."""
    return is_atomic_temp_name(name) or bool(_CHECKPOINT_TEMP.match(name))


def assert_no_partial_outputs(root: str | os.PathLike, frames: int | Callable[[Path], int | None] | None = None,
                              allow_temps: bool = True) -> OutputCheck:
    """Check that every file under `root` a later stage would trust is complete, by its kind:
    JSON parses, JSONL parses line by line and ends with a newline, CSV rows have the header's
    width, mp4 decodes (to `frames` frames: a count, or a function of the path giving one or None),
    safetensors, npz and PNG load in full, .pt loads with weights_only=True.

    Temp files and folders of interrupted writes are collected in the result, not descended into;
    with `allow_temps=False` any of them is a failure too. Raises AssertionError listing every problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise AssertionError(f"output folder {root} does not exist")
    result, problems = OutputCheck(), []
    for here, dirs, files in os.walk(root):
        here = Path(here)
        temp_dirs = sorted(d for d in dirs if is_temp_name(d))
        result.temps += [here / d for d in temp_dirs]
        dirs[:] = sorted(d for d in dirs if d not in temp_dirs)
        for name in sorted(files):
            path = here / name
            if is_temp_name(name):
                result.temps.append(path)
                continue
            kind = _kind(name)
            if kind is None:
                result.unchecked.append(path)
                continue
            try:
                _CHECKS[kind](path, frames)
            except Exception as exc:  # any failure to read is what this check reports
                problems.append(f"{path.relative_to(root)}: {type(exc).__name__}: {exc}")
            result.checked[kind] += 1
    if result.temps and not allow_temps:
        problems += [f"{p.relative_to(root)}: temp file of an interrupted write left behind" for p in result.temps]
    if problems:
        raise AssertionError(f"{len(problems)} partial or leftover file(s) under {root}:\n  " + "\n  ".join(problems))
    return result


def _kind(name: str) -> str | None:
    for suffix in (".safetensors", ".jsonl", ".json", ".mp4", ".png", ".npz", ".pt", ".csv"):
        if name.endswith(suffix):
            return suffix[1:]
    return None


def _check_json(path: Path, _frames) -> None:
    json.loads(path.read_text(encoding="utf-8"))


def _check_jsonl(path: Path, _frames) -> None:
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        raise ValueError("last line has no newline (truncated)")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {lineno}: {exc}") from exc


def _check_csv(path: Path, _frames) -> None:
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        raise ValueError("last row has no newline (truncated)")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ValueError("no header")
    bad = [i for i, r in enumerate(rows[1:], start=2) if len(r) != len(rows[0])]
    if bad:
        raise ValueError(f"rows {bad[:5]} do not have the header's {len(rows[0])} fields")


def _check_mp4(path: Path, frames) -> None:
    from ingredients.files.video_io import read_video

    video, _ = read_video(path)
    want = frames(path) if callable(frames) else frames
    if want is not None and video.shape[0] != want:
        raise ValueError(f"{video.shape[0]} frames decoded, expected {want}")


def _check_safetensors(path: Path, _frames) -> None:
    from safetensors.torch import load_file

    load_file(str(path))


def _check_png(path: Path, _frames) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decodes every row: a truncated file fails here


def _check_npz(path: Path, _frames) -> None:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            data[key]  # decompresses and CRC-checks the member


def _check_pt(path: Path, _frames) -> None:
    import torch

    torch.load(path, map_location="cpu", weights_only=True)


_CHECKS: dict[str, Callable[[Path, object], None]] = {
    "json": _check_json, "jsonl": _check_jsonl, "csv": _check_csv, "mp4": _check_mp4,
    "safetensors": _check_safetensors, "png": _check_png, "npz": _check_npz, "pt": _check_pt,
}
