"""Curation of footage as devices record it (issue 30), on videos these tests make with ffmpeg's CLI from
the tiny synthesised faces: variable frame rate with a cut between two people, a phone's rotation, a
DVD's non-square pixels, MJPEG, a long single shot, high resolution, and the messages of item 5."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingredients.data.curate import curate
from ingredients.data.curation_params import CurationParams
from ingredients.data.manifest import read_manifest
from ingredients.data.sources import DataParams
from ingredients.faces.base import box_iou
from ingredients.files.video_io import read_video
from tests.files.test_video_decode import encode_rgb, ffmpeg

FAST = dict(detect_stride=3, contact_sheet_clips=0, masker="box")


def person_frames(tiny_raw: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two people alone in their shots: vid_000's 24 frames (t1_person4) and vid_003's first shot (12
    frames of t1_person1) played forth, back and forth (36 frames); both 384 x 256."""
    a, _ = read_video(tiny_raw / "vid_000.mp4")
    b, _ = read_video(tiny_raw / "vid_003.mp4", 0, 12)
    return a, np.concatenate([b, b[::-1], b])


def vfr_video(folder: Path, tiny_raw: Path) -> Path:
    """A hard cut from a 24 fps second of one person to 0.6 s at 60 fps of another, joined by ffmpeg's
    concat filter with `-fps_mode vfr`, as a phone records (PyAV guesses its rate as 120)."""
    a, b = person_frames(tiny_raw)
    pa, pb = encode_rgb(folder / "a.mp4", a, 24), encode_rgb(folder / "b.mp4", b, 60)
    path = folder / "vfr.mp4"
    ffmpeg("-i", str(pa), "-i", str(pb), "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12", str(path))
    pa.unlink()
    pb.unlink()
    return path


def test_a_cut_in_variable_frame_rate_footage_splits_the_two_people(tiny_raw, tmp_path):
    """Finding 1: PySceneDetect's PyAV backend numbered frames at the guessed 120 fps, so given the frame
    count (60) as end it scanned 0.5 s, missed the cut at 1.0 s, and the two people fell into one
    shot. Now the detector sees every decoded frame: two clips, cut at frame 24 (1.0 s), each with its
    one person and its real times; a range of [1.0, 1.6) s selects exactly the 60 fps frames."""
    raw = tmp_path / "raw"
    raw.mkdir()
    path = vfr_video(raw, tiny_raw)
    (raw / "vfr.txt").write_text("two people, one after the other")
    report = curate(raw, tmp_path / "out", CurationParams(**FAST))
    clips = read_manifest(tmp_path / "out" / "manifest.jsonl", raw)
    assert [(c.start_frame, c.end_frame, c.num_identities) for c in clips] == [(0, 24, 1), (24, 60, 1)], report["clips"]
    assert clips[0].identities[0].cluster != clips[1].identities[0].cluster
    second = clips[1]
    assert abs(second.start_time - 1.0) < 1e-3 and abs(second.end_time - 1.6) < 2e-3
    assert np.abs(np.diff(second.frame_times) - 1 / 60).max() < 1e-3
    assert np.abs(np.diff(clips[0].frame_times) - 1 / 24).max() < 1e-3
    # seconds select by presentation time (the average rate, 37.5 fps, put 1.0 s at frame 38)
    (raw / "clips.jsonl").write_text(json.dumps({"video": path.name, "caption": "c", "start": 1.0, "end": 1.6, "unit": "seconds"}) + "\n")
    curate(DataParams(source="list", path=str(raw), list_file="clips.jsonl"), tmp_path / "out_s", CurationParams(**FAST))
    [clip] = read_manifest(tmp_path / "out_s" / "manifest.jsonl", raw)
    assert (clip.start_frame, clip.end_frame) == (24, 60) and abs(clip.start_time - 1.0) < 1e-3


