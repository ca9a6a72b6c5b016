"""Scoring curation against synthetic ground truth (the tiny raw data's `NAME.gt.json`).

- Identity assignment accuracy: each curated cluster is mapped to one ground-truth identity per
  video (Hungarian on the number of frames where the cluster's box overlaps that identity's box at
  IoU >= match_iou); a curated box counts as correct when the ground-truth face it overlaps best is
  the one its cluster maps to. Accuracy = correct boxes / curated boxes, over kept clips.
- Mask IoU: for every ground-truth face visible in a kept clip frame, IoU between the curated mask
  of the mapped cluster (its box, or its segmentation mask) and the ground-truth box clipped to the
  frame; a face with no mapped cluster or no curated mask in that frame scores 0.
Both are returned as sums and counts per video, so a report can pool them over videos.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

from ingredients.data.masks import rasterize_box
from ingredients.faces.base import box_iou


def _clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.array([np.clip(box[0], 0, width), np.clip(box[1], 0, height), np.clip(box[2], 0, width), np.clip(box[3], 0, height)])


def score_video(clips: list[dict], gt: dict, masks: Mapping[str, np.ndarray] | None = None, match_iou: float = 0.3) -> dict:
    """Sums and counts for the kept clips of one video (clips as manifest-row dicts).

    masks: clip_id -> bool [K, F, H, W] for segmentation (saved at mask size: the ground truth is
    compared at that size); None -> the boxes are the masks.
    """
    width, height = int(gt["width"]), int(gt["height"])
    gt_names = list(gt["identities"])
    clusters = sorted({ident["cluster"] for c in clips for ident in c["identities"]})
    votes = np.zeros((len(clusters), len(gt_names)))  # [C, G]
    observations = []  # (cluster index, gt index or -1)
    for clip in clips:
        for ident in clip["identities"]:
            ci = clusters.index(ident["cluster"])
            for i, box in enumerate(ident["boxes"]):
                if box is None:
                    continue
                faces = gt["frames"][clip["start_frame"] + i]
                gi = -1
                if faces:
                    ious = box_iou(np.asarray(box)[None], np.array([f["box"] for f in faces]))[0]
                    j = int(np.argmax(ious))
                    if ious[j] >= match_iou:
                        gi = gt_names.index(faces[j]["identity"])
                        votes[ci, gi] += 1
                observations.append((ci, gi))
    mapping = {}
    if votes.size:
        rows, cols = linear_sum_assignment(-votes)
        mapping = {int(r): int(c) for r, c in zip(rows, cols) if votes[r, c] > 0}
    correct = sum(1 for ci, gi in observations if gi >= 0 and mapping.get(ci) == gi)

    inverse = {gi: clusters[ci] for ci, gi in mapping.items()}  # gt index -> cluster id
    iou_sum, iou_count = 0.0, 0
    count_ok = 0
    for clip in clips:
        by_cluster = {ident["cluster"]: k for k, ident in enumerate(clip["identities"])}
        clip_masks = masks.get(clip["clip_id"]) if masks is not None else None
        present = set()
        for i in range(clip["end_frame"] - clip["start_frame"]):
            for face in gt["frames"][clip["start_frame"] + i]:
                gi = gt_names.index(face["identity"])
                present.add(gi)
                gt_box = _clip_box(np.asarray(face["box"], dtype=np.float64), width, height)
                k = by_cluster.get(inverse.get(gi, -1))
                iou = 0.0
                if k is not None:
                    if clip_masks is not None:
                        pred = clip_masks[k, i]
                        ref = rasterize_box(gt_box * (pred.shape[1] / width), pred.shape[0], pred.shape[1])
                        union = np.logical_or(pred, ref).sum()
                        iou = float(np.logical_and(pred, ref).sum() / union) if union else 0.0
                    elif clip["identities"][k]["boxes"][i] is not None:
                        iou = float(box_iou(np.asarray(clip["identities"][k]["boxes"][i])[None], gt_box[None])[0, 0])
                iou_sum += iou
                iou_count += 1
        count_ok += int(len(present) == len(clip["identities"]))
    return {
        "boxes_total": len(observations),
        "boxes_correct": correct,
        "mask_iou_sum": iou_sum,
        "mask_iou_count": iou_count,
        "clips_scored": len(clips),
        "clips_identity_count_correct": count_ok,
        "cluster_to_identity": {str(clusters[ci]): gt_names[gi] for ci, gi in mapping.items()},
    }


def pool_scores(per_video: list[dict]) -> dict:
    """Pooled identity accuracy and mask IoU over videos (None where nothing was scored)."""
    tot = sum(s["boxes_total"] for s in per_video)
    cnt = sum(s["mask_iou_count"] for s in per_video)
    clips = sum(s["clips_scored"] for s in per_video)
    return {
        "videos_scored": len(per_video),
        "clips_scored": clips,
        "identity_accuracy": (sum(s["boxes_correct"] for s in per_video) / tot) if tot else None,
        "boxes_scored": tot,
        "mask_iou": (sum(s["mask_iou_sum"] for s in per_video) / cnt) if cnt else None,
        "gt_faces_scored": cnt,
        "identity_count_accuracy": (sum(s["clips_identity_count_correct"] for s in per_video) / clips) if clips else None,
    }
