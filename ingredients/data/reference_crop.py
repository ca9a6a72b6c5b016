"""Choosing and cutting the reference crop of an identity (sharp, frontal, large).

Scores every detection of the identity; prefers detections outside the training clip, so that the
model cannot learn to copy the reference's pixels into the target (a pose/lighting shortcut).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ingredients.faces.base import Face

QUALITY_SIDE = 64  # faces are resampled to this side before measuring sharpness


@dataclass(frozen=True)
class FaceQuality:
    size: float  # px, geometric mean of box sides
    sharpness: float  # variance of the Laplacian of the face, resampled to QUALITY_SIDE
    frontal: float  # 1 = nose centred between the eyes, 0 = nose at an eye (profile)


def face_quality(image: np.ndarray, face: Face) -> FaceQuality:
    """Quality measures of one detected face in an RGB image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = face.box
    c0, r0 = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.floor(y0), 0, h - 1))
    c1, r1 = int(np.clip(np.ceil(x1), c0 + 1, w)), int(np.clip(np.ceil(y1), r0 + 1, h))
    gray = cv2.cvtColor(np.ascontiguousarray(image[r0:r1, c0:c1]), cv2.COLOR_RGB2GRAY)
    # INTER_AREA when shrinking; upsampled small faces look soft, which is what we want to penalise
    gray = cv2.resize(gray, (QUALITY_SIDE, QUALITY_SIDE), interpolation=cv2.INTER_AREA if gray.shape[0] > QUALITY_SIDE else cv2.INTER_LINEAR)
    sharp = float(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F).var())
    lm = np.asarray(face.landmarks, dtype=np.float64)
    eye_l, eye_r, nose = lm[0], lm[1], lm[2]
    eye_vec = eye_r - eye_l
    eye_dist = float(np.linalg.norm(eye_vec))
    if eye_dist <= 0:
        frontal = 0.0
    else:
        # position of the nose along the eye axis, 0 = left eye, 1 = right eye
        u = float(np.dot(nose - eye_l, eye_vec) / eye_dist**2)
        frontal = float(np.clip(1.0 - 2.0 * abs(u - 0.5), 0.0, 1.0))
    return FaceQuality(size=face.size, sharpness=sharp, frontal=frontal)


def reference_scores(qualities: list[FaceQuality]) -> np.ndarray:
    """Score in [0, 1] per candidate: relative size x relative sharpness^0.5 x frontalness."""
    if not qualities:
        return np.zeros(0)
    size = np.array([q.size for q in qualities])
    sharp = np.array([q.sharpness for q in qualities])
    front = np.array([q.frontal for q in qualities])
    size_term = size / max(size.max(), 1e-6)
    sharp_term = np.sqrt(sharp / max(sharp.max(), 1e-6))
    return size_term * sharp_term * (0.25 + 0.75 * front)


def choose_reference(frames: list[int], qualities: list[FaceQuality], clip_range: tuple[int, int], prefer_outside: bool = True) -> tuple[int, bool]:
    """Index of the best candidate and whether it lies outside [start, end) of the clip.

    With prefer_outside, the best candidate outside the clip wins whenever one exists; ties go to
    the earliest frame.
    """
    if not frames:
        raise ValueError("no candidate detections to choose a reference from")
    scores = reference_scores(qualities)
    start, end = clip_range
    outside = np.array([not (start <= f < end) for f in frames])
    pool = np.flatnonzero(outside) if prefer_outside and outside.any() else np.arange(len(frames))
    best = int(pool[np.argmax(scores[pool])])
    return best, bool(outside[best])


def crop_reference(image: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """Square crop around the face box (side = margin x the box's larger side), border-replicated
    where it leaves the frame, resized to size x size; uint8 [size, size, 3]."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = margin * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = size / side
    # affine map crop pixel -> image pixel is x = (u + 0.5) / scale + left - 0.5; warp with its inverse
    left, top = cx - side / 2, cy - side / 2
    m = np.float64([[scale, 0, -left * scale + 0.5 * scale - 0.5], [0, scale, -top * scale + 0.5 * scale - 0.5]])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)
