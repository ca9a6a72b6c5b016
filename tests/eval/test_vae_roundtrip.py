"""vae_roundtrip: a case's ground-truth clip through the model's own VAE at the sampling size, by the
stage's command; cases without ground truth are declared absent and evaluated as missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval.baselines import make_oracle
from eval.face_backends import AnalyzerPool
from eval.params import EvalParams
from eval.run import evaluate
from eval.vae_roundtrip import NO_GROUND_TRUTH, cover_crop, decodable_frames, load_vae, main, roundtrip
from ingredients.files.video_io import read_video
from ingredients.model_folder.tiny import save_tiny_pipeline
from ingredients.sampling.benchmark import read_benchmark
from ingredients.sampling.sample import SampleParams


@pytest.mark.slow  # 40-80 s (tiny model build, VAE twice, evaluation); the tiny dvc repro (e2e) runs the stage too
def test_roundtrip_by_the_stage_command_and_evaluated_like_a_method(tmp_path, make_benchmark, dlib_analyzer):
    bench = make_benchmark(tmp_path / "bench", {"duo": ("astronaut", "grace"), "solo": ("hanks",)})
    truth = make_oracle(bench, tmp_path / "truth", dlib_analyzer, n_frames=11, size=128)  # a clip of these people
    lines = [c.to_json(bench.parent) for c in read_benchmark(bench)]
    lines[0]["ground_truth"] = str(truth / "duo.mp4")
    with_truth = tmp_path / "bench" / "with_truth.jsonl"
    with_truth.write_text("".join(json.dumps(line) + "\n" for line in lines))
    model = save_tiny_pipeline(tmp_path / "model", seed=0)
    out = tmp_path / "vae_roundtrip"
    main(["--benchmark", str(with_truth), "--model", str(model), "--out", str(out)])
    cfg = json.loads((model / "transformer" / "config.json").read_text())
    frames, _ = read_video(out / "duo.mp4")
    spatial = 2 ** (len(json.loads((model / "vae" / "config.json").read_text())["block_out_channels"]) - 1)
    expected_t = decodable_frames(11, cfg["sample_frames"], 8)  # 9
    assert frames.shape == (expected_t, cfg["sample_height"] * spatial, cfg["sample_width"] * spatial, 3)
    assert json.loads((out / "absent.json").read_text()) == {"solo": NO_GROUND_TRUTH}
    first = (out / "duo.mp4").read_bytes()
    main(["--benchmark", str(with_truth), "--model", str(model), "--out", str(out)])
    assert (out / "duo.mp4").read_bytes() == first  # posterior mode: deterministic
    metrics = evaluate(with_truth, {"vae_roundtrip": out}, tmp_path / "eval", EvalParams(metrics=("face_sim", "flicker")),
                       analyzers=AnalyzerPool(analyzers={"dlib": dlib_analyzer}))
    records = {r["case_id"]: r for r in map(json.loads, (tmp_path / "eval" / "per_video.jsonl").read_text().splitlines())}
    assert records["solo"]["metrics"] == {}
    assert records["solo"]["missing"]["face_sim"] == f"no video: {NO_GROUND_TRUTH}"
    assert "flicker" in records["duo"]["metrics"] and "flicker" in metrics["vae_roundtrip"]
    assert np.isfinite(metrics["vae_roundtrip"]["flicker"])


def test_decodable_frame_counts():
    assert [decodable_frames(n, 49, 4) for n in (1, 4, 5, 11, 49, 60)] == [1, 1, 5, 9, 49, 49]
    assert [decodable_frames(n, 49, 8) for n in (1, 5, 8, 11, 17, 48, 49)] == [1, 1, 1, 9, 17, 41, 49]


def vae_folder(tmp_path, height: int = 96, width: int = 80):
    """A model folder holding only a tiny VAE whose own tiles (half its sample size: 48 x 40) fit a
    96 x 80 video exactly (the tiny profile's 128 x 128 VAE tiles do not: they decode to 140 x 144)."""
    from diffusers import AutoencoderKLCogVideoX

    from ingredients.model_folder.tiny import tiny_vae_config

    torch.manual_seed(0)
    AutoencoderKLCogVideoX(**{**tiny_vae_config(), "sample_height": height, "sample_width": width}).save_pretrained(tmp_path / "vae")
    (tmp_path / "model_index.json").write_text(json.dumps({"vae": ["diffusers", "AutoencoderKLCogVideoX"]}))
    return tmp_path


def test_the_sample_sections_dtype_and_tiling_are_honoured(tmp_path):
    """vae_roundtrip ran in float32, untiled, whatever sample: said (at full size: ~30 GiB for one decode)."""
    model = vae_folder(tmp_path)
    clip = np.random.default_rng(0).integers(0, 256, (1, 96, 80, 3), dtype=np.uint8)
    vae = load_vae(model, SampleParams(dtype="bfloat16", vae_tiling=True, vae_slicing=True), "cpu")
    assert vae.dtype == torch.bfloat16 and vae.use_tiling and vae.use_slicing
    calls = []
    tiled_decode = vae.tiled_decode
    vae.tiled_decode = lambda *a, **k: calls.append(1) or tiled_decode(*a, **k)
    tiled = roundtrip(vae, clip, 96, 80)
    assert calls and tiled.shape == (1, 96, 80, 3) and tiled.dtype == np.uint8
    plain = roundtrip(load_vae(model, SampleParams(), "cpu"), clip, 96, 80)
    assert 0 < np.abs(tiled.astype(int) - plain).mean() < 20  # bf16 + tile blending: close, not equal
    with pytest.raises(ValueError, match="float16' needs a GPU"):
        load_vae(model, SampleParams(dtype="float16"), "cpu")


def test_tiles_that_do_not_fit_are_an_error_not_a_resized_video(tmp_path):
    model = vae_folder(tmp_path, 128, 128)  # the tiny profile's VAE: 64 x 64 tiles, overlaps 1/6 and 1/5
    vae = load_vae(model, SampleParams(vae_tiling=True), "cpu")
    with pytest.raises(ValueError, match=r"to 1 x 140 x 144.*set sample.vae_tiling: false"):
        roundtrip(vae, np.zeros((1, 128, 128, 3), dtype=np.uint8), 128, 128)


def test_only_8k_plus_1_frames_come_back_whole(tmp_path):
    """diffusers' CogVideoX VAE encodes 8 frames at a time after the first: 5 frames (a 4 k + 1 count,
    which the stage used to take) decode to 8, an error now; the stage takes 8 k + 1 frames."""
    vae = load_vae(vae_folder(tmp_path), SampleParams(), "cpu")
    assert vae.num_sample_frames_batch_size == 8
    with pytest.raises(ValueError, match=r"decoded 5 x 96 x 80 \(frames x height x width\) to 8 x 96 x 80$"):
        roundtrip(vae, np.zeros((5, 96, 80, 3), dtype=np.uint8), 96, 80)


def test_a_clip_of_another_aspect_is_cropped_not_squeezed():
    """A 60 x 160 frame (8:3) brought to 32 x 32: its centre square, scaled; the old resize squeezed
    the whole width in (the red and blue sides would fill half of the frame)."""
    frame = np.zeros((60, 160, 3), dtype=np.uint8)
    frame[:, :50, 0] = 255  # red left side, outside the centre 60 x 60
    frame[:, 50:110, 1] = 255  # green centre, x in [50, 110)
    frame[:, 110:, 2] = 255  # blue right side
    frame[20:40, 70:90] = 255  # a white square in the middle
    out = cover_crop(frame, 32, 32)
    assert out.shape == (32, 32, 3)
    reddish = (out[..., 0] > 200) & (out[..., 1] < 100)
    bluish = (out[..., 2] > 200) & (out[..., 1] < 100)
    assert not reddish.any() and not bluish.any()  # squeezed, 10 of 32 columns each side were red / blue
    assert out[16, 16].tolist() == [255, 255, 255] and out[2, 2].tolist() == [0, 255, 0]
    assert out[2, 0].tolist() == [0, 255, 0] and out[2, 30].tolist() == [0, 255, 0]  # edges are the centre's green
    tall = cover_crop(np.ascontiguousarray(frame.transpose(1, 0, 2)), 32, 32)  # 160 x 60: cropped top and bottom
    assert tall[0, 2].tolist() == [0, 255, 0] and tall[30, 2].tolist() == [0, 255, 0]
    wide = cover_crop(frame, 30, 80)  # the same aspect: the whole frame, scaled by 1/2
    assert wide[15, 2].tolist() == [255, 0, 0] and wide[15, 77].tolist() == [0, 0, 255]
