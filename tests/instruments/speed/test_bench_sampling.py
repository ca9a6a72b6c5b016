"""The sampling benchmark at reduced size: one process, three models, extrapolation, sweep, arguments;
and its denoising loop is the pipeline's."""

from __future__ import annotations

import json
import re
import statistics

import pytest
import torch

from instruments.speed.sampling_speed import main
from ingredients.models import IdentityBatch
from instruments.speed import SamplingInputs, denoise
from ingredients.model_folder.tiny import build_tiny_pipeline


def test_reduced_benchmark_three_models_extrapolated(tmp_path):
    out = tmp_path / "bench.json"
    result = main(["--size", "reduced", "--device", "cpu", "--steps", "6", "--extrapolate-from", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["video"] == {"frames": 9, "height": 64, "width": 64} and result["latents"] == [3, 16, 8, 8]
    assert result["dtype"] == "float32" and result["guidance_batch"] == 2
    assert result["identities"] == {"ours": 2, "consisid": 1, "bare": 0}
    assert result["total_method"] == "extrapolated_from_2_steps"
    assert set(result["runs"]) == {"ours", "consisid", "bare"}
    for name, run in result["runs"].items():
        assert len(run["step_seconds"]) == 2 and run["output_finite"], name
        median = statistics.median(run["step_seconds"])
        assert run["seconds_per_step_median"] == median
        assert run["denoise_seconds"] == pytest.approx(sum(run["step_seconds"]) + 4 * median)
        assert run["total_seconds"] == pytest.approx(run["denoise_seconds"] + (run["id_encode_seconds"] or 0.0))
        assert run["peak_memory"]["scope"] == "since_reset" and run["peak_memory"]["peak_rss_bytes"] > 50e6
    # ours and ConsisID add identity modules to the same backbone
    params = {name: run["num_parameters"] for name, run in result["runs"].items()}
    assert params["bare"] < params["consisid"] and params["bare"] < params["ours"]
    assert result["runs"]["ours"]["id_encode_seconds"] > 0 and result["runs"]["bare"]["id_encode_seconds"] is None
    ratios = result["ratios"]
    assert set(ratios) == {"ours/bare", "ours/consisid"}
    ours, bare = result["runs"]["ours"], result["runs"]["bare"]
    assert ratios["ours/bare"]["seconds_per_step"] == pytest.approx(ours["seconds_per_step_median"] / bare["seconds_per_step_median"])


def test_sweep_flips_one_switch_per_run(tmp_path):
    """docs/speed.md's reduced sweep (`--size reduced --device cpu --steps 50 --sweep ... --out reduced.json`),
    test-sized: 3 steps, one model."""
    result = main([
        "--size", "reduced", "--device", "cpu", "--models", "ours", "--steps", "3", "--warmup", "0",
        "--sweep", "identity_sdpa,fused_injection,id_tokens,step_cache", "--cache-threshold", "0.3",
        "--out", str(tmp_path / "reduced.json"),
    ])
    assert json.loads((tmp_path / "reduced.json").read_text())["runs"].keys() == result["runs"].keys()
    runs = result["runs"]
    assert set(runs) == {
        "ours", "ours[identity_sdpa=off]", "ours[fused_injection=off]", "ours[id_tokens=per_step]", "ours[step_cache=first_block]",
    }
    assert result["total_method"] == "measured" and "ratios" in result and result["ratios"] == {}
    assert runs["ours[id_tokens=per_step]"]["id_encode_seconds"] is None
    cache = runs["ours[step_cache=first_block]"]["step_cache"]
    assert cache["calls"] == 3 and cache["computed"][0] == [True, True]
    assert "step_cache" not in runs["ours"] and "step_cache" not in runs["ours[identity_sdpa=off]"]
    assert set(result["sweep_ratios_vs_ours"]) == set(runs) - {"ours"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "4", "--extrapolate-from", "5"], "--extrapolate-from must be in 1..--steps"),
        (["--steps", "4", "--extrapolate-from", "2", "--step-cache", "first_block"], "cannot be combined with a step cache"),
        (["--models", "ours,sdxl"], "--models"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--identities", "9"], "CUDA is not available|--identities"),
        (["--models", "bare", "--sweep", "step_cache"], "include 'ours'"),
        (["--sweep", "turbo"], "unknown switch"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises((SystemExit, ValueError)) as err:
        main(argv)
    text = str(err.value) if err.type is ValueError else capsys.readouterr().err
    assert re.search(message, text), text


def test_denoise_loop_is_the_pipeline_loop():
    """Given the pipeline's own image latents and generator state, the timed loop returns the pipeline's latents."""
    pipe = build_tiny_pipeline(0)
    pipe.set_progress_bar_config(disable=True)
    model, cfg = pipe.transformer, pipe.transformer.config
    g = torch.Generator().manual_seed(3)
    id_cond, id_vit = torch.randn(1, 2, cfg.id_embed_dim, generator=g), [torch.randn(1, 2, 65, cfg.vit_dim, generator=g) for _ in range(5)]
    prompt, negative = torch.randn(1, 32, 384, generator=g), torch.randn(1, 32, 384, generator=g)
    latents = torch.randn(1, 3, 4, 16, 16, generator=g)
    canvas = torch.rand(1, 3, 128, 128, generator=g)  # [0, 1], as the video processor expects
    expected = pipe(
        image=canvas, prompt_embeds=prompt, negative_prompt_embeds=negative, id_cond=id_cond, id_vit_hidden=id_vit,
        latents=latents.clone(), num_inference_steps=4, generator=torch.Generator().manual_seed(7), output_type="latent",
    ).frames
    generator = torch.Generator().manual_seed(7)
    image = pipe.video_processor.preprocess(canvas, height=128, width=128)
    _, image_latents = pipe.prepare_latents(image, 1, 4, 9, 128, 128, torch.float32, "cpu", generator, latents.clone())
    inputs = SamplingInputs(
        latents=latents, image_latents=image_latents, prompt_embeds=torch.cat([negative, prompt]),
        rotary=pipe._prepare_rotary_positional_embeddings(128, 128, 3, "cpu"), id_cond=id_cond, id_vit_hidden=id_vit,
    )
    ids = model.encode_identities(id_cond, id_vit, batch_size=1)
    extra = {"identities": IdentityBatch(torch.cat([ids.tokens] * 2), torch.cat([ids.mask] * 2))}
    result = denoise(model, inputs, extra, num_inference_steps=4, generator=generator)
    torch.testing.assert_close(result.latents, expected, rtol=0, atol=1e-6)
    assert len(result.step_seconds) == 4


def test_full_size_models_have_the_released_shapes(parity_dir):
    """Built on the meta device (no memory): ours is exactly the authors' full checkpoint (CogVideoX-5B-I2V,
    42 layers, cross_attn_interval 2); ConsisID is the same minus the routers; bare is the backbone."""
    from instruments.speed import SIZES, build_model

    models = {kind: build_model(kind, SIZES["full"], device="meta") for kind in ("ours", "consisid", "bare")}
    shapes = {kind: {n: list(t.shape) for n, t in m.state_dict().items()} for kind, m in models.items()}
    manifest = json.loads((parity_dir / "official_checkpoint_manifest.json").read_text())["cross_attn_interval=2"]
    assert shapes["ours"] == {n: list(s) for n, s in manifest["params"].items()}
    assert sum(t.numel() for t in models["ours"].state_dict().values()) == manifest["num_params"] == 6_437_519_584
    identity = ("local_facial_extractor.", "perceiver_cross_attention.", "router.")
    assert shapes["consisid"] == {n: s for n, s in shapes["ours"].items() if not n.startswith("router.")}
    assert shapes["bare"] == {n: s for n, s in shapes["ours"].items() if not n.startswith(identity)}


@pytest.mark.gpu
def test_full_size_on_gpu(tmp_path):
    """The full-size run on one GPU (bf16), 3 of 50 steps measured: finite outputs and CUDA peaks.
    Run with `-m gpu` on a GPU machine; docs/speed.md lists the complete measurements."""
    result = main(["--size", "full", "--device", "cuda", "--steps", "50", "--extrapolate-from", "3", "--out", str(tmp_path / "full.json")])
    assert result["dtype"] == "bfloat16" and result["latents"] == [13, 16, 60, 90] and result["video_tokens"] == 17550
    for run in result["runs"].values():
        assert run["output_finite"] and run["total_method"] == "extrapolated_from_3_steps"
        assert run["peak_memory"]["max_memory_reserved_bytes"] >= run["peak_memory"]["max_memory_allocated_bytes"] > run["parameter_bytes"]
    assert result["ratios"]["ours/bare"]["seconds_per_step"] > 1.0
