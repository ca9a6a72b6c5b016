"""`ingredients generate` on the tiny profile with two real photos, and its reproduction from JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingredients.cli import main
from ingredients.data.packaged_photos import photo_path
from ingredients.files.frames import frame_strip
from ingredients.model_folder.folder import prepare_tiny_folder
from ingredients.files.video_io import read_video


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return prepare_tiny_folder(tmp_path_factory.mktemp("models") / "tiny")


def _photos() -> list[str]:
    return [str(photo_path("hanks")), str(photo_path("grace"))]  # a PNG and a JPEG, as shipped


def test_generate_writes_video_strip_and_json_and_reproduces(tiny_folder, tmp_path):
    tom, grace = _photos()
    out = tmp_path / "video.mp4"
    main(["generate", "--model", str(tiny_folder), "--photo", tom, "--photo", grace, "--prompt", "two people in a park",
          "--steps", "2", "--seed", "3", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    record = json.loads(out.with_suffix(".json").read_text())
    frames, fps = read_video(out)
    assert frames.shape == (9, 128, 128, 3) and fps == 8
    strip = np.asarray(Image.open(out.with_suffix(".strip.png")))
    assert strip.shape == (128, 8 * 128, 3)
    assert record["settings"]["photos"] == [tom, grace] and record["settings"]["steps"] == 2
    assert record["profile"] == "tiny" and len(record["photos_sha256"]) == 2

    again = tmp_path / "again.mp4"
    main(["generate", "--from-json", str(out.with_suffix(".json")), "--out", str(again), "--cache-dir", str(tmp_path / "cache")])
    record2 = json.loads(again.with_suffix(".json").read_text())
    assert record2["video"]["sha256_frames"] == record["video"]["sha256_frames"]
    np.testing.assert_array_equal(read_video(again)[0], frames)


def test_generate_reports_missing_inputs(tiny_folder, tmp_path):
    with pytest.raises(SystemExit, match="photo not found"):
        main(["generate", "--model", str(tiny_folder), "--photo", str(tmp_path / "nobody.jpg"), "--prompt", "x",
              "--out", str(tmp_path / "v.mp4")])
    with pytest.raises(SystemExit, match="--prompt"):
        main(["generate", "--model", str(tiny_folder), "--photo", _photos()[0], "--out", str(tmp_path / "v.mp4")])


def test_frame_strip_picks_evenly_spaced_frames():
    frames = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((20, 2, 3, 3), np.uint8)
    strip = frame_strip(frames, count=5)
    assert strip.shape == (2, 15, 3)
    assert strip[0, ::3, 0].tolist() == [0, 5, 10, 14, 19]


def test_generate_bad_inputs_exit_with_the_reason(tiny_folder, tmp_path):
    """No traceback for bad input: the exit message names the photo, the count or the value."""
    from skimage import data

    out = ["--out", str(tmp_path / "v.mp4"), "--model", str(tiny_folder), "--steps", "1"]
    limit = json.loads((tiny_folder / "transformer" / "config.json").read_text())["max_identities"]
    photos = [arg for p in [_photos()[0]] * (limit + 1) for arg in ("--photo", p)]
    with pytest.raises(SystemExit, match=rf"{limit + 1} photos given; .* at most max_identities={limit}"):
        main(["generate", *photos, "--prompt", "a crowd", *out])
    coffee = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(coffee)
    with pytest.raises(SystemExit, match=r"error: no face found in .*coffee\.png"):
        main(["generate", "--photo", str(coffee), "--prompt", "a cup", *out])
    with pytest.raises(SystemExit, match=r"error: .*multiples of 16"):
        main(["generate", "--photo", _photos()[0], "--prompt", "a man", "--height", "120", *out])
    assert not (tmp_path / "v.mp4").exists()


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_generate_reads_the_sample_runtime_keys_of_params(tiny_folder, tmp_path):
    """--params: its sample: dtype and VAE slicing apply and are recorded; --from-json reuses them. (VAE tiling
    with the CogVideoX VAE's default tiles does not run on the tiny 128 x 128 model: its image encode
    gives one latent column short; the full profile's 480 x 720 is what the defaults are for.)"""
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"sample": {"steps": 8, "dtype": "bfloat16", "vae_slicing": True}}))
    out = tmp_path / "video.mp4"
    main(["generate", "--model", str(tiny_folder), "--photo", _photos()[0], "--prompt", "a person in a park",
          "--steps", "1", "--out", str(out), "--params", str(params), "--cache-dir", str(tmp_path / "cache")])
    runtime = json.loads(out.with_suffix(".json").read_text())["settings"]["runtime"]
    assert runtime["dtype"] == "bfloat16" and runtime["vae_tiling"] is False and runtime["vae_slicing"] is True
    assert runtime["offload"] == "none" and runtime["step_cache"] == "off"
    assert read_video(out)[0].shape == (9, 128, 128, 3)
    again = tmp_path / "again.mp4"
    main(["generate", "--from-json", str(out.with_suffix(".json")), "--out", str(again), "--cache-dir", str(tmp_path / "cache")])
    assert json.loads(again.with_suffix(".json").read_text())["settings"]["runtime"] == runtime
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sample": {"offload": "model"}}))
    with pytest.raises(SystemExit, match="sample.offload is .model. but sampling runs on the CPU"):
        main(["generate", "--model", str(tiny_folder), "--photo", _photos()[0], "--prompt", "x", "--steps", "1",
              "--out", str(tmp_path / "v.mp4"), "--params", str(bad), "--cache-dir", str(tmp_path / "cache")])
