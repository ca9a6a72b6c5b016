"""Bad inputs are counted and skipped, filters drop clips by reason, a real video curates sensibly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ingredients.data.curate import curate
from ingredients.data.curation_params import CurationParams
from ingredients.data.manifest import read_manifest
from ingredients.data.synth import carphone_path, synthesize


@pytest.fixture(scope="module")
def messy_curated(tmp_path_factory, tiny_raw):
    """Defect recipes (brief identity, small faces + short shot, crowd, no faces) plus broken files."""
    raw = tmp_path_factory.mktemp("messy") / "raw"
    synthesize(raw, seed=0, indices=[4, 5, 6, 7])
    good = (tiny_raw / "vid_000.mp4").read_bytes()
    (raw / "empty.mp4").write_bytes(b"")
    (raw / "empty.txt").write_text("an empty file\n")
    (raw / "truncated.mp4").write_bytes(good[:700])
    (raw / "truncated.txt").write_text("a truncated file\n")
    (raw / "garbage.mp4").write_bytes(b"not a video at all" * 64)
    (raw / "garbage.txt").write_text("garbage\n")
    (raw / "bad_sidecar.mp4").write_bytes(good)
    (raw / "bad_sidecar.txt").write_bytes(b"\xff\xfe\xfa caption in no known encoding")
    (raw / "dir_sidecar.mp4").write_bytes(good)
    (raw / "dir_sidecar.txt").mkdir()
    (raw / "blank_sidecar.mp4").write_bytes(good)
    (raw / "blank_sidecar.txt").write_text("  \n")
    (raw / "no_sidecar.mp4").write_bytes(good)
    out = raw.parent / "curated"
    return raw, out, curate(raw, out, CurationParams())


def test_broken_inputs_are_counted_and_skipped(messy_curated):
    _, _, report = messy_curated
    assert report["videos"]["total"] == 11
    assert report["videos"]["skipped"] == {
        "corrupt_video": 2,
        "empty_video": 1,
        "missing_caption": 1,
        "no_faces": 1,
        "unreadable_sidecar": 3,
    }
    files = report["videos"]["skipped_files"]
    assert "empty.mp4" in files["empty"] and "truncated.mp4" in files["truncated"]
    assert "vid_007" in files and "bad_sidecar.txt" in files["bad_sidecar"]


def test_filters_drop_clips_by_reason(messy_curated):
    _, out, report = messy_curated
    # vid_004: an identity only in the last 30% of the shot; vid_005: small faces, then a 5-frame
    # shot; vid_006: four people; nothing else survives
    assert report["clips"]["dropped"] == {"briefly_visible": 1, "face_too_small": 1, "too_many_identities": 1, "too_short": 1}
    assert report["clips"]["kept"] == 0
    assert read_manifest(out / "manifest.jsonl") == []


def test_filters_follow_their_settings(messy_curated):
    """Relaxing the filters keeps the same clips (the drops are due to the settings, not bugs)."""
    raw, _, _ = messy_curated
    only = raw.parent / "subset"
    only.mkdir()
    for stem in ("vid_004", "vid_006"):
        for ext in (".mp4", ".txt", ".gt.json"):
            shutil.copy(raw / f"{stem}{ext}", only / f"{stem}{ext}")
    params = CurationParams(min_visible_fraction=0.2, max_identities=4)
    report = curate(only, raw.parent / "relaxed", params)
    assert report["clips"]["dropped"] == {} and report["clips"]["kept"] == 2
    assert report["identity_histogram"] == {"2": 1, "4": 1}
    assert report["ground_truth"]["identity_accuracy"] >= 0.95


def test_real_video_carphone(tmp_path):
    """The real carphone clip (176x144 stored with 128:117 pixels, so shown 193x144; 30 fps): one shot,
    one identity, a smooth full-length track, in displayed pixels."""
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(carphone_path(), raw / "carphone.mp4")
    (raw / "carphone.txt").write_text("A man in a suit talks in the back seat of a moving car.\n")
    # the face is ~50 px in this low-resolution video: lower the size filter; detect every 2nd frame
    report = curate(raw, tmp_path / "out", CurationParams(min_face_size=32, detect_stride=2))
    clips = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert len(clips) == 1 and report["clips"]["dropped"] == {}
    clip = clips[0]
    assert (clip.start_frame, clip.end_frame) == (0, 120) and abs(clip.fps - 29.97) < 0.01
    assert (clip.width, clip.height) == (193, 144)
    assert clip.num_identities == 1
    boxes = clip.identities[0].boxes
    present = np.array([b for b in boxes if b is not None])  # [N, 4]
    assert len(present) >= 0.95 * 120
    centres = (present[:, :2] + present[:, 2:]) / 2
    sizes = np.sqrt((present[:, 2] - present[:, 0]) * (present[:, 3] - present[:, 1]))
    # the man's face stays in the left-centre of the frame, 45-65 px, moving at most a few px/frame
    assert (centres[:, 0] > 55).all() and (centres[:, 0] < 120).all()
    assert (centres[:, 1] > 40).all() and (centres[:, 1] < 90).all()
    assert sizes.min() >= 45 and sizes.max() <= 65
    assert np.abs(np.diff(centres, axis=0)).max() <= 8
    assert report["tracks"]["kept"] == 1
