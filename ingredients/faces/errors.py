"""Errors and warnings raised while reading reference photos and finding the face in them."""

from __future__ import annotations

from pathlib import Path


class FaceError(Exception):
    """Base class of the face stack's errors."""


class ImageReadError(FaceError, ValueError):
    """An image file that cannot be opened or decoded (missing, corrupt, truncated, unknown format)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class NoFaceError(FaceError):
    """No face was detected in a photo, so it cannot condition an identity."""

    def __init__(self, path: str | Path, backend: str, detail: str = "") -> None:
        self.path = str(path)
        self.backend = backend
        hint = "use a photo where one face is clearly visible, frontal and at least ~80 px wide"
        if backend == "dlib":
            hint += " (dlib's HOG detector misses small, strongly turned or occluded faces)"
        extra = f" ({detail})" if detail else ""
        super().__init__(f"no face found in {self.path} by the {backend!r} backend{extra}; {hint}")


class FaceQualityWarning(UserWarning):
    """A face was found but is doubtful: several faces, a tiny face, or a face cut by the border."""
