"""IngredientsVideoDataset: frames, boxes and references from the manifest; bucketing by K."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ingredients.data.dataset import (
    IdentityCountBatchSampler,
    IngredientsVideoDataset,
    collate_ingredients,
    cover_crop_transform,
    frame_indices,
)
from ingredients.data.manifest import read_manifest
from ingredients.files.video_io import read_video


@pytest.fixture(scope="module")
def manifest(tiny_curated) -> Path:
    return tiny_curated[0] / "manifest.jsonl"


def test_frames_are_the_source_frames_at_native_resolution(manifest):
    ds = IngredientsVideoDataset(manifest, num_frames=9, height=256, width=384)
    clip = ds.clips[1]
    s = ds[1]
    assert s["frames"].shape == (9, 3, 256, 384) and s["frames"].dtype == torch.float32
    idx = frame_indices(clip.num_frames, 9)
    src, _ = read_video(manifest.parent / clip.video, clip.start_frame, clip.end_frame)
    expected = torch.from_numpy(src[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    assert torch.equal(s["frames"], expected)
    assert s["frames"].min() >= -1.0 and s["frames"].max() <= 1.0
    for k, ident in enumerate(clip.identities):
        assert np.allclose(s["boxes"][k].numpy(), np.array([ident.boxes[i] for i in idx]), atol=1e-4)
    assert s["prompt"] == clip.caption and s["clip_id"] == clip.clip_id
    assert [Path(p) for p in s["reference_paths"]] == [(manifest.parent / i.reference).resolve() for i in clip.identities]
    assert all(Path(p).is_file() for p in s["reference_paths"])
    assert s["index_mask"].shape == (3 * 16 * 24,) and s["index_mask"].dtype == torch.long


def test_resize_and_centre_crop_move_frames_and_boxes_together(manifest):
    native_ds = IngredientsVideoDataset(manifest, num_frames=5, height=256, width=384)
    square_ds = IngredientsVideoDataset(manifest, num_frames=5, height=160, width=208)
    scale, dx, dy = cover_crop_transform(256, 384, 160, 208)
    assert (scale, dx, dy) == (0.625, -16.0, 0.0)
    checked = 0
    for i in range(len(native_ds)):
        native, square = native_ds[i], square_ds[i]
        b = native["boxes"].numpy()
        expected = np.stack([b[..., 0] * scale + dx, b[..., 1] * scale + dy, b[..., 2] * scale + dx, b[..., 3] * scale + dy], -1)
        assert np.allclose(square["boxes"].numpy(), expected, atol=1e-4)
        # the face pixels moved with the box: both versions' face crops agree after resizing
        for k in range(native["num_identities"]):
            x0, y0, x1, y1 = (int(round(v)) for v in expected[k, 0])
            if x0 < 0 or x1 > 208:
                continue  # the centre crop cut this face
            crop_small = square["frames"][0, :, y0:y1, x0:x1]
            bx0, by0, bx1, by1 = (int(round(v)) for v in b[k, 0])
            crop_big = torch.nn.functional.interpolate(native["frames"][0:1, :, by0:by1, bx0:bx1], size=crop_small.shape[1:], mode="area")[0]
            assert (crop_small - crop_big).abs().mean() < 0.05
            checked += 1
    assert checked >= 3


def test_filter_by_identity_count(manifest):
    counts = sorted(c.num_identities for c in read_manifest(manifest))
    stage1 = IngredientsVideoDataset(manifest, 9, 128, 192, max_identities=1)
    stage2 = IngredientsVideoDataset(manifest, 9, 128, 192, min_identities=2)
    assert stage1.identity_counts == [1] * counts.count(1)
    assert sorted(stage2.identity_counts) == [k for k in counts if k >= 2]
    with pytest.raises(ValueError, match="between 4 and None identities"):
        IngredientsVideoDataset(manifest, 9, 128, 192, min_identities=4)
    with pytest.raises(ValueError, match="4n\\+1"):
        IngredientsVideoDataset(manifest, 8, 128, 192)
    with pytest.raises(ValueError, match="multiples of spatial"):
        IngredientsVideoDataset(manifest, 9, 120, 192)


def test_bucketing_sampler_and_collate(manifest):
    ds = IngredientsVideoDataset(manifest, 5, 64, 96)
    sampler = IdentityCountBatchSampler(ds.identity_counts, batch_size=2, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    assert all(len({ds.identity_counts[i] for i in b}) == 1 for b in batches)
    assert batches == list(IdentityCountBatchSampler(ds.identity_counts, batch_size=2, seed=3))
    sampler.set_epoch(1)  # a new shuffle, still a partition into same-K batches
    assert sorted(i for b in sampler for i in b) == list(range(len(ds)))
    assert all(len({ds.identity_counts[i] for i in b}) == 1 for b in sampler)
    dropped = IdentityCountBatchSampler(ds.identity_counts, batch_size=2, drop_last=True)
    assert all(len(b) == 2 for b in dropped)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_ingredients)
    for batch in loader:
        b, k = len(batch["prompt"]), batch["num_identities"]
        assert batch["frames"].shape == (b, 5, 3, 64, 96)
        assert batch["index_mask"].shape == (b, 2 * 4 * 6) and batch["boxes"].shape == (b, k, 5, 4)
        assert all(len(r) == k for r in batch["reference_paths"])
        assert batch["index_mask"].max() < k
    mixed = [ds[ds.identity_counts.index(1)], ds[ds.identity_counts.index(2)]]
    with pytest.raises(ValueError, match="mixes identity counts"):
        collate_ingredients(mixed)


def test_frame_indices():
    assert frame_indices(24, 9).tolist() == [0, 3, 6, 9, 12, 14, 17, 20, 23]
    assert frame_indices(24, 5, stride=2, mode="start").tolist() == [0, 2, 4, 6, 8]
    assert frame_indices(4, 5, stride=2, mode="start").tolist() == [0, 1, 2, 2, 3]  # too short: uniform
    r = frame_indices(24, 5, stride=3, mode="random", rng=random.Random(0))
    assert r[0] >= 0 and r[-1] < 24 and np.all(np.diff(r) == 3)
    with pytest.raises(ValueError, match="unknown temporal sampling"):
        frame_indices(24, 5, mode="middle")
