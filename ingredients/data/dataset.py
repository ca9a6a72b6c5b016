"""Training dataset over a curated manifest, with identity-count bucketing.

Each item is one clip at the training resolution and frame count:
- `frames` float [F, 3, H, W] in [-1, 1] (resized to cover H x W, centre-cropped);
- `prompt` (the clip caption) and `reference_paths` (absolute paths of the identities' reference
  crops, in identity order; the face stack's reference processing turns them into conditions);
- `index_mask` long [T*h*w] at latent-token resolution (see `ingredients.data.index_mask`);
- `boxes` float [K, F, 4] in output pixels (NaN where an identity is not visible), `num_identities`,
  `clip_id`.
Stage 1 uses single-identity clips (`max_identities=1`), stage 2 multi-identity ones
(`min_identities=2`); `IdentityCountBatchSampler` keeps every batch at one identity count so that
references and index masks batch without padding.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ingredients.data.index_mask import boxes_to_masks, index_mask_from_masks, latent_frame_count, token_grid
from ingredients.data.manifest import ManifestClip, read_manifest
from ingredients.files.video_io import frames_at

TemporalSampling = Literal["uniform", "start", "random"]


def frame_indices(clip_frames: int, num_frames: int, stride: int = 1, mode: TemporalSampling = "uniform", rng: random.Random | None = None,
                  times: list[float] | np.ndarray | None = None) -> np.ndarray:
    """Clip-relative frame indices [num_frames] to sample.

    uniform: evenly spread over the whole clip (repeats frames when the clip is shorter);
    start / random: a contiguous window with `stride` from the clip start / a random start; a clip
    too short for the window falls back to uniform.

    `times` ([clip_frames] presentation times, seconds; None: constant rate) places the samples at
    real times: positions in frames at the clip's mean rate become times, and each takes the frame
    nearest in time, so a variable-frame-rate clip plays at its recorded speed (at constant rate the
    indices are the positions rounded, as without times).
    """
    if clip_frames < 1 or num_frames < 1 or stride < 1:
        raise ValueError(f"need clip_frames, num_frames, stride >= 1; got {clip_frames}, {num_frames}, {stride}")
    span = (num_frames - 1) * stride + 1
    if mode == "uniform" or span > clip_frames:
        positions = np.linspace(0, clip_frames - 1, num_frames)
    elif mode == "start":
        positions = stride * np.arange(num_frames, dtype=np.float64)
    elif mode == "random":
        positions = (rng or random).randint(0, clip_frames - span) + stride * np.arange(num_frames, dtype=np.float64)
    else:
        raise ValueError(f"unknown temporal sampling {mode!r}; expected 'uniform', 'start' or 'random'")
    if times is not None and clip_frames > 1:
        t = np.asarray(times, dtype=np.float64)
        if t.shape != (clip_frames,):
            raise ValueError(f"times must hold one time per clip frame ({clip_frames}), got shape {t.shape}")
        period = (t[-1] - t[0]) / (clip_frames - 1)  # the clip's mean frame period
        # fractional frame position of each target time; rounded to 1e-6 so that constant-rate times
        # give back the positions exactly (ties round as np.round rounds them)
        positions = np.round(np.interp(t[0] + positions * period, t, np.arange(clip_frames)), 6)
    return np.round(positions).astype(np.int64)


def cover_crop_transform(src_h: int, src_w: int, height: int, width: int) -> tuple[float, float, float]:
    """(scale, dx, dy): resize by `scale` to cover height x width, then shift by (dx, dy) to centre-crop.

    A source point (x, y) lands at (x * scale + dx, y * scale + dy).
    """
    scale = max(height / src_h, width / src_w)
    return scale, (width - src_w * scale) / 2.0, (height - src_h * scale) / 2.0


def _warp(image: np.ndarray, scale: float, dx: float, dy: float, height: int, width: int, nearest: bool = False) -> np.ndarray:
    m = np.float64([[scale, 0, dx + 0.5 * scale - 0.5], [0, scale, dy + 0.5 * scale - 0.5]])  # pixel-centre convention
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if interp == cv2.INTER_AREA:  # warpAffine has no area filter: resize, then crop
        rw, rh = int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale))
        resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
        x0, y0 = int(round(-dx)), int(round(-dy))
        out = resized[y0 : y0 + height, x0 : x0 + width]
        if out.shape[:2] == (height, width):
            return out
    return cv2.warpAffine(image, m, (width, height), flags=interp, borderMode=cv2.BORDER_REPLICATE)


class IngredientsVideoDataset(Dataset):
    """Clips of a curated manifest as training samples (see the module docstring)."""

    def __init__(
        self,
        manifest: str | os.PathLike,
        num_frames: int,
        height: int,
        width: int,
        min_identities: int = 1,
        max_identities: int | None = None,
        vae_spatial: int = 8,
        vae_temporal: int = 4,
        patch_size: int = 2,
        min_coverage: float = 0.5,
        temporal_sampling: TemporalSampling = "uniform",
        frame_stride: int = 1,
        seed: int = 0,
        data_root: str | os.PathLike | None = None,
    ) -> None:
        self.manifest_path = Path(manifest)
        self.root = self.manifest_path.parent
        token_grid(height, width, vae_spatial, patch_size)  # validates divisibility
        if num_frames < 1 or (num_frames - 1) % vae_temporal:
            raise ValueError(f"num_frames must be {vae_temporal}n+1 (the VAE compresses time by {vae_temporal}), got {num_frames}")
        if max_identities is not None and max_identities < min_identities:
            raise ValueError(f"max_identities={max_identities} is below min_identities={min_identities}")
        all_clips = read_manifest(self.manifest_path, data_root)  # refuses paths escaping their root
        self.clips: list[ManifestClip] = [
            c for c in all_clips if c.num_identities >= min_identities and (max_identities is None or c.num_identities <= max_identities)
        ]
        if not self.clips:
            counts = sorted({c.num_identities for c in all_clips})
            raise ValueError(
                f"no clip of {self.manifest_path} has between {min_identities} and {max_identities} identities "
                f"({len(all_clips)} clips, identity counts present: {counts}); relax min_identities/max_identities"
            )
        self.num_frames, self.height, self.width = num_frames, height, width
        self.vae_spatial, self.vae_temporal, self.patch_size = vae_spatial, vae_temporal, patch_size
        self.min_coverage = min_coverage
        self.temporal_sampling = temporal_sampling
        self.frame_stride = frame_stride
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def identity_counts(self) -> list[int]:
        return [c.num_identities for c in self.clips]

    @property
    def num_tokens(self) -> int:
        h, w = token_grid(self.height, self.width, self.vae_spatial, self.patch_size)
        return latent_frame_count(self.num_frames, self.vae_temporal) * h * w

    def _resolve(self, rel: str) -> Path:
        return (self.root / rel).resolve()

    def __getitem__(self, i: int) -> dict:
        clip = self.clips[i]
        idx = frame_indices(clip.num_frames, self.num_frames, self.frame_stride, self.temporal_sampling, self._rng, clip.times())
        got = frames_at(self._resolve(clip.video), clip.start_frame + idx)  # only the sampled frames, as displayed
        if len(got) < len(set(idx.tolist())):
            raise ValueError(f"{clip.video} has fewer frames than clip {clip.clip_id} needs ({clip.start_frame + int(idx.max()) + 1})")
        raw = np.stack([got[clip.start_frame + int(i)] for i in idx])  # [F, H0, W0, 3]
        src_h, src_w = raw.shape[1:3]
        scale, dx, dy = cover_crop_transform(src_h, src_w, self.height, self.width)
        frames = np.stack([_warp(f, scale, dx, dy, self.height, self.width) for f in raw])  # [F, H, W, 3]
        frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [F, H, W, 3] -> [F, 3, H, W]

        k = clip.num_identities
        boxes = np.full((k, self.num_frames, 4), np.nan)
        for j, ident in enumerate(clip.identities):
            for t, src_t in enumerate(idx):
                b = ident.boxes[int(src_t)]
                if b is not None:
                    boxes[j, t] = [b[0] * scale + dx, b[1] * scale + dy, b[2] * scale + dx, b[3] * scale + dy]
        if clip.mask_kind == "segmentation":
            with np.load(self._resolve(clip.mask_path)) as data:
                seg = data["masks"][:, idx]  # [K, F0, Hm, Wm] -> [K, F, Hm, Wm]
            # masks are saved at mask size (curate.mask_max_side): the same cover-crop from their size
            m_scale, m_dx, m_dy = cover_crop_transform(seg.shape[2], seg.shape[3], self.height, self.width)
            masks = torch.from_numpy(np.stack([
                np.stack([_warp(seg[j, t].astype(np.uint8), m_scale, m_dx, m_dy, self.height, self.width, nearest=True) for t in range(self.num_frames)])
                for j in range(k)
            ]).astype(bool)) if k else torch.zeros((0, self.num_frames, self.height, self.width), dtype=torch.bool)
        else:
            masks = boxes_to_masks(boxes, self.height, self.width)  # [K, F, H, W]
        index_mask = index_mask_from_masks(masks, self.vae_spatial, self.vae_temporal, self.patch_size, self.min_coverage)
        return {
            "frames": frames_t,
            "prompt": clip.caption,
            "reference_paths": [str(self._resolve(ident.reference)) for ident in clip.identities],
            "index_mask": index_mask,
            "boxes": torch.from_numpy(boxes).float(),
            "num_identities": k,
            "clip_id": clip.clip_id,
        }


class IdentityCountBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices that share one identity count (bucketing by K).

    Shuffles within each bucket and the order of batches when `shuffle` (reproducible from `seed`
    and the epoch set with `set_epoch`).
    """

    def __init__(self, identity_counts: list[int], batch_size: int, shuffle: bool = True, drop_last: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.identity_counts = list(identity_counts)
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        buckets: dict[int, list[int]] = {}
        for i, k in enumerate(self.identity_counts):
            buckets.setdefault(k, []).append(i)
        batches = []
        for k in sorted(buckets):
            idx = buckets[k]
            if self.shuffle:
                rng.shuffle(idx)
            for s in range(0, len(idx), self.batch_size):
                b = idx[s : s + self.batch_size]
                if len(b) == self.batch_size or not self.drop_last:
                    batches.append(b)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def collate_ingredients(batch: list[dict]) -> dict:
    """Stack a same-K batch: frames [B, F, 3, H, W], index_mask [B, T*h*w], boxes [B, K, F, 4];
    prompts, reference paths and clip ids stay lists."""
    ks = {b["num_identities"] for b in batch}
    if len(ks) != 1:
        raise ValueError(f"batch mixes identity counts {sorted(ks)}; use IdentityCountBatchSampler")
    return {
        "frames": torch.stack([b["frames"] for b in batch]),
        "index_mask": torch.stack([b["index_mask"] for b in batch]),
        "boxes": torch.stack([b["boxes"] for b in batch]),
        "prompt": [b["prompt"] for b in batch],
        "reference_paths": [b["reference_paths"] for b in batch],
        "num_identities": ks.pop(),
        "clip_id": [b["clip_id"] for b in batch],
    }
