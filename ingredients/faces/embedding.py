"""Identity vector of a detected face through whichever path a backend does best."""

from __future__ import annotations

import numpy as np

from ingredients.faces.base import Face, FaceAnalyzer

RECOGNIZER_CROP_SIZE = 112


def embed_detected_face(analyzer: FaceAnalyzer, image: np.ndarray, face: Face, normalize: bool = True) -> np.ndarray:
    """The identity vector of `face` in `image` [H, W, 3] RGB uint8.

    Uses the backend's `embed_face(image, face, normalize=...)` when it has one (dlib: its own chip
    extraction; insightface: norm_crop at the recognizer's input size), else `embed(align(..., 112))`.
    normalize=False asks for the raw recognizer output, which only backends with `embed_face` give.
    """
    embed_face = getattr(analyzer, "embed_face", None)
    if embed_face is not None:
        return embed_face(image, face, normalize=normalize)
    if not normalize:
        raise ValueError(f"backend {analyzer.name!r} has no embed_face, so it cannot return raw vectors")
    return analyzer.embed(analyzer.align(image, face, RECOGNIZER_CROP_SIZE))
