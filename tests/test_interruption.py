"""The interruption test helpers (tests/interruption.py) catch what they are meant to catch: every
kind of truncated output, leftover temps, and a command that ends before it could be killed."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ingredients.files.video_io import write_video
from tests.interruption import assert_no_partial_outputs, run_and_kill


def _complete_outputs(root):
    """One complete file of every checked kind; returns {kind: path}."""
    rng = np.random.default_rng(0)
    paths = {
        "json": root / "a.json", "jsonl": root / "sub" / "b.jsonl", "csv": root / "log.csv", "mp4": root / "v.mp4",
        "safetensors": root / "w.safetensors", "png": root / "i.png", "npz": root / "m.npz", "pt": root / "o.pt",
    }
    paths["jsonl"].parent.mkdir()
    paths["json"].write_text(json.dumps({"k": [1, 2, 3]}))
    paths["jsonl"].write_text('{"a": 1}\n{"a": 2}\n')
    paths["csv"].write_text("step,loss\n1,0.5\n2,0.25\n3,0.125\n")
    write_video(paths["mp4"], rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8), fps=8)
    save_file({"w": torch.arange(4000, dtype=torch.float32)}, str(paths["safetensors"]))
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(paths["png"])
    np.savez_compressed(paths["npz"], masks=rng.integers(0, 2, (4, 64, 64)).astype(bool))
    torch.save({"state": {0: torch.ones(100)}}, paths["pt"])
    (root / "notes.txt").write_text("not checked")
    return paths


def test_complete_outputs_pass(tmp_path):
    _complete_outputs(tmp_path)
    check = assert_no_partial_outputs(tmp_path, frames=5, allow_temps=False)
    assert dict(check.checked) == {k: 1 for k in ("json", "jsonl", "csv", "mp4", "safetensors", "png", "npz", "pt")}
    assert [p.name for p in check.unchecked] == ["notes.txt"] and check.temps == []


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv", "mp4", "safetensors", "png", "npz", "pt"])
def test_each_kind_of_truncated_file_is_caught(tmp_path, kind):
    path = _complete_outputs(tmp_path)[kind]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # what a killed non-atomic writer leaves
    with pytest.raises(AssertionError, match=rf"1 partial or leftover file.*\n  .*{path.name}"):
        assert_no_partial_outputs(tmp_path)


def test_wrong_frame_count_is_caught(tmp_path):
    _complete_outputs(tmp_path)
    with pytest.raises(AssertionError, match="5 frames decoded, expected 9"):
        assert_no_partial_outputs(tmp_path, frames=9)


def test_temps_are_reported_and_fail_when_not_allowed(tmp_path):
    _complete_outputs(tmp_path)
    fd, tmp = tempfile.mkstemp(prefix=".v.mp4.", suffix=".mp4", dir=tmp_path)
    os.close(fd)
    (tmp_path / "checkpoints" / ".step-00000004.tmp").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".step-00000004.tmp" / "trainable.safetensors").write_bytes(b"half")  # not checked
    check = assert_no_partial_outputs(tmp_path)
    assert sorted(p.name for p in check.temps) == [".step-00000004.tmp", Path(tmp).name]
    with pytest.raises(AssertionError, match="2 partial or leftover"):
        assert_no_partial_outputs(tmp_path, allow_temps=False)


def test_run_and_kill_kills_the_whole_group_and_refuses_a_finished_run(tmp_path):
    marker, child = tmp_path / "started", tmp_path / "child_alive"
    # a parent with a child process (like a worker pool); both must die
    (tmp_path / "child.py").write_text(f"import pathlib, time\nwhile True:\n    pathlib.Path({str(child)!r}).touch()\n    time.sleep(0.05)\n")
    (tmp_path / "parent.py").write_text(f"import pathlib, subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(tmp_path / 'child.py')!r}])\n"
                                        f"pathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n")
    killed = run_and_kill([sys.executable, str(tmp_path / "parent.py")], ready=lambda: marker.exists() and child.exists(), timeout=30)
    assert killed.seconds < 30
    child.unlink()
    time.sleep(0.3)
    assert not child.exists()  # the child died with the group
    with pytest.raises(AssertionError, match="ended .* before it could be killed"):
        run_and_kill([sys.executable, "-c", "pass"], ready=lambda: False, timeout=30)
