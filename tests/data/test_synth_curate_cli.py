"""docs/measurements.md's curation measurement, `python -m ingredients.data.synth --out raw && python -m
ingredients.data.curate --raw raw --out cur`, test-sized: the two CLIs (in this process, through their
`main`) on one synthesised video. What curation keeps from the four-video set is tested in
tests/data/test_curate.py on the session's `tiny_curated`."""

from __future__ import annotations

import json

import yaml

from ingredients.data.curate import main as curate_main
from ingredients.data.synth import main as synth_main


def test_synth_then_curate_by_their_commands(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synth": {"num_videos": 1, "num_heldout": 2}}))
    synth_main(["--params", str(params), "--out", str(tmp_path / "raw")])
    assert sorted(p.name for p in (tmp_path / "raw").glob("*.mp4")) == ["vid_000.mp4"]
    curate_main(["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "cur")])
    report = json.loads((tmp_path / "cur" / "report.json").read_text())
    assert report["videos"]["total"] == 1
    clips = [json.loads(line) for line in (tmp_path / "cur" / "manifest.jsonl").read_text().splitlines()]
    assert clips and all(clip["identities"] for clip in clips)
