"""The precompute cache: content-addressed (inputs + model identity), exact, atomic, self-healing."""

from __future__ import annotations

import pytest
import torch

from ingredients.data.dataset import IngredientsVideoDataset
from ingredients.model_folder.folder import load_face_conditioner, load_pipeline
from ingredients.training.clip_encoding import ClipEncoder, module_fingerprint
from ingredients.training.encoding_cache import EncodingCache


@pytest.fixture(scope="module")
def setup(small_model, tiny_manifest):
    pipe = load_pipeline(small_model)
    conditioner = load_face_conditioner(small_model, pipe)
    item = IngredientsVideoDataset(tiny_manifest, 5, 64, 64, min_identities=2, max_identities=2)[0]
    return pipe, conditioner, item


def _same(a, b) -> bool:
    ta, tb = a.to_tensors(), b.to_tensors()
    return set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_cached_encoding_equals_fresh_and_is_reused(setup, tmp_path):
    pipe, conditioner, item = setup
    args = (item["frames"], item["prompt"], item["reference_paths"])
    fresh = ClipEncoder(pipe, conditioner, 64, 64).encode(*args)
    assert fresh.video_dist.shape == (8, 2, 8, 8) and fresh.canvas_dist.shape == (8, 1, 8, 8)
    assert fresh.id_cond.shape == (2, 160) and [h.shape for h in fresh.id_vit_hidden] == [(2, 65, 64)] * 5
    cache = EncodingCache(tmp_path / "clips")
    first = ClipEncoder(pipe, conditioner, 64, 64, cache=cache).encode(*args)
    assert (cache.hits, cache.misses) == (0, 1) and _same(first, fresh)
    files = list((tmp_path / "clips").rglob("*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "clips").rglob(".*"))  # no temp files left
    second = ClipEncoder(pipe, conditioner, 64, 64, cache=cache).encode(*args)
    assert (cache.hits, cache.misses) == (1, 1) and _same(second, fresh)


def test_key_depends_on_inputs_and_model_identity(setup, tmp_path):
    pipe, conditioner, item = setup
    encoder = ClipEncoder(pipe, conditioner, 64, 64)
    identity = encoder.identity
    key = EncodingCache.key(identity, item["frames"], item["prompt"], item["reference_paths"])
    assert key == EncodingCache.key(dict(identity), item["frames"].clone(), item["prompt"], list(item["reference_paths"]))
    frames = item["frames"].clone()
    frames[0, 0, 0, 0] += 1e-3
    assert key != EncodingCache.key(identity, frames, item["prompt"], item["reference_paths"])
    assert key != EncodingCache.key(identity, item["frames"], item["prompt"] + " ", item["reference_paths"])
    assert key != EncodingCache.key(identity, item["frames"], item["prompt"], item["reference_paths"][::-1])
    # a change to one VAE weight changes the model identity
    before = module_fingerprint(pipe.vae)
    with torch.no_grad():
        p = next(pipe.vae.parameters())
        old = p.flatten()[0].item()
        p.flatten()[0] += 1e-4
        changed = module_fingerprint(pipe.vae)
        p.flatten()[0] = old
    assert changed != before and module_fingerprint(pipe.vae) == before
    # tensors larger than the sampling limit are still covered (strided sample + sum)
    big = torch.nn.Linear(600, 600)
    fp = module_fingerprint(big, max_elements=1000)
    with torch.no_grad():
        big.weight[599, 598] += 1.0  # not on the stride grid, seen through the sum
    assert module_fingerprint(big, max_elements=1000) != fp


def test_unreadable_entry_is_recomputed(setup, tmp_path, caplog):
    pipe, conditioner, item = setup
    cache = EncodingCache(tmp_path / "clips")
    encoder = ClipEncoder(pipe, conditioner, 64, 64, cache=cache)
    good = encoder.encode(item["frames"], item["prompt"], item["reference_paths"])
    (path,) = list((tmp_path / "clips").rglob("*.safetensors"))
    path.write_bytes(b"not a safetensors file")
    again = encoder.encode(item["frames"], item["prompt"], item["reference_paths"])
    assert "ignoring unreadable cache entry" in caplog.text and _same(again, good)
    assert cache.get(path.stem) is not None  # rewritten


def test_encoder_rejects_wrong_frame_size(setup):
    pipe, conditioner, item = setup
    with pytest.raises(ValueError, match=r"frames are \(64, 64\), the encoder works at \(128, 128\)"):
        ClipEncoder(pipe, conditioner, 128, 128).encode(item["frames"], item["prompt"], item["reference_paths"])


def test_references_in_another_order_equal_the_face_stack(setup):
    """A permuted order reuses the face stack's result; it must equal running the stack in that order."""
    pipe, conditioner, item = setup
    encoder = ClipEncoder(pipe, conditioner, 64, 64)
    paths = list(item["reference_paths"])
    for order in (paths, paths[::-1]):
        got = encoder.references(order)
        want = conditioner(order, use_cache=False)
        assert got.paths == order
        assert torch.equal(got.id_cond, want.id_cond)
        assert all(torch.equal(a, b) for a, b in zip(got.id_vit_hidden, want.id_vit_hidden))
        assert (got.crops == want.crops).all()
        assert got.canvas.tobytes() == want.canvas.tobytes()
