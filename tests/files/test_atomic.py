"""ingredients.files.atomic: the temp names atomic writes use, and the sweep of the temps a killed writer
leaves behind (real SIGKILLs of child processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ingredients.files.atomic import (atomic_dir, atomic_path, find_stale_temps, is_atomic_temp_name, remove_stale_temps,
                                write_json)
from ingredients.files.atomic import write_png


def _killed_mid_write(folder: Path) -> None:
    """A child process that starts four atomic writes (file, data-package PNG, folder, nested file),
    finishes one more, then dies by SIGKILL inside the last write."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from ingredients.files.atomic import atomic_dir, atomic_path, write_json
        folder = Path({str(folder)!r})
        write_json(folder / "done.json", {{"ok": 1}})
        with atomic_path(folder / "video.mp4") as a, atomic_path(folder / "refs" / "0.png", suffix=".tmp.png") as b, \\
                atomic_dir(folder / "model") as c, atomic_path(folder / "cache" / "m" / "case.json") as d:
            a.write_bytes(b"half a video")
            b.write_bytes(b"half a png")
            (c / "weights.safetensors").write_bytes(b"half")
            d.write_text('{{"fingerpr')
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_temp_names_of_every_writer_are_recognised(tmp_path):
    seen = []
    with atomic_path(tmp_path / "case_01.mp4") as tmp:
        seen.append(tmp.name)
    with atomic_path(tmp_path / "manifest") as tmp:  # no suffix
        seen.append(tmp.name)
    with atomic_dir(tmp_path / "model") as tmp:
        seen.append(tmp.name)
    with atomic_path(tmp_path / "case.routing.safetensors") as tmp:
        seen.append(tmp.name)
    write_png(tmp_path / "ref.png", np.zeros((2, 2, 3), dtype=np.uint8))
    assert all(is_atomic_temp_name(n) for n in seen), seen
    assert seen[0].startswith(".case_01.mp4.") and seen[0].endswith(".mp4")
    # finished outputs and other hidden names are not temps
    for name in ("case_01.mp4", "model", "ref.png", ".gitignore", ".dvc", ".step-00000004.tmp", ".cache",
                 ".a.mp4.ABCDEFGH.mp4", ".a.mp4.abcdefg.mp4", ".a.mp4.abcdefgh.png", "a.mp4.abcdefgh.mp4", ".abcdefgh"):
        assert not is_atomic_temp_name(name), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.routing.safetensors", "case_01.mp4", "manifest", "model", "ref.png"]


def test_sweep_removes_what_a_killed_writer_left(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".gitignore").write_text("x\n")  # hidden, but not a temp
    _killed_mid_write(out)
    stale = find_stale_temps(out)
    assert sorted(str(p.relative_to(out).parent) for p in stale) == [".", ".", "cache/m", "refs"]
    assert all(is_atomic_temp_name(p.name) for p in stale)
    assert not (out / "video.mp4").exists() and not (out / "model").exists()  # never under a final name
    # not recursive: only the folder's own entries
    assert len(find_stale_temps(out, recursive=False)) == 2
    assert remove_stale_temps(out) == 4
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [".gitignore", "cache", "cache/m", "done.json", "refs"]
    assert remove_stale_temps(out) == 0
    assert remove_stale_temps(tmp_path / "absent") == 0


def test_sweep_leaves_a_write_in_flight_alone(tmp_path):
    """A live writer's temp (its lock is held) survives the sweep, and its write still lands."""
    with atomic_path(tmp_path / "a.json") as tmp, atomic_dir(tmp_path / "model") as folder:
        tmp.write_text("{}")
        (folder / "w.bin").write_bytes(b"1")
        assert remove_stale_temps(tmp_path) == 0
        assert tmp.exists() and folder.is_dir()
    assert (tmp_path / "a.json").read_text() == "{}"
    assert (tmp_path / "model" / "w.bin").read_bytes() == b"1"
    assert find_stale_temps(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("{")
        raise RuntimeError("writer failed")
    write_json(tmp_path / "b.json", {"k": 1})
    assert sorted(os.listdir(tmp_path)) == ["b.json"]


def test_resuming_training_clears_interrupted_checkpoint_saves(tmp_path):
    """The training checkpoints' own temp folders (fixed names, see checkpoint.py): resuming removes
    a half-assembled one and puts back a checkpoint whose replacement was interrupted."""
    from ingredients.training import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    for step in (2, 4):
        (root / ckpt.checkpoint_name(step)).mkdir(parents=True)
        (root / ckpt.checkpoint_name(step) / "state.json").write_text('{"step": %d}' % step)
    ckpt.temp_checkpoint_dir(root, 6).mkdir()  # killed while assembling step 6
    (ckpt.temp_checkpoint_dir(root, 6) / "trainable.safetensors").write_bytes(b"half")
    # killed inside move_into_place re-saving step 4: the old one moved aside, the new one not yet in place
    os.replace(root / ckpt.checkpoint_name(4), root / ".step-00000004.old")
    # killed after the new step 2 arrived, before the old one was deleted
    (root / ".step-00000002.old").mkdir()
    (root / ".step-00000002.old" / "state.json").write_text('{"step": 2, "old": true}')
    os.close(tempfile.mkstemp(prefix=".notes.json.", suffix=".json", dir=root)[0])  # an atomic write's temp
    assert ckpt.resolve_resume("latest", root).name == "step-00000004"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002", "step-00000004"]
    assert (root / "step-00000002" / "state.json").read_text() == '{"step": 2}'
    assert ckpt.remove_stale_checkpoint_temps(root) == 0


def test_replacing_a_folder_never_leaves_a_half_deleted_one(tmp_path, monkeypatch):
    """atomic_dir over an existing folder, the process dying while the old folder is deleted
    (simulated: the deletion stops after one file): the final name holds the complete new folder,
    the rest of the old one sits under a temp name that the sweep clears."""
    import shutil

    model = tmp_path / "model"
    model.mkdir()
    for name in ("model_index.json", "weights.safetensors"):
        (model / name).write_text("old " + name)

    def dies_midway(path, *args, **kwargs):
        next(Path(path).iterdir()).unlink()
        raise SystemExit("killed while deleting")

    with pytest.raises(SystemExit), atomic_dir(model) as tmp:
        for name in ("model_index.json", "weights.safetensors"):
            (tmp / name).write_text("new " + name)
        monkeypatch.setattr(shutil, "rmtree", dies_midway)
    monkeypatch.undo()
    assert sorted(p.read_text() for p in model.iterdir()) == ["new model_index.json", "new weights.safetensors"]
    leftovers = find_stale_temps(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].is_dir() and len(list(leftovers[0].iterdir())) == 1
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
