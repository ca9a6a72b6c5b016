"""The face-analysis interface shared by reference processing, curation and evaluation.

A backend detects faces (box, 5 landmarks, score), aligns a face to a square crop with a 5-point
similarity transform, and embeds an aligned crop into an L2-normalised identity vector.
Optional methods: `embed_face(image, face, normalize)` (its own crop; normalize=False gives the raw
recognizer output) and `embed_crop(crop, normalize)` (a face crop of any size and framing as it is,
e.g. facexlib's 512 px crop; insightface only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face in pixel coordinates of the image it was found in.

    box: [4] float (x0, y0, x1, y1); landmarks: [5, 2] float in insightface order (left eye,
    right eye, nose tip, left mouth corner, right mouth corner; "left" = image left); score: detector
    confidence (backend-specific scale).
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def size(self) -> float:
        """Geometric mean of box width and height, in pixels."""
        w = float(self.box[2] - self.box[0])
        h = float(self.box[3] - self.box[1])
        return float(np.sqrt(max(w, 0.0) * max(h, 0.0)))


@runtime_checkable
class FaceAnalyzer(Protocol):
    """A face backend. Images are RGB uint8 arrays [H, W, 3]."""

    name: str
    embedding_dim: int
    # cosine similarity at or above which two embeddings are taken as the same person
    verification_threshold: float

    def detect(self, image: np.ndarray) -> list[Face]: ...

    def align(self, image: np.ndarray, face: Face, size: int = 112) -> np.ndarray: ...

    def embed(self, aligned: np.ndarray) -> np.ndarray: ...


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a [N, 4] and b [M, 4] (x0, y0, x1, y1) -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
