"""Face masks: box rasterisation, and the landmark-hull segmenter through curation and the dataset."""

from __future__ import annotations

import shutil

import numpy as np
import torch

from ingredients.data.curate import curate
from ingredients.data.curation_params import CurationParams
from ingredients.data.dataset import IngredientsVideoDataset
from ingredients.data.index_mask import boxes_to_masks
from ingredients.data.manifest import read_manifest
from ingredients.data.masks import rasterize_box


def test_rasterize_box_matches_boxes_to_masks():
    box = np.array([3.2, 1.7, 9.6, 6.4])
    expected = boxes_to_masks(box[None, None], 8, 12)[0, 0].numpy()
    assert np.array_equal(rasterize_box(box, 8, 12), expected)
    assert rasterize_box(np.array([-5.0, -5.0, 3.0, 2.0]), 8, 12).sum() == 3 * 2
    assert not rasterize_box(None, 8, 12).any()


def test_landmark_segmentation_through_curation_and_dataset(tiny_raw, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for ext in (".mp4", ".txt", ".gt.json"):
        shutil.copy(tiny_raw / f"vid_001{ext}", raw / f"vid_001{ext}")
    report = curate(raw, tmp_path / "out", CurationParams(masker="landmarks"))
    clips = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert len(clips) == 2
    for clip in clips:
        assert clip.mask_kind == "segmentation" and clip.mask_path == f"masks/{clip.clip_id}.npz"
        with np.load(tmp_path / "out" / clip.mask_path) as data:
            masks = data["masks"]
        assert masks.shape == (2, clip.num_frames, 256, 384) and masks.dtype == bool
        for k, ident in enumerate(clip.identities):
            for t, box in enumerate(ident.boxes):
                m = masks[k, t]
                x0, y0, x1, y1 = box
                area = (x1 - x0) * (y1 - y0)
                # a face-shaped region: nearly all of it inside the box widened by a quarter (half upwards:
                # the forehead band), about a box in size
                ys, xs = np.nonzero(m)
                inside = (xs >= x0 - 0.25 * (x1 - x0)) & (xs < x1 + 0.25 * (x1 - x0)) & (ys >= y0 - 0.5 * (y1 - y0)) & (ys < y1 + 0.25 * (y1 - y0))
                assert inside.mean() > 0.97
                assert 0.5 * area < m.sum() < 1.6 * area
        assert not (masks[0] & masks[1]).any()  # two people's faces do not overlap
    # scored against the ground-truth boxes: a hull is not a box, so its IoU is lower but clearly related
    assert report["ground_truth"]["identity_accuracy"] == 1.0
    assert 0.5 <= report["ground_truth"]["mask_iou"] < 0.8

    ds = IngredientsVideoDataset(tmp_path / "out" / "manifest.jsonl", 9, 128, 192)
    s = ds[0]
    counts = torch.bincount(s["index_mask"] + 1, minlength=3)
    assert counts[1] > 0 and counts[2] > 0  # both identities own tokens
