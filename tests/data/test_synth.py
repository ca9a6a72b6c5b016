"""The synthetic raw data: deterministic, faces where the ground truth says, detectable by dlib."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ingredients.data import synth
from ingredients.faces.base import box_iou
from ingredients.files.video_io import read_video
from tests.conftest import TINY_INDICES
from tests.data.conftest import load_gt


@pytest.fixture(scope="module")
def dlib_upsample0():
    from ingredients.faces.registry import build_analyzer

    return build_analyzer("dlib", upsample=0)


@pytest.mark.parametrize("name", [s.name for s in synth.IDENTITY_SOURCES])
def test_annotated_source_boxes_match_the_detector(name, dlib_upsample0):
    """The hard-coded face box of every source photo is where dlib (upsample 0, as annotated)
    finds the face."""
    src = synth.SOURCES_BY_NAME[name]
    faces = dlib_upsample0.detect(src.load())
    ious = box_iou(np.array([src.face_box], dtype=float), np.stack([f.box for f in faces]))[0]
    assert ious.max() >= 0.95, f"{name}: best IoU {ious.max():.2f}"


def test_synthesis_is_deterministic():
    train, held = synth.split_identities(0, 2)
    a_frames, a_gt, a_cap = synth.synthesize_video(1, 0, train)
    b_frames, b_gt, b_cap = synth.synthesize_video(1, 0, train)
    assert np.array_equal(a_frames, b_frames) and a_gt == b_gt and a_cap == b_cap
    c_frames, _, _ = synth.synthesize_video(1, 1, train)
    assert not np.array_equal(a_frames, c_frames)
    assert not set(a_gt["identities"]) & set(held)


def test_raw_folder_layout_and_split(tiny_raw):
    split = json.loads((tiny_raw / "split.json").read_text())
    assert len(split["heldout_identities"]) == 2
    assert not set(split["heldout_identities"]) & set(split["train_identities"])
    for name, rel in split["heldout_references"].items():
        assert (tiny_raw / rel).is_file()
    seen = set()
    for i in TINY_INDICES:
        stem = f"vid_{i:03d}"
        gt = load_gt(tiny_raw, stem)
        seen |= set(gt["identities"])
        caption = (tiny_raw / f"{stem}.txt").read_text().strip()
        assert caption and all(synth.SOURCES_BY_NAME[n].description in caption.lower() for n in gt["identities"])
        frames, fps = read_video(tiny_raw / f"{stem}.mp4")
        assert fps == synth.FPS and frames.shape == (gt["num_frames"], synth.HEIGHT, synth.WIDTH, 3)
        assert len(gt["frames"]) == gt["num_frames"] and gt["shots"][-1]["end"] == gt["num_frames"]
        assert 2.0 <= gt["num_frames"] / fps <= 4.0
    assert not seen & set(split["heldout_identities"])


def test_ground_truth_faces_are_detected(tiny_raw, dlib_analyzer):
    """Every fully visible ground-truth face is found by dlib at upsample 1, with no false alarm."""
    total = hits = false_alarms = 0
    ious = []
    for i in TINY_INDICES:
        stem = f"vid_{i:03d}"
        gt = load_gt(tiny_raw, stem)
        frames, _ = read_video(tiny_raw / f"{stem}.mp4")
        for t in range(0, len(frames), 3):
            faces = dlib_analyzer.detect(frames[t])
            det = np.stack([f.box for f in faces]) if faces else np.zeros((0, 4))
            gtb = np.array([a["box"] for a in gt["frames"][t] if a["visible"] >= 0.99]).reshape(-1, 4)
            iou = box_iou(gtb, det)
            total += len(gtb)
            if iou.size:
                hits += int((iou.max(1) >= 0.5).sum())
                ious += iou.max(1).tolist()
                false_alarms += int((iou.max(0) < 0.3).sum())
            else:
                false_alarms += len(det)
    assert total > 60
    assert hits / total >= 0.97, f"recall {hits}/{total}"
    assert false_alarms == 0
    assert np.mean(ious) >= 0.7


def test_carphone_background_hides_its_passenger(dlib_analyzer):
    """The defocused carphone background has no detectable face (so ground truth is complete)."""
    frames = synth.render_background("carphone", 16, np.random.default_rng(3))
    for f in frames[::3]:
        assert dlib_analyzer.detect(np.clip(np.rint(f), 0, 255).astype(np.uint8)) == []
