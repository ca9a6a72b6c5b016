"""Per-identity face masks per frame: the segmenter plug-in point of curation.

A masker turns the per-frame face boxes of a clip's identities into masks. The default `BoxMasker`
keeps the boxes themselves as the masks (the manifest records `mask_kind: "box"` and the dataset
rasterises them). A segmenter returns boolean masks that are saved next to the manifest (`mask_kind:
"segmentation"`); `LandmarkHullSegmenter` is the offline one: the convex hull of dlib's 68 face
landmarks (jaw line and eyebrows, raised by a forehead band), from the real 68-point model that ships
in face-recognition-models. A learned face parser (e.g. BiSeNet) plugs in the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

BoxSeq = list  # per frame: np.ndarray [4] (x0, y0, x1, y1) or None where the identity is not visible


@runtime_checkable
class FaceMasker(Protocol):
    """kind: 'box' (masks are the boxes; `masks` returns None) or 'segmentation'."""

    kind: str

    def masks(self, frames: np.ndarray, boxes: list[BoxSeq]) -> np.ndarray | None:
        """frames [T, H, W, 3] uint8; boxes: per identity, per frame -> bool [K, T, H, W] or None."""
        ...


def rasterize_box(box: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """bool [H, W]: pixels whose centre lies inside the box (x0, y0, x1, y1); all False for None."""
    out = np.zeros((height, width), dtype=bool)
    if box is None:
        return out
    x0, y0, x1, y1 = (float(v) for v in box)
    c0, c1 = int(np.clip(np.ceil(x0 - 0.5), 0, width)), int(np.clip(np.ceil(x1 - 0.5), 0, width))
    r0, r1 = int(np.clip(np.ceil(y0 - 0.5), 0, height)), int(np.clip(np.ceil(y1 - 0.5), 0, height))
    out[r0:r1, c0:c1] = True
    return out


class BoxMasker:
    """The face box is the mask (no files written)."""

    kind = "box"

    def masks(self, frames: np.ndarray, boxes: list[BoxSeq]) -> None:
        return None


SHAPE_68_FILE = "shape_predictor_68_face_landmarks.dat"


class LandmarkHullSegmenter:
    """Face region = convex hull of the 68 landmarks, with the brows lifted to cover the forehead."""

    kind = "segmentation"

    def __init__(self, model_dir: str | Path | None = None, forehead: float = 0.25) -> None:
        import dlib

        from ingredients.faces.dlib_backend import default_model_dir

        path = Path(model_dir or default_model_dir()) / SHAPE_68_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"68-point landmark model missing: {path}; it ships with face-recognition-models "
                f"(`.venv/bin/pip install face-recognition-models==0.3.0`) or http://dlib.net/files/{SHAPE_68_FILE}.bz2"
            )
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))
        self.forehead = float(forehead)

    def _hull(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        jaw, brows = pts[0:17], pts[17:27]
        lift = self.forehead * (jaw[:, 1].max() - brows[:, 1].min())
        raised = brows - np.array([0.0, lift])
        return cv2.convexHull(np.concatenate([jaw, brows, raised]).astype(np.float32)).reshape(-1, 2)

    def masks(self, frames: np.ndarray, boxes: list[BoxSeq]) -> np.ndarray:
        t, h, w = frames.shape[:3]
        out = np.zeros((len(boxes), t, h, w), dtype=bool)  # [K, T, H, W]
        for k, seq in enumerate(boxes):
            for i, box in enumerate(seq):
                if box is None:
                    continue
                canvas = np.zeros((h, w), dtype=np.uint8)
                hull = np.round(self._hull(frames[i], box)).astype(np.int32)
                cv2.fillConvexPoly(canvas, hull, 1)
                out[k, i] = canvas.astype(bool)
        return out


MASKERS = {"box": BoxMasker, "landmarks": LandmarkHullSegmenter}


def build_masker(name: str) -> FaceMasker:
    if name not in MASKERS:
        raise ValueError(f"unknown masker {name!r}; valid: {', '.join(sorted(MASKERS))}")
    return MASKERS[name]()
