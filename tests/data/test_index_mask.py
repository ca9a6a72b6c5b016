"""Index-mask geometry: latent frames, token order, coverage rule, and the map back to pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ingredients.data.index_mask import (
    boxes_to_masks,
    index_mask_from_masks,
    index_mask_to_pixels,
    latent_frame_count,
    latent_frame_ranges,
    token_grid,
)


def test_latent_frames_follow_the_cogvideox_vae():
    assert [latent_frame_count(f) for f in (1, 5, 9, 13, 49)] == [1, 2, 3, 4, 13]
    assert latent_frame_ranges(9) == [(0, 1), (1, 5), (5, 9)]
    assert latent_frame_ranges(7) == [(0, 1), (1, 5)]  # frames 5, 6 belong to no latent frame
    assert latent_frame_ranges(5, temporal=2) == [(0, 1), (1, 3), (3, 5)]
    assert token_grid(480, 720) == (30, 45)
    assert token_grid(64, 96, spatial=4, patch=1) == (16, 24)
    with pytest.raises(ValueError, match="multiples of spatial"):
        token_grid(100, 96)


def test_token_order_is_frame_major_then_row_then_column():
    f, h, w = 9, 64, 96  # 3 latent frames of 4 x 6 tokens
    masks = torch.zeros(1, f, h, w, dtype=torch.bool)
    masks[0, 5:9, 16:32, 80:96] = True  # latent frame 2, token row 1, token column 5
    index = index_mask_from_masks(masks)
    assert index.shape == (3 * 4 * 6,)
    assert torch.nonzero(index >= 0).flatten().tolist() == [2 * 24 + 1 * 6 + 5]
    assert index[2 * 24 + 1 * 6 + 5] == 0


def test_coverage_threshold_in_space_and_time():
    masks = torch.zeros(2, 9, 32, 32, dtype=torch.bool)
    masks[0, :, 0:16, 0:8] = True  # exactly half of token (0, 0): labelled
    masks[0, :, 0:16, 16:23] = True  # 7/16 of token (0, 1): background
    masks[1, 1:3, 16:32, 0:16] = True  # half of latent frame 1's pixel frames (1..4): labelled there only
    masks[1, 5:6, 16:32, 16:32] = True  # a quarter of latent frame 2's frames: background
    idx = index_mask_from_masks(masks).reshape(3, 2, 2)  # [T, h, w]
    assert idx[:, 0, 0].tolist() == [0, 0, 0]
    assert idx[:, 0, 1].tolist() == [-1, -1, -1]
    assert idx[:, 1, 0].tolist() == [-1, 1, -1]
    assert idx[:, 1, 1].tolist() == [-1, -1, -1]


def test_larger_coverage_wins():
    masks = torch.zeros(3, 1, 16, 16)
    masks[0, 0, :, :10] = 1.0  # 62.5 %
    masks[1, 0, :, 4:] = 1.0  # 75 %
    masks[2, 0, :, :12] = 1.0  # 75 %, later index: the tie goes to identity 1
    assert index_mask_from_masks(masks).tolist() == [1]


def test_round_trip_of_token_aligned_masks():
    rng = np.random.default_rng(0)
    f, h, w = 13, 48, 64
    grid = torch.from_numpy(rng.integers(-1, 3, size=(4, 3, 4)))  # [T, h, w]
    index = grid.reshape(-1)
    pix = index_mask_to_pixels(index, f, h, w)  # [F, H, W]
    masks = torch.stack([pix == k for k in range(3)])  # [K, F, H, W]
    assert torch.equal(index_mask_from_masks(masks), index)
    # each pixel frame carries its latent frame's tokens, each token a 16 x 16 block
    for t, lt in [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (9, 3), (12, 3)]:
        assert torch.equal(pix[t][::16, ::16], grid[lt]) and torch.equal(pix[t][15::16, 15::16], grid[lt])


def test_trailing_frames_map_to_no_token():
    pix = index_mask_to_pixels(torch.zeros(2 * 2 * 2, dtype=torch.long), 7, 32, 32)
    assert (pix[:5] == 0).all() and (pix[5:] == -1).all()


def test_boxes_to_masks_uses_pixel_centres():
    boxes = np.array([[[2.0, 1.0, 5.0, 3.0], [np.nan] * 4]])  # [K=1, F=2, 4]
    m = boxes_to_masks(boxes, 4, 8)
    assert m.shape == (1, 2, 4, 8)
    assert torch.nonzero(m[0, 0]).tolist() == [[1, 2], [1, 3], [1, 4], [2, 2], [2, 3], [2, 4]]
    assert not m[0, 1].any()


def _reference_index_mask(boxes: np.ndarray, f: int, h: int, w: int, block: int = 16, temporal: int = 4) -> np.ndarray:
    """Plain-loop reimplementation of the documented rule, for parity."""
    k = boxes.shape[0]
    t_lat = (f - 1) // temporal + 1
    out = np.full((t_lat, h // block, w // block), -1)
    for lt in range(t_lat):
        frames = [0] if lt == 0 else [x for x in range(temporal * (lt - 1) + 1, temporal * lt + 1) if x < f]
        for r in range(h // block):
            for c in range(w // block):
                cov = np.zeros(k)
                for j in range(k):
                    hits = 0
                    for t in frames:
                        x0, y0, x1, y1 = boxes[j, t]
                        if np.isnan(x0):
                            continue
                        for y in range(r * block, (r + 1) * block):
                            for x in range(c * block, (c + 1) * block):
                                hits += x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1
                    cov[j] = hits / (len(frames) * block * block)
                if cov.size and cov.max() >= 0.5:
                    out[lt, r, c] = int(np.argmax(cov))
    return out.reshape(-1)


def test_index_mask_of_a_real_sample_matches_its_boxes(tiny_curated):
    """On a curated multi-identity clip: parity with a plain-loop implementation of the rule, and the
    index mask mapped back to pixels overlaps each identity's face boxes."""
    from ingredients.data.dataset import IngredientsVideoDataset

    out, _ = tiny_curated
    small = IngredientsVideoDataset(out / "manifest.jsonl", num_frames=5, height=128, width=192, min_identities=3)
    s = small[0]
    assert s["num_identities"] == 3
    expected = _reference_index_mask(s["boxes"].numpy(), 5, 128, 192)
    assert np.array_equal(s["index_mask"].numpy(), expected)
    assert set(np.unique(expected)) == {-1, 0, 1, 2}

    ds = IngredientsVideoDataset(out / "manifest.jsonl", num_frames=9, height=160, width=240, min_identities=2)
    ious = []
    for i in range(len(ds)):
        s = ds[i]
        pix = index_mask_to_pixels(s["index_mask"], 9, 160, 240)  # [F, H, W]
        boxes = boxes_to_masks(s["boxes"].numpy(), 160, 240)  # [K, F, H, W]
        for k in range(s["num_identities"]):
            for t in range(9):
                a, b = pix[t] == k, boxes[k, t]
                ious.append(float((a & b).sum() / (a | b).sum()))
                # a labelled token overlaps k's box in some frame of its latent frame, so a labelled
                # pixel is less than one token (16 px) away from the union of those boxes
                ys, xs = torch.nonzero(a, as_tuple=True)
                group = next(r for r in latent_frame_ranges(9) if r[0] <= t < r[1])
                gb = s["boxes"][k, group[0] : group[1]]  # [n, 4]
                x0, y0 = gb[:, 0].min().item(), gb[:, 1].min().item()
                x1, y1 = gb[:, 2].max().item(), gb[:, 3].max().item()
                assert xs.min() >= x0 - 16 and xs.max() < x1 + 16 and ys.min() >= y0 - 16 and ys.max() < y1 + 16
    # 16-px tokens on 45-70 px faces: quantisation caps the overlap well below 1
    assert np.mean(ious) >= 0.65 and min(ious) >= 0.35