def test_the_training_dataset_samples_a_variable_rate_clip_at_its_real_times(tiny_raw, tmp_path):
    """Finding 1, training side: 9 frames spread evenly over the 1.6 s of the VFR video land at their
    times (every 0.2 s), not at evenly spaced indices (which put 7 of 9 samples in the 60 fps part)."""
    from ingredients.data.dataset import IngredientsVideoDataset
    from ingredients.data.manifest import ManifestClip, write_manifest

    path = vfr_video(tmp_path, tiny_raw)
    times = [round(i / 24, 6) for i in range(24)] + [round(1 + i / 60, 6) for i in range(36)]
    row = ManifestClip(clip_id="vfr", video=path.name, start_frame=0, end_frame=60, start_time=0.0, end_time=1.6, frame_times=times,
                       fps=37.5, width=384, height=256, caption="c", mask_kind="box", identities=[])
    write_manifest(tmp_path / "manifest.jsonl", [row])
    ds = IngredientsVideoDataset(tmp_path / "manifest.jsonl", num_frames=9, height=64, width=96, min_identities=0, data_root=tmp_path)
    from ingredients.data.dataset import frame_indices

    idx = frame_indices(60, 9, times=times)
    assert np.abs(np.array(times)[idx] - np.linspace(0, 1.6 - 1 / 60, 9)).max() <= 1 / 48 + 1e-6
    frames = ds[0]["frames"]
    full, _ = read_video(path)
    assert frames.shape == (9, 3, 64, 96)
    # the sampled frames are the frames at those times (the 5th at 0.8 s of the 24 fps part)
    assert idx[4] == 19 and float(np.abs(full[19].mean() / 127.5 - 1 - frames[4].mean().item())) < 0.02


