"""5-point similarity alignment onto the ArcFace template (insightface's `arcface_dst`).

The template is given for 112 x 112 crops; other sizes scale it uniformly (insightface's own
`norm_crop` instead shifts it by 8 px for multiples of 128, which we do not copy).
"""

from __future__ import annotations

import cv2
import numpy as np

# insightface.utils.face_align.arcface_dst: left eye, right eye, nose tip, left/right mouth corner
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def arcface_template(size: int = 112) -> np.ndarray:
    """The 5 template points [5, 2] for a `size` x `size` crop."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    return ARCFACE_TEMPLATE_112 * (float(size) / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst (Umeyama).

    src, dst: [N, 2] points, N >= 2. Returns the [3, 3] homogeneous matrix, the same estimate as
    skimage's SimilarityTransform (which insightface's norm_crop uses).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need matching [N>=2, 2] point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or infinite values")
    n = src.shape[0]
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n  # [2, 2]
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / n
    if var_src <= 0:
        raise ValueError("landmarks are degenerate (all points coincide)")
    scale = float((s * d).sum() / var_src)
    out = np.eye(3)
    out[:2, :2] = scale * rot
    out[:2, 2] = dst_mean - scale * rot @ src_mean
    return out


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """[2, 3] affine matrix taking image pixels to the `size` crop of the ArcFace template."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks [5, 2] in insightface order, got shape {landmarks.shape}")
    return similarity_transform(landmarks, arcface_template(size))[:2]


def align_to_template(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp `image` [H, W, 3] so that `landmarks` land on the ArcFace template; [size, size, 3]."""
    matrix = alignment_matrix(landmarks, size)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
