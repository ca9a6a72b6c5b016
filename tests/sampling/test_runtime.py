"""The runtime keys of `sample:` (dtype, VAE tiling / slicing, offload, compile, step cache, identity
switches): validated with their fix, applied to the pipeline, and read by the sample stage's command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from ingredients.config import validate_model
from ingredients.sampling.runtime import configure_pipeline
from ingredients.sampling.sample import SampleParams
from tests.training.conftest import REPO_ROOT, SMALL_MODEL


def _params(**values) -> SampleParams:
    return validate_model(SampleParams, values, "sample")


def test_defaults_are_the_tiny_profile():
    p = SampleParams()
    assert (p.dtype, p.vae_tiling, p.vae_slicing, p.offload, p.compile, p.step_cache) == ("float32", False, False, "none", False, "off")


@pytest.mark.parametrize("values, match", [
    ({"offload": "model"}, "sample.offload is 'model' but sampling runs on the CPU"),
    ({"dtype": "float16"}, "float16' needs a GPU"),
])
def test_settings_a_cpu_cannot_run_are_named(values, match):
    from ingredients.model_folder.tiny import build_tiny_pipeline

    with pytest.raises(ValueError, match=match):
        configure_pipeline(build_tiny_pipeline(0), _params(**values), "cpu")


def test_compile_with_sequential_offload_is_refused():
    from ingredients.sampling.runtime import check_runtime

    with pytest.raises(ValueError, match="sequential"):
        check_runtime(_params(compile=True, offload="sequential"), "cuda")


def test_unknown_values_are_refused_by_the_schema():
    with pytest.raises(Exception, match="sample.offload"):
        _params(offload="disk")
    with pytest.raises(Exception, match="sample.dtype"):
        _params(dtype="fp8")


def test_the_sample_stage_loads_its_pipeline_with_every_switch(tmp_path):
    """`load_sampling_pipeline` (what the sample stage runs) from a float32 model folder: every weight in
    sample.dtype, the VAE and step-cache switches on, the identity switches as given."""
    from ingredients.model_folder.tiny import save_tiny_pipeline
    from ingredients.sampling.sample import load_sampling_pipeline

    save_tiny_pipeline(tmp_path / "model", 0, **SMALL_MODEL)  # written in float32
    params = _params(dtype="bfloat16", vae_tiling=True, vae_slicing=True, step_cache="first_block",
                     step_cache_threshold=0.1, identity_sdpa=False, fused_identity_injection=False)
    pipe = load_sampling_pipeline(tmp_path / "model", params, "cpu")
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    assert "forward" in vars(pipe.transformer)  # the step cache serves the forward
    assert pipe.transformer.config.identity_sdpa is False and pipe.transformer.config.fused_identity_injection is False
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder):
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}, type(part).__name__


# slow: the default suite measured 19 min 24 s on a fresh clone with it (budget 15); runs under -m slow
@pytest.mark.slow
def test_sample_stage_reads_the_runtime_keys(tmp_path):
    """`python -m ingredients.sampling.sample` with dtype bfloat16 and VAE tiling + slicing: the video is
    written and samples.json records the runtime settings used."""
    from instruments.photo_cases import write_photo_cases
    from ingredients.model_folder.folder import prepare_tiny_folder

    prepare_tiny_folder(tmp_path / "model", seed=0, **SMALL_MODEL)
    bench = write_photo_cases(tmp_path / "bench")
    first = bench.read_text().splitlines()[0]
    (bench.parent / "one.jsonl").write_text(first + "\n")  # reference paths are relative to it
    sample = {"methods": ["ours"], "steps": 1, "guidance_scale": 2.0, "dtype": "bfloat16", "vae_tiling": True,
              "vae_slicing": True}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sample": sample}))
    cmd = [sys.executable, "-m", "ingredients.sampling.sample", "--params", str(tmp_path / "params.yaml"),
           "--benchmark", str(bench.parent / "one.jsonl"), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"),
           "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sampling runtime" in proc.stderr and "'dtype': 'bfloat16'" in proc.stderr
    assert len(list((tmp_path / "out" / "ours").glob("*.mp4"))) == 1
    recorded = json.loads((tmp_path / "out" / "samples.json").read_text())["params"]
    assert recorded["dtype"] == "bfloat16" and recorded["vae_tiling"] is True