def test_rotated_anamorphic_and_mjpeg_footage_curate_like_the_upright_video(tiny_raw, tmp_path, capfd):
    """Findings 2, 3 and 5: a phone video stored sideways with a display matrix was decoded sideways (no
    face track, skipped); a 16:9 anamorphic copy was curated at its squeezed storage shape; MJPEG
    flooded stderr with swscaler lines. Each now gives the upright video's clip: its size, and boxes
    within dlib's scale steps of the upright ones."""
    raw = tmp_path / "raw"
    raw.mkdir()
    a, _ = read_video(tiny_raw / "vid_000.mp4")  # [24, 256, 384, 3]
    encode_rgb(raw / "upright.mp4", a, 8)
    # stored turned a quarter counterclockwise, displayed upright by a 270-degree display matrix
    sideways = encode_rgb(tmp_path / "sideways.mp4", np.ascontiguousarray(np.rot90(a, 1, axes=(1, 2))), 8)
    ffmpeg("-display_rotation", "270", "-i", str(sideways), "-c", "copy", str(raw / "phone.mp4"))
    # stored 324 px wide with 32:27 pixels: shown 384 wide
    squeezed = np.stack([np.asarray(Image.fromarray(f).resize((324, 256), Image.LANCZOS)) for f in a])
    encode_rgb(raw / "dvd.mp4", squeezed, 8, "-vf", "setsar=32/27", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12")
    encode_rgb(raw / "camera.avi", a, 8, "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", "2")
    for stem in ("upright", "phone", "dvd", "camera"):
        (raw / f"{stem}.txt").write_text("a person")
    capfd.readouterr()
    report = curate(raw, tmp_path / "out", CurationParams(**FAST))
    assert "swscaler" not in capfd.readouterr().err
    assert report["videos"]["skipped"] == {}, report["videos"]["skipped_files"]
    clips = {c.clip_id.rsplit("_s", 1)[0]: c for c in read_manifest(tmp_path / "out" / "manifest.jsonl", raw)}
    ref = clips["upright"]
    for name in ("phone", "dvd", "camera"):
        clip = clips[name]
        assert (clip.width, clip.height, clip.start_frame, clip.end_frame, clip.num_identities) == (384, 256, 0, 24, 1), name
        ious = box_iou(np.array(clip.identities[0].boxes, float), np.array(ref.identities[0].boxes, float)).diagonal()
        assert np.median(ious) >= 0.7, (name, ious)
        crop = np.asarray(Image.open(tmp_path / "out" / clip.identities[0].reference))
        assert crop.shape == (256, 256, 3)


def test_every_outcome_is_named_and_counted(tiny_raw, tmp_path):
    """Finding 5: a range shorter than one frame was "starts at frame 4, past the end"; a `bad_range`
    line was counted but missing from the outcomes; a JPEG named .mp4 was `no_faces`. Each is now
    named, counted and listed on the report page."""
    root = tmp_path / "data"
    root.mkdir()
    a, _ = read_video(tiny_raw / "vid_000.mp4")  # 8 fps: frames at 0.5 s and 0.625 s
    encode_rgb(root / "v.mp4", a, 8)
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "384x256", "-i", "-", "-frames:v", "1", "-f", "image2", "-c:v", "mjpeg",
           str(root / "photo.mp4"), stdin=a[0].tobytes())
    lines = [{"video": "v.mp4", "caption": "c", "start": 0.51, "end": 0.52, "unit": "seconds", "id": "between"},
             {"video": "v.mp4", "caption": "c", "start": 9, "end": 3},
             {"video": "photo.mp4", "caption": "c", "id": "photo"}]
    (root / "clips.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = curate(DataParams(source="list", path=str(root), list_file="clips.jsonl"), tmp_path / "out", CurationParams(**FAST))
    videos = report["videos"]
    assert videos["skipped"] == {"bad_range": 1, "not_a_video": 1, "range_without_frames": 1}
    assert videos["total"] == 3 and videos["without_clips"] == 3
    out = videos["outcomes"]
    assert out["between"]["why"] == "range_without_frames"
    assert "[0.51, 0.52) s is shorter than one frame" in out["between"]["message"] and "0.500 s and 0.625 s" in out["between"]["message"]
    assert out["clips.jsonl:2"]["why"] == "bad_range" and "end must exceed start" in out["clips.jsonl:2"]["message"]
    assert out["photo"]["why"] == "not_a_video" and "still picture" in out["photo"]["message"]
    from eval.report import curation_section

    page = "".join(curation_section(tmp_path / "out" / "report.json"))
    assert "<b>clips.jsonl:2</b>: bad_range" in page and "<b>photo</b>: not_a_video" in page
    assert "3 of 3 videos" in page and "bad_range 1, not_a_video 1, range_without_frames 1" in page


def test_study_params_refuses_the_list_curation_refuses(tmp_path, monkeypatch):
    """Finding 5: `study.params` accepted a list whose line curation refuses (a fractional frame), and
    curation then stopped after making its output folder. Both now refuse it, naming the line, and no
    folder is made."""
    from ingredients.config import ParamsError
    from study.params import validate_params

    root = tmp_path / "data"
    root.mkdir()
    (root / "v.mp4").write_bytes(b"x")
    (root / "clips.jsonl").write_text(json.dumps({"video": "v.mp4", "start": 1.5, "end": 4}) + "\n")
    data = {"source": "list", "path": str(root), "list_file": "clips.jsonl"}
    with pytest.raises(ParamsError, match=r"data.list_file .*clips.jsonl:1: 'start': 1.5 is not a whole frame number"):
        validate_params({"data": data})
    with pytest.raises(ValueError, match="not a whole frame number"):
        curate(DataParams(**data), tmp_path / "out", CurationParams(**FAST))
    assert not (tmp_path / "out").exists()
    (root / "clips.jsonl").write_text(json.dumps({"video": "v.mp4", "start": 1, "end": 4}) + "\n")
    assert validate_params({"data": data})["data"].source == "list"


def test_the_contact_sheet_draws_names_beyond_ascii(tmp_path):
    """Finding 5: PIL's default font drew every non-ASCII letter as the same box, so two names of as
    many Cyrillic letters gave the same label; they now differ."""
    from ingredients.data.manifest import ManifestClip
    from ingredients.data.report import write_contact_sheet
    from ingredients.files.video_io import write_video

    write_video(tmp_path / "v.mp4", np.full((4, 64, 96, 3), 90, np.uint8), fps=8)
    sheets = []
    for name, caption in (("a", "Жанна"), ("b", "Фёдор")):
        clip = ManifestClip(clip_id="c", video="v.mp4", start_frame=0, end_frame=4, fps=8, width=96, height=64,
                            caption=caption, mask_kind="box", identities=[])
        write_contact_sheet(tmp_path / f"{name}.png", tmp_path, [clip], 1, 2)
        sheets.append(np.asarray(Image.open(tmp_path / f"{name}.png"))[:14])  # the label strip
    assert not np.array_equal(sheets[0], sheets[1])


@pytest.mark.slow  # 10 s: the stage's command in a subprocess
def test_ctrl_c_stops_curation_without_a_traceback(tiny_raw, tmp_path):
    """Finding 5: SIGINT printed a KeyboardInterrupt traceback. The stage now says the finished videos
    are kept and exits 130."""
    raw = tmp_path / "raw"
    raw.mkdir()
    a, _ = read_video(tiny_raw / "vid_000.mp4")
    encode_rgb(raw / "long.mp4", np.concatenate([a, a[::-1]] * 4), 8)
    (raw / "long.txt").write_text("a person")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-m", "ingredients.data.curate", "--raw", str(raw), "--out", str(tmp_path / "out")],
                            stderr=subprocess.PIPE, text=True, env=env)
    err = ""
    while "to curate" not in err:  # the run has started its video
        line = proc.stderr.readline()
        assert line, f"curation ended before it started a video: {err}"
        err += line
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    err += proc.stderr.read()
    assert proc.wait(timeout=60) == 130, err
    assert "Traceback" not in err and "interrupted: the videos finished so far are kept" in err


