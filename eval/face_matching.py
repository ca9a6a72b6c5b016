"""Matching detected faces to reference identities, per frame and across frames (pure numpy).

Shapes: K references, N detected faces in a frame, D embedding dims. Similarities are cosines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ingredients.faces.base import box_iou


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities [K, N] between rows of a [K, D] and b [N, D] (rows L2-normalised here)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or (b.shape[0] and a.shape[1] != b.shape[1]):
        raise ValueError(f"cosine_matrix: expected [K, D] and [N, D], got {a.shape} and {b.shape}")
    if b.shape[0] == 0:
        return np.zeros((a.shape[0], 0))
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


@dataclass(frozen=True)
class FrameMatch:
    """One frame's one-to-one assignment of references to detected faces.

    sims: [K, N] cosine similarities; face_of_ref: [K] index of the matched face or -1;
    score: [K] similarity of the matched face, 0 for an unmatched reference.
    """

    sims: np.ndarray
    face_of_ref: np.ndarray
    score: np.ndarray

    @property
    def ref_of_face(self) -> np.ndarray:
        """[N] index of the reference each detected face is matched to, or -1."""
        out = np.full(self.sims.shape[1], -1, dtype=np.int64)
        for k, j in enumerate(self.face_of_ref):
            if j >= 0:
                out[j] = k
        return out


def match_frame(ref_emb: np.ndarray, face_emb: np.ndarray) -> FrameMatch:
    """Hungarian assignment maximising the summed cosine similarity between references and faces.

    With fewer faces than references the leftover references are unmatched and score 0.
    """
    sims = cosine_matrix(ref_emb, face_emb)  # [K, N]
    k = sims.shape[0]
    face_of_ref = np.full(k, -1, dtype=np.int64)
    score = np.zeros(k)
    if sims.shape[1]:
        rows, cols = linear_sum_assignment(sims, maximize=True)
        face_of_ref[rows] = cols
        score[rows] = sims[rows, cols]
    return FrameMatch(sims=sims, face_of_ref=face_of_ref, score=score)


def max_pair_similarity(match: FrameMatch) -> float | None:
    """The reference code's per-frame score: max cosine over all (reference, face) pairs, clamped
    at 0; None when the frame has no face (the reference code skips such frames)."""
    if match.sims.shape[1] == 0:
        return None
    return max(float(match.sims.max()), 0.0)


def all_found(match: FrameMatch, threshold: float) -> bool:
    """Whether every reference is matched to a face at or above the verification threshold."""
    return bool(np.all((match.face_of_ref >= 0) & (match.score >= threshold)))


def misassigned(match: FrameMatch, threshold: float) -> bool:
    """Whether some matched face is recognised (similarity >= threshold) as another reference that
    is more similar to it than the reference it was assigned to: the one-to-one assignment is not
    identity-preserving (e.g. one person rendered twice, or two identities blended)."""
    for k, j in enumerate(match.face_of_ref):
        if j < 0:
            continue
        others = np.delete(match.sims[:, j], k)
        if others.size and others.max() > match.sims[k, j] and others.max() >= threshold:
            return True
    return False


def link_faces(prev_boxes: np.ndarray, cur_boxes: np.ndarray) -> list[tuple[int, int]]:
    """Associate faces of consecutive frames: pairs (i in prev, j in cur).

    Affinity is the box IoU, or, for boxes that do not overlap, 0.5 x (1 - centre distance /
    mean box size) so fast but small moves still link; pairs with affinity 0 never link. Solved
    one-to-one with the Hungarian method.
    """
    prev_boxes = np.asarray(prev_boxes, dtype=np.float64).reshape(-1, 4)
    cur_boxes = np.asarray(cur_boxes, dtype=np.float64).reshape(-1, 4)
    if not len(prev_boxes) or not len(cur_boxes):
        return []
    iou = box_iou(prev_boxes, cur_boxes)  # [Np, Nc]
    centre_p = (prev_boxes[:, :2] + prev_boxes[:, 2:]) / 2
    centre_c = (cur_boxes[:, :2] + cur_boxes[:, 2:]) / 2
    dist = np.linalg.norm(centre_p[:, None] - centre_c[None], axis=-1)  # [Np, Nc]
    size_p = np.sqrt(np.prod(np.clip(prev_boxes[:, 2:] - prev_boxes[:, :2], 0, None), axis=1))
    size_c = np.sqrt(np.prod(np.clip(cur_boxes[:, 2:] - cur_boxes[:, :2], 0, None), axis=1))
    size = (size_p[:, None] + size_c[None]) / 2
    near = 0.5 * np.clip(1.0 - dist / np.maximum(size, 1e-12), 0.0, None)
    affinity = np.maximum(iou, near)
    rows, cols = linear_sum_assignment(affinity, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if affinity[i, j] > 0]


def swapped(prev: FrameMatch, prev_boxes: np.ndarray, cur: FrameMatch, cur_boxes: np.ndarray,
            threshold: float) -> bool:
    """Whether a tracked face changes identity between two consecutive frames: it is confidently
    matched (>= threshold) to reference k in the previous frame and to another reference in this
    one."""
    prev_ref = prev.ref_of_face
    cur_ref = cur.ref_of_face
    for i, j in link_faces(prev_boxes, cur_boxes):
        a, b = prev_ref[i], cur_ref[j]
        if a < 0 or b < 0 or a == b:
            continue
        if prev.score[a] >= threshold and cur.score[b] >= threshold:
            return True
    return False
