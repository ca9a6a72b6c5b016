"""Curation killed midway and rerun gives the manifest of an uninterrupted run."""

from __future__ import annotations

import pytest

import os
import signal
import subprocess
import sys
import time

from ingredients.data.curate import curate
from ingredients.data.curation_params import CurationParams
from tests.interruption import assert_no_partial_outputs


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_manifest(tiny_raw, tiny_curated):
    ref_out, _ = tiny_curated
    out = tiny_raw.parent / "killed"  # same depth as the reference output: same relative paths
    params = tiny_raw.parent / "params_kill.yaml"
    params.write_text("curate:\n  num_workers: 2\n")  # the pool path; num_workers does not change results
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingredients.data.curate", "--raw", str(tiny_raw), "--out", str(out), "--params", str(params)],
        start_new_session=True,  # its own process group: the kill takes the pool workers too
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    work = out / "work"
    deadline = time.monotonic() + 240
    try:
        while not (work.is_dir() and any(p.suffix == ".json" and not p.name.startswith(".") for p in work.iterdir())):
            assert proc.poll() is None, "curation ended before the first per-video result appeared"
            assert time.monotonic() < deadline, "no per-video result within 240 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = sorted(p.name for p in work.iterdir() if p.suffix == ".json" and not p.name.startswith("."))  # not a write in flight
    assert 1 <= len(done_before) < 4
    assert not (out / "manifest.jsonl").exists()
    assert assert_no_partial_outputs(out).checked["json"] == len(done_before)  # per-video results, refs, masks load

    report = curate(tiny_raw, out, CurationParams(num_workers=1))
    assert report["throughput"]["run_videos"] == 4 - len(done_before)  # finished videos were reused
    assert (out / "manifest.jsonl").read_text() == (ref_out / "manifest.jsonl").read_text()
    for ref in sorted((ref_out / "refs").rglob("*.png")):
        assert (out / ref.relative_to(ref_out)).read_bytes() == ref.read_bytes()
    assert sorted(p.name for p in work.iterdir() if p.suffix == ".json") == [f"vid_{i:03d}.json" for i in range(4)]
    assert_no_partial_outputs(out, allow_temps=False)

    # a second rerun does no work and leaves the manifest as it is
    again = curate(tiny_raw, out, CurationParams())
    assert again["throughput"]["run_videos"] == 0
    assert (out / "manifest.jsonl").read_text() == (ref_out / "manifest.jsonl").read_text()
