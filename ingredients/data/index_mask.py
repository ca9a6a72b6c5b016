"""Index masks: which identity's face region each latent video token lies in (-1 = background).

Geometry (CogVideoX): the VAE compresses time by `temporal` (latent frame 0 = pixel frame 0, latent
frame f >= 1 covers pixel frames temporal*(f-1)+1 .. temporal*f) and space by `spatial`; the
transformer then patchifies each latent frame by `patch` x `patch`. So one token covers a block of
(spatial*patch)^2 pixels over its latent frame's pixel frames, and tokens are ordered frame-major,
then row, then column (as diffusers' CogVideoXPatchEmbed flattens them). A token gets identity k
when k's mask covers at least `min_coverage` of that pixel block over those frames; when several
do, the larger coverage wins (ties: the lower k).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def latent_frame_count(num_frames: int, temporal: int = 4) -> int:
    """(F - 1) // temporal + 1 latent frames for F pixel frames."""
    if num_frames < 1 or temporal < 1:
        raise ValueError(f"need num_frames >= 1 and temporal >= 1, got {num_frames}, {temporal}")
    return (num_frames - 1) // temporal + 1


def latent_frame_ranges(num_frames: int, temporal: int = 4) -> list[tuple[int, int]]:
    """Pixel frame range [start, end) of each latent frame. Frames past the last full group (when
    (F - 1) is not a multiple of temporal) belong to no latent frame."""
    return [(0, 1)] + [(temporal * (f - 1) + 1, temporal * f + 1) for f in range(1, latent_frame_count(num_frames, temporal))]


def token_grid(height: int, width: int, spatial: int = 8, patch: int = 2) -> tuple[int, int]:
    """Token rows and columns per latent frame; H and W must be multiples of spatial * patch."""
    block = spatial * patch
    if height % block or width % block:
        raise ValueError(f"height {height} and width {width} must be multiples of spatial*patch = {spatial}*{patch} = {block}")
    return height // block, width // block


def index_mask_from_masks(masks: torch.Tensor, spatial: int = 8, temporal: int = 4, patch: int = 2, min_coverage: float = 0.5) -> torch.Tensor:
    """Per-identity pixel masks [K, F, H, W] (bool or float in [0, 1]) -> long index mask [T*h*w]."""
    if masks.ndim != 4:
        raise ValueError(f"masks must be [K, F, H, W], got shape {tuple(masks.shape)}")
    k, num_frames, height, width = masks.shape
    h, w = token_grid(height, width, spatial, patch)
    ranges = latent_frame_ranges(num_frames, temporal)
    if k == 0:
        return torch.full((len(ranges) * h * w,), -1, dtype=torch.long)
    block = spatial * patch
    cover = F.avg_pool2d(masks.float(), kernel_size=block)  # [K, F, H, W] -> [K, F, h, w]
    cover = torch.stack([cover[:, a:b].mean(1) for a, b in ranges], dim=1)  # [K, T, h, w]
    best_cov, best_k = cover.max(dim=0)  # [T, h, w]; max returns the first maximal index on ties
    index = torch.where(best_cov >= min_coverage, best_k, torch.full_like(best_k, -1))
    return index.reshape(-1)  # [T, h, w] -> [T*h*w], frame-major then row then column


def index_mask_to_pixels(index_mask: torch.Tensor, num_frames: int, height: int, width: int, spatial: int = 8, temporal: int = 4, patch: int = 2) -> torch.Tensor:
    """Map a token index mask [T*h*w] back to a pixel map long [F, H, W] (each pixel takes the value
    of the token that covers it; frames past the last latent frame get -1), for tests and
    routing-map overlays."""
    h, w = token_grid(height, width, spatial, patch)
    ranges = latent_frame_ranges(num_frames, temporal)
    if index_mask.numel() != len(ranges) * h * w:
        raise ValueError(f"index mask has {index_mask.numel()} tokens, expected {len(ranges)}*{h}*{w} for {num_frames} frames of {height}x{width}")
    grid = index_mask.reshape(len(ranges), h, w)  # [T*h*w] -> [T, h, w]
    block = spatial * patch
    pix = grid.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)  # [T, H, W]
    frame_to_latent = torch.tensor([i for i, (a, b) in enumerate(ranges) for _ in range(a, b)], dtype=torch.long)
    out = torch.full((num_frames, height, width), -1, dtype=index_mask.dtype)
    out[: len(frame_to_latent)] = pix[frame_to_latent]
    return out  # [F, H, W]


def boxes_to_masks(boxes: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Boxes [K, F, 4] (NaN rows = not visible) -> bool masks [K, F, H, W] (pixel centres inside)."""
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [K, F, 4], got {tuple(boxes.shape)}")
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))  # each [K, F, 1, 1]
    inside = (xs >= x0) & (xs < x1) & (ys[:, None] >= y0) & (ys[:, None] < y1)  # [K, F, H, W]
    return inside & ~torch.isnan(boxes).any(-1)[..., None, None]
