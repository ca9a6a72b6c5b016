"""vae_roundtrip: a case's ground-truth clip through the model's own VAE at the sampling size, by the
stage's command; cases without ground truth are declared absent and evaluated as missing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.baselines import make_oracle
from eval.face_backends import AnalyzerPool
from eval.params import EvalParams
from eval.run import evaluate
from eval.vae_roundtrip import NO_GROUND_TRUTH, decodable_frames, main
from ingredients.files.video_io import read_video
from ingredients.model_folder.tiny import save_tiny_pipeline
from ingredients.sampling.benchmark import read_benchmark


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
    expected_t = decodable_frames(11, cfg["sample_frames"], 4)
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
