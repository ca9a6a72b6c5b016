"""id_confusion/R: share of frames with identity confusion.

A frame is confused when
- misassigned: the one-to-one assignment is not identity-preserving: some matched face is
  recognised (similarity >= verification_threshold) as another reference that is more similar to
  it than its own match (two references compete for one face: a person rendered twice, or a blend);
- or swapped: a face tracked from the previous frame (box IoU, or centre distance for
  non-overlapping boxes) was confidently matched to one reference there and to another here.
Sub-rates `id_confusion/R/misassigned` and `id_confusion/R/swap` are recorded too. Lower is
better. In a video where no face was found at all there is nothing to confuse: the value is
missing with that reason (not 0, which would read as perfect identity binding); read it with
face_found, which is 0 for such a video.
"""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.face_matching import misassigned, swapped
from eval.metrics.face_common import for_each_backend
from eval.registry import MetricResult, MetricUnavailable, register
from eval.video_faces import VideoFaces


def confusion_flags(faces: VideoFaces) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame boolean flags ([F] misassigned, [F] swapped from the previous frame)."""
    thr = faces.threshold
    mis = np.array([misassigned(m, thr) for m in faces.matches], dtype=bool)
    swap = np.zeros(faces.n_frames, dtype=bool)
    for t in range(1, faces.n_frames):
        swap[t] = swapped(faces.matches[t - 1], faces.frame_boxes(t - 1),
                          faces.matches[t], faces.frame_boxes(t), thr)
    return mis, swap


def summarize(faces: VideoFaces) -> dict[str, float]:
    if len(faces.frame) == 0:
        raise MetricUnavailable(f"no face found by {faces.backend!r} in any of the {faces.n_frames} analysed frames: "
                                "nothing to confuse (see face_found)")
    mis, swap = confusion_flags(faces)
    return {
        "": float(np.mean(mis | swap)),
        "/misassigned": float(np.mean(mis)),
        "/swap": float(np.mean(swap)),
    }


@register("id_confusion")
def compute(ctx: VideoContext) -> MetricResult:
    return for_each_backend(ctx, "id_confusion", summarize)
