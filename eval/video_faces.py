"""Per-video face analysis shared by the face metrics: reference embeddings plus every detected
face of every analysed frame (box, embedding), computed once per video and backend.

It is also the per-video artifact that aggregate metrics (fid_face) and the report read back, so
it converts to and from flat tensors for safetensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from eval.face_matching import FrameMatch, match_frame
from ingredients.faces.base import Face, FaceAnalyzer
from ingredients.faces.errors import NoFaceError

logger = logging.getLogger(__name__)

# Reference code's fallback when a tight reference crop has no detectable face: pad by 25 % grey.
REFERENCE_PAD_SCALE = 1.25


@dataclass(frozen=True)
class VideoFaces:
    """Faces found in one video, for one recognizer backend.

    refs: [K, D] reference embeddings; frame: [N] frame index of each detected face (in the
    analysed frame numbering, 0..n_frames-1); boxes: [N, 4] (x0, y0, x1, y1); embeddings: [N, D].
    threshold: the backend's verification threshold.
    """

    backend: str
    threshold: float
    n_frames: int
    refs: np.ndarray
    frame: np.ndarray
    boxes: np.ndarray
    embeddings: np.ndarray

    def face_indices(self, t: int) -> np.ndarray:
        """Indices (into boxes/embeddings) of the faces detected in frame t."""
        return np.flatnonzero(self.frame == t)

    @cached_property
    def matches(self) -> list[FrameMatch]:
        """One-to-one matching of references to detected faces, per frame."""
        return [match_frame(self.refs, self.embeddings[self.face_indices(t)]) for t in range(self.n_frames)]

    def frame_boxes(self, t: int) -> np.ndarray:
        """[N_t, 4] boxes of frame t, in the order used by `matches[t]`."""
        return self.boxes[self.face_indices(t)]

    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        """Flat arrays for safetensors, keys prefixed by `prefix` (e.g. 'faces/dlib/')."""
        return {
            f"{prefix}refs": self.refs.astype(np.float32),
            f"{prefix}frame": self.frame.astype(np.int64),
            f"{prefix}boxes": self.boxes.astype(np.float32),
            f"{prefix}embeddings": self.embeddings.astype(np.float32),
            f"{prefix}n_frames": np.array([self.n_frames], dtype=np.int64),
            f"{prefix}threshold": np.array([self.threshold], dtype=np.float64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str, backend: str) -> "VideoFaces":
        """Inverse of `to_tensors`."""
        return cls(
            backend=backend,
            threshold=float(tensors[f"{prefix}threshold"][0]),
            n_frames=int(tensors[f"{prefix}n_frames"][0]),
            refs=tensors[f"{prefix}refs"],
            frame=tensors[f"{prefix}frame"],
            boxes=tensors[f"{prefix}boxes"],
            embeddings=tensors[f"{prefix}embeddings"],
        )


def largest_face(faces: list[Face]) -> Face | None:
    """The face with the largest box, or None."""
    return max(faces, key=lambda f: f.size, default=None)


def embed_face(analyzer: FaceAnalyzer, image: np.ndarray, face: Face) -> np.ndarray:
    """Embed one detected face; [D] float32. Uses the backend's own `embed_face(image, face)` when it
    has one (dlib: its native chip extraction from the full image, the more accurate path), else
    `embed(align(image, face))`."""
    direct = getattr(analyzer, "embed_face", None)
    raw = direct(image, face) if callable(direct) else analyzer.embed(analyzer.align(image, face))
    emb = np.asarray(raw, dtype=np.float32).reshape(-1)
    if emb.shape[0] != analyzer.embedding_dim or not np.all(np.isfinite(emb)):
        raise ValueError(
            f"backend {analyzer.name!r} returned an embedding of shape {emb.shape} (finite: "
            f"{bool(np.all(np.isfinite(emb)))}); expected [{analyzer.embedding_dim}]"
        )
    return emb


def pad_grey(image: np.ndarray, scale: float = REFERENCE_PAD_SCALE) -> np.ndarray:
    """The image padded by (scale - 1) x its size on each side with grey 128 (the reference code's
    retry for faces a detector misses at the image border)."""
    h, w = image.shape[:2]
    pad_y, pad_x = int(h * (scale - 1)), int(w * (scale - 1))
    return np.pad(image, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), constant_values=128)


def embed_reference(analyzer: FaceAnalyzer, image: np.ndarray, name: str = "reference") -> np.ndarray:
    """Embedding [D] of the largest face in a reference image.

    If no face is found the image is padded by 25 % grey on each side and searched again (tight
    face crops defeat detectors; the reference code does the same). Raises NoFaceError otherwise.
    """
    face = largest_face(analyzer.detect(image))
    if face is not None:
        return embed_face(analyzer, image, face)
    padded = pad_grey(image)
    face = largest_face(analyzer.detect(padded))
    if face is None:
        raise NoFaceError(name, analyzer.name, "also after padding the image by 25 %")
    return embed_face(analyzer, padded, face)


def largest_box_index(boxes: np.ndarray) -> int | None:
    """Index of the box [N, 4] with the largest area, the last one on ties (as `sorted(..., key=area)[-1]`
    in OpenS2V-Eval); None for no box."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return None
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(len(area) - 1 - np.argmax(area[::-1]))


def largest_face_embedding(analyzer: FaceAnalyzer, image: np.ndarray, plain: bool = True) -> np.ndarray | None:
    """Embedding [D] of the largest face (box area) in an image, retrying on the grey-padded image
    when none is found (OpenS2V-Eval's frame handling); None when there is no face either way.
    `plain=False` skips the first detection (already known to find nothing)."""
    for padded in ((False, True) if plain else (True,)):
        candidate = pad_grey(image) if padded else image
        faces = analyzer.detect(candidate)
        i = largest_box_index(np.array([f.box for f in faces], dtype=np.float64))
        if i is not None:
            return embed_face(analyzer, candidate, faces[i])
    return None


def analyze_frames(analyzer: FaceAnalyzer, frames: np.ndarray, refs: np.ndarray) -> VideoFaces:
    """Detect and embed every face of every frame [F, H, W, 3] against reference embeddings [K, D]."""
    frame_idx, boxes, embeddings = [], [], []
    for t, image in enumerate(frames):
        for face in analyzer.detect(image):
            frame_idx.append(t)
            boxes.append(np.asarray(face.box, dtype=np.float32))
            embeddings.append(embed_face(analyzer, image, face))
    dim = analyzer.embedding_dim
    return VideoFaces(
        backend=analyzer.name,
        threshold=float(analyzer.verification_threshold),
        n_frames=len(frames),
        refs=np.asarray(refs, dtype=np.float32).reshape(-1, dim),
        frame=np.asarray(frame_idx, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        embeddings=np.asarray(embeddings, dtype=np.float32).reshape(-1, dim),
    )
