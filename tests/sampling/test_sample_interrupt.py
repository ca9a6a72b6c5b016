"""`python -m ingredients.sampling.sample` killed with SIGKILL mid-run (issue #9): no partial video or routing
file is left under a final name, the rerun skips the cases already done, removes the temp files of
the interrupted writes, and its outputs equal an uninterrupted run's byte for byte."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from instruments.photo_cases import write_photo_cases
from ingredients.files.video_io import read_video
from tests.interruption import assert_no_partial_outputs, run_and_kill, run_to_end
from tests.training.conftest import SMALL_MODEL

# slow: keeps the default suite within 15 minutes on 2 idle cores (measured 17 min 25 s with it, fresh clone)
pytestmark = pytest.mark.slow

METHODS = ("ours", "no_identity")  # ours also writes routing files
logger = logging.getLogger(__name__)
# one thread: bit-reproducible across processes
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cmd(root: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "ingredients.sampling.sample", "--params", str(root / "params.yaml"), "--benchmark",
            str(root / "bench" / "bench.jsonl"), "--model", str(root / "model"), "--out", str(out), "--cache-dir", str(cache)]


def _videos(out: Path) -> list[Path]:
    """Finished videos (not the hidden temp of one being written: glob's `*` matches those too)."""
    return sorted(p for m in METHODS for p in (out / m).glob("*.mp4") if not p.name.startswith("."))


def _outputs(out: Path) -> dict[str, bytes]:
    """Every output file by relative path (temp files included: none may be left)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from ingredients.model_folder.folder import prepare_tiny_folder

    root = tmp_path_factory.mktemp("sample_kill")
    prepare_tiny_folder(root / "model", seed=0, **SMALL_MODEL)
    cases = [json.loads(line)["case_id"] for line in write_photo_cases(root / "bench").read_text().splitlines()]
    assert len(cases) == 3
    (root / "params.yaml").write_text(yaml.safe_dump({"sample": {"methods": list(METHODS), "steps": 1, "guidance_scale": 1.0}}))
    full, killed = root / "full", root / "killed"
    run_to_end(_cmd(root, full, root / "cache_full"), env=ENV)
    # a complete video has as many frames as the uninterrupted run's (8 here: the CogVideoX VAE
    # decodes the 2 latent frames of sample_frames=5 to 2 x 4, its temporal upsampling of an even count)
    counts = {read_video(p)[0].shape[0] for p in _videos(full)}
    assert len(counts) == 1
    frames = counts.pop()

    total = len(METHODS) * len(cases)
    run_and_kill(_cmd(root, killed, root / "cache_killed"), ready=lambda: len(_videos(killed)) >= 2, env=ENV)
    after_kill = assert_no_partial_outputs(killed, frames=frames)
    done = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _videos(killed)}
    logger.info("killed after %d of %d videos; %d file(s) checked, %d temp(s) left", len(done), total,
                after_kill.total, len(after_kill.temps))
    assert 2 <= len(done) < total, f"the kill landed after the run finished: {len(done)} of {total} videos"
    assert not (killed / "samples.json").exists()
    # a video write the kill interrupted: a truncated mp4 under atomic_path's temp name
    method, case = next((m, c) for m in METHODS for c in cases if not (killed / m / f"{c}.mp4").exists())
    (killed / method).mkdir(exist_ok=True)
    fd, planted = tempfile.mkstemp(prefix=f".{case}.mp4.", suffix=".mp4", dir=killed / method)
    with os.fdopen(fd, "wb") as f:
        f.write((full / method / f"{case}.mp4").read_bytes()[:1000])
    log = run_to_end(_cmd(root, killed, root / "cache_killed"), env=ENV)
    return {"full": full, "killed": killed, "done": done, "after_kill": after_kill, "planted": Path(planted),
            "log": log, "total": total, "frames": frames}


def test_killed_run_left_no_partial_output(runs):
    check = runs["after_kill"]
    # every finished video decodes to the full clip; routing files load
    assert check.checked["mp4"] == len(runs["done"])
    assert check.checked["safetensors"] >= sum(p.parent.name == "ours" for p in runs["done"])


def test_rerun_skips_the_cases_already_done(runs):
    done = runs["done"]
    assert f"sampled {runs['total'] - len(done)} videos ({len(done)} already present)" in runs["log"]
    for path, (inode, mtime) in done.items():  # not rewritten: same file, untouched
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == (inode, mtime), path


def test_rerun_removes_the_temp_files_of_interrupted_writes(runs):
    assert not runs["planted"].exists()
    check = assert_no_partial_outputs(runs["killed"], frames=runs["frames"], allow_temps=False)
    assert check.checked["mp4"] == runs["total"]
    assert check.checked["safetensors"] == runs["total"] // len(METHODS)  # one routing file per `ours` case
    assert check.checked["json"] == 1  # samples.json


def test_outputs_equal_an_uninterrupted_run(runs):
    full, killed = _outputs(runs["full"]), _outputs(runs["killed"])
    assert sorted(full) == sorted(killed)
    assert len([k for k in full if k.endswith(".mp4")]) == runs["total"]
    different = [k for k in full if k != "samples.json" and full[k] != killed[k]]
    assert different == []
    # samples.json names the output's inputs, with no timing fields: equal as JSON
    assert json.loads(full["samples.json"]) == json.loads(killed["samples.json"])
