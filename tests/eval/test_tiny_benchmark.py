"""The tiny benchmark's targets: crops of the held-out videos' frames, far apart, of the same person
as the reference photo and not the photo itself (copy-paste needs theta(target, reference) > 0)."""

from __future__ import annotations

import json

import numpy as np

from eval.metrics.copy_paste import MIN_ANGLE, angles
from eval.tiny_benchmark import build_tiny_benchmark
from eval.video_faces import embed_reference
from ingredients.data.synth import synthesize
from ingredients.faces.image_io import load_rgb
from ingredients.sampling.benchmark import read_benchmark


def test_cases_carry_targets_from_the_heldout_videos(tmp_path, dlib_analyzer):
    raw = tmp_path / "raw"
    summary = synthesize(raw, seed=0, num_heldout=3, indices=[], num_heldout_videos=2)
    bench = build_tiny_benchmark(raw / "split.json", ["a prompt"], 2, 0, tmp_path / "bench")
    cases = read_benchmark(bench)
    assert cases and all(len(c.targets) == len(c.references) for c in cases)
    in_videos = set()
    for rel in json.loads((raw / "split.json").read_text())["heldout_videos"]:
        in_videos |= set(json.loads((raw / rel.replace(".mp4", ".gt.json")).read_text())["identities"])
    assert in_videos  # the held-out videos show held-out people
    for case in cases:
        for ref, targets in zip(case.references, case.targets):
            name = ref.stem
            assert bool(targets) == (name in in_videos), (name, targets)
            assert all(t.parent == (tmp_path / "bench" / "targets").resolve() and t.name.startswith(name) for t in targets)
            r = embed_reference(dlib_analyzer, load_rgb(ref))
            for t in targets:  # the same person (dlib's verification threshold), not the photo
                theta = float(angles(r[None], embed_reference(dlib_analyzer, load_rgb(t))[None])[0, 0])
                assert MIN_ANGLE < theta < np.arccos(dlib_analyzer.verification_threshold), (t, theta)
    # first and last fully visible frame: two targets per person shown in a video, far apart
    names = {p.name.split("__")[0] for p in (tmp_path / "bench" / "targets").iterdir()}
    assert names == in_videos and summary.heldout_identities
    # ground truth: a held-out shot of exactly the case's people, for the vae_roundtrip baseline
    shots = set()
    for rel in json.loads((raw / "split.json").read_text())["heldout_videos"]:
        shots |= {frozenset(s["identities"]) for s in json.loads((raw / rel.replace(".mp4", ".gt.json")).read_text())["shots"]}
    with_truth = [c for c in cases if c.ground_truth is not None]
    assert with_truth and all(frozenset(r.stem for r in c.references) in shots for c in with_truth)
    assert all(frozenset(r.stem for r in c.references) not in shots for c in cases if c.ground_truth is None)