def _peak_of_curating(path: Path, out: Path, params: CurationParams) -> tuple[int, dict]:
    """(Python-side peak bytes, result) of curating one video in this process."""
    import tracemalloc

    from ingredients.data.sources import VideoItem
    from ingredients.data.video_curation import components, curate_video

    comp = components(params)
    tracemalloc.start()
    try:
        result = curate_video(VideoItem(path.stem, path), out, params, comp)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # 30 s idle: landmark masks of 216 frames
def test_a_long_single_shot_is_split_and_its_masks_stream(tiny_raw, tmp_path):
    """Finding 4: a long single shot became one clip whose segmentation masks were held whole (peak RSS
    2.3 GB for 60 s against 0.66 GB for 10 s). Masks now go to their file window by window: curating
    a 4x longer shot (one 12 s clip) peaks less than 4 frames above the 3 s one; and with
    `max_clip_seconds: 4` the 12 s shot is three clips of 4 s, each with its own mask file."""
    a, _ = read_video(tiny_raw / "vid_000.mp4")  # 24 frames, 384 x 256, 8 fps
    short = encode_rgb(tmp_path / "short.mp4", a, 8)
    long = encode_rgb(tmp_path / "long.mp4", np.concatenate([a, a[::-1], a, a[::-1]]), 8)
    for p in (short, long):
        p.with_suffix(".txt").write_text("a person")
    whole = CurationParams(detect_stride=6, masker="landmarks", contact_sheet_clips=0, max_clip_seconds=None)
    peak_short, res_short = _peak_of_curating(short, tmp_path / "o1", whole)
    peak_long, res_long = _peak_of_curating(long, tmp_path / "o2", whole)
    assert [(c["start_frame"], c["end_frame"]) for c in res_long["clips"]] == [(0, 96)]
    with np.load(tmp_path / "o2" / res_long["clips"][0]["mask_path"]) as data:
        assert data["masks"].shape == (1, 96, 256, 384) and data["masks"].mean() > 0.02
    assert res_short["clips"] and peak_long - peak_short < 4 * a[0].nbytes, (peak_short, peak_long, a[0].nbytes)
    split = whole.model_copy(update={"max_clip_seconds": 4.0})
    _, res = _peak_of_curating(long, tmp_path / "o3", split)
    assert [(c["start_frame"], c["end_frame"], c["start_time"], c["end_time"]) for c in res["clips"]] == [
        (0, 32, 0.0, 4.0), (32, 64, 4.0, 8.0), (64, 96, 8.0, 12.0)]
    assert len({c["mask_path"] for c in res["clips"]}) == 3 and all(len(c["identities"]) == 1 for c in res["clips"])


@pytest.mark.slow  # 12 s
def test_high_resolution_footage_is_detected_at_the_working_size(tiny_raw, tmp_path):
    """Finding 4: detection ran on full-size frames (3.8 s a 4K frame), masks were full-size booleans and
    the contact sheet stacked the whole clip: a 3 s 4K clip peaked at 5.2 GB. Here the same 8 frames at
    4x the size (1536 x 1024) with a working size of 384: boxes are the small video's times 4, masks
    are saved at 384 px, and the peak stays within 3 full-size frames of the small video's."""
    a, _ = read_video(tiny_raw / "vid_000.mp4", 0, 8)  # [8, 256, 384, 3]
    big = np.stack([np.asarray(Image.fromarray(f).resize((1536, 1024), Image.BICUBIC)) for f in a])
    small = encode_rgb(tmp_path / "small.mp4", a, 8)
    large = encode_rgb(tmp_path / "large.mp4", big, 8)
    for p in (small, large):
        p.with_suffix(".txt").write_text("a person")
    params = CurationParams(detect_stride=2, masker="landmarks", contact_sheet_clips=0, detect_max_side=384, mask_max_side=384)
    peak_small, res_small = _peak_of_curating(small, tmp_path / "o1", params)
    peak_large, res_large = _peak_of_curating(large, tmp_path / "o2", params)
    [cs], [cl] = res_small["clips"], res_large["clips"]
    assert (cl["width"], cl["height"]) == (1536, 1024)
    boxes_small = np.array(cs["identities"][0]["boxes"], float)
    boxes_large = np.array(cl["identities"][0]["boxes"], float)
    same = (np.abs(boxes_large / 4 - boxes_small) < 1.0).all(axis=1)  # dlib's pyramid may step one box
    assert same.mean() >= 0.75 and box_iou(boxes_large / 4, boxes_small).diagonal().min() >= 0.7, (boxes_large / 4, boxes_small)
    with np.load(tmp_path / "o2" / cl["mask_path"]) as data:
        assert data["masks"].shape == (1, 8, 256, 384)
    assert peak_large - peak_small < 3 * big[0].nbytes, (peak_small, peak_large, big[0].nbytes)
