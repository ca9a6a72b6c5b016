"""Noise augmentation of the image condition: the canvas pixels get exp(N(-3, 0.5)) * N(0, 1) before
the VAE, per sample and per step from the sample's own stream; the cache keeps the clean canvas; the
clean canvas takes the same path as the pipeline's at sampling."""

from __future__ import annotations

import dataclasses

import torch

from ingredients.data.dataset import IngredientsVideoDataset, collate_ingredients
from ingredients.model_folder.folder import load_face_conditioner, load_pipeline
from ingredients.training import RunPaths, Trainer, build_stage_spec
from ingredients.training.clip_encoding import CanvasNoise, ClipEncoder, canvas_latents, noise_canvas
from ingredients.training.sample_randomness import IMAGE_NOISE_STREAM, sample_generators
from ingredients.training.stage_spec import ImageNoiseSpec
from ingredients.training.step import build_step_inputs
from tests.training.conftest import train_params


def test_noise_canvas_is_the_i2v_fine_tuning_formula():
    pixels = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got = noise_canvas(pixels, torch.Generator().manual_seed(5), log_mean=-3.0, log_std=0.5)
    # diffusers' train_cogvideox_image_to_video_lora.py, one sigma per sample
    g = torch.Generator().manual_seed(5)
    sigma = torch.exp(torch.normal(mean=-3.0, std=0.5, size=(1,), generator=g))
    expected = pixels[None, :, None] + torch.randn(1, 3, 1, 4, 6, generator=g) * sigma[:, None, None, None, None]
    torch.testing.assert_close(got, expected[0, :, 0], rtol=0, atol=0)
    assert 0 < float((got - pixels).abs().max()) < 1


def _count_entries(folder) -> int:
    return len(list(folder.rglob("*.safetensors")))


def test_training_noises_the_canvas_per_step_and_caches_only_the_clean_one(tiny_manifest, small_model, tmp_path):
    assert ImageNoiseSpec() == ImageNoiseSpec(enabled=True, log_mean=-3.0, log_std=0.5)  # on by default
    spec = build_stage_spec(train_params(stage1={"precompute": {"enabled": True}, "image_noise": {"enabled": True}}), "stage1")
    trainer = Trainer(spec, RunPaths(tiny_manifest, small_model, tmp_path / "run"))
    for step in (trainer.prepare_accelerator, trainer.prepare_models, trainer.prepare_data, trainer.prepare_encoder):
        step()
    cache = tmp_path / "run" / "cache" / "clips"
    entries = _count_entries(cache)
    assert entries == len(trainer.dataset)
    batch = collate_ingredients([trainer.dataset[0], trainer.dataset[1]])
    noisy = trainer.step_inputs(batch, micro=3)
    # the same draws by hand (reproducible per seed, step and sample): clean cached encodings, the
    # canvas noised from the sample's image-noise stream
    clean = trainer.encoder.encode_batch(batch)
    by_hand = [dataclasses.replace(e, canvas_dist=trainer.encoder._vae_dist(noise_canvas(e.canvas_pixels, g)[None, :, None]))
               for e, g in zip(clean, sample_generators(spec.seed, 3, range(2), IMAGE_NOISE_STREAM))]
    expected = build_step_inputs(by_hand, batch["index_mask"], sample_generators(spec.seed, 3, range(2)),
                                 trainer.noise_scheduler, trainer.pipe.vae_scaling_factor_image, trainer.empty_prompt,
                                 spec.dropout.text, spec.dropout.identity)
    torch.testing.assert_close(noisy.image_latents, expected.image_latents, rtol=0, atol=0)
    # off: every other draw is unchanged, the image condition is the clean canvas's
    trainer.spec = spec.model_copy(update={"image_noise": ImageNoiseSpec(enabled=False)})
    plain = trainer.step_inputs(batch, micro=3)
    for name in ("latents", "noisy", "timesteps", "prompt_embeds"):
        assert torch.equal(getattr(plain, name), getattr(noisy, name)), name
    assert not torch.equal(plain.image_latents, noisy.image_latents)
    assert not torch.equal(trainer.step_inputs(batch, micro=4).latents, plain.latents)  # another step, other draws
    expected = build_step_inputs(clean, batch["index_mask"], sample_generators(spec.seed, 3, range(2)),
                                 trainer.noise_scheduler, trainer.pipe.vae_scaling_factor_image, trainer.empty_prompt,
                                 spec.dropout.text, spec.dropout.identity)
    torch.testing.assert_close(plain.image_latents, expected.image_latents, rtol=0, atol=0)
    # nothing noised went into the cache: same entries, each equal to a fresh clean encoding
    assert _count_entries(cache) == entries
    fresh = ClipEncoder(trainer.pipe, trainer.encoder.conditioner, trainer.height, trainer.width)
    for e, f, p, r in zip(clean, batch["frames"], batch["prompt"], batch["reference_paths"]):
        assert torch.equal(e.canvas_dist, fresh.encode(f, p, r).canvas_dist)
    # without a cache the noised canvas is encoded directly, to the same distribution
    args = (batch["frames"][0], batch["prompt"][0], batch["reference_paths"][0])
    noised = [enc.encode(*args, CanvasNoise(torch.Generator().manual_seed(9))).canvas_dist for enc in (fresh, trainer.encoder)]
    assert torch.equal(*noised) and not torch.equal(noised[0], clean[0].canvas_dist)


def test_training_canvas_takes_the_sampling_path(tiny_manifest, small_model):
    """The clean canvas of an encoded clip is the pipeline's: the face stack's canvas (what validation
    and sampling pass as `image`), its video processor, then prepare_latents' VAE sample and scaling."""
    pipe = load_pipeline(small_model)
    conditioner = load_face_conditioner(small_model, pipe)
    item = IngredientsVideoDataset(tiny_manifest, 5, 64, 64, min_identities=2, max_identities=2)[0]
    encoded = ClipEncoder(pipe, conditioner, 64, 64).encode(item["frames"], item["prompt"], item["reference_paths"])
    image = pipe.video_processor.preprocess(conditioner(list(item["reference_paths"])).canvas, height=64, width=64)
    assert torch.equal(encoded.canvas_pixels, image[0])
    _, expected = pipe.prepare_latents(image, 1, 4, 5, 64, 64, torch.float32, torch.device("cpu"),
                                       [torch.Generator().manual_seed(3)])
    got = canvas_latents(encoded.canvas_dist[None], [torch.Generator().manual_seed(3)], 2, pipe.vae_scaling_factor_image)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
