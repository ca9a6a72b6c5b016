"""fid_face/R: Fréchet distance between the distribution of reference face crops and of generated
face crops of one method, in the feature space of recognizer R (its identity embeddings), computed
with torchmetrics' FrechetInceptionDistance given that recognizer as `feature=`.

Samples, counted honestly (one sample = one independent face, not one near-copy):
- reference side: every DISTINCT reference photo once, however many cases use it. Photos are told
  apart by the SHA-256 of their file when the benchmark lists the case (AggregateInputs.references),
  else by their stored embedding (references are embedded once per file content, so equal photos
  give equal bytes).
- generated side: at most ONE face per identity per video: among the faces matched one-to-one to
  reference k over the analysed frames, the one at the median of those matched similarities (the
  lower median for an even count; ties by frame order). The frames of one video are near-copies of
  each other (49 of them would pass for 49 samples), so one per identity per video is what is
  independent. The median, not the best match, because picking the face closest to its reference
  would bias the generated distribution toward the references; it is a typical rendering of that
  identity, and deterministic. A face matched to k counts whatever its similarity (a wrong person
  rendered for k belongs in the distribution); unmatched extra faces do not count.
Rule: both sides need at least ceil(eval.fid_min_samples_factor x D) samples (default 2 x D,
D = embedding size, e.g. 256 for dlib's 128-d), since the D x D covariance is singular below
D + 1 samples and noisy just above; otherwise the metric is missing with both counts. Computed once
per method (and per identity count K) at aggregation, from the embeddings each video stored (its
`prepare` step runs the face analysis), so a split run merges to the same value. Scale differs
from Inception FID: do not compare with the paper's FID numbers.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from eval.context import VideoContext
from eval.registry import MetricResult, MetricUnavailable, register
from eval.video_faces import VideoFaces
from ingredients.faces.base import FaceAnalyzer
from ingredients.files.hashing import file_sha256


class RecognizerFeatures(torch.nn.Module):
    """FID feature extractor: aligned face crops uint8 [N, 3, S, S] -> identity embeddings [N, D]."""

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        super().__init__()
        self.analyzer = analyzer
        self.num_features = int(analyzer.embedding_dim)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        images = crops.permute(0, 2, 3, 1).cpu().numpy()  # [N, 3, S, S] -> [N, S, S, 3]
        emb = np.stack([np.asarray(self.analyzer.embed(np.ascontiguousarray(im)), dtype=np.float32) for im in images])
        return torch.from_numpy(emb).double()


class PrecomputedFeatures(torch.nn.Module):
    """Identity feature extractor over embeddings the recognizer already produced ([N, D] -> [N, D]),
    so aggregation does not rerun the network."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected features [N, {self.num_features}], got {tuple(features.shape)}")
        return features.double()


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, feature: torch.nn.Module) -> float:
    """torchmetrics FID between two sample sets passed through `feature`."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # slow import, only when needed

    fid = FrechetInceptionDistance(feature=feature, reset_real_features=True)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


def min_samples(dim: int, factor: float) -> int:
    return int(math.ceil(factor * dim))


def prepare(ctx: VideoContext) -> None:
    """Run (and so store) the face analysis of every backend; failures surface in compute."""
    for backend in ctx.params.face_backends:
        try:
            ctx.faces(backend)
        except MetricUnavailable:
            continue  # no analysis for this backend: compute() reports fid_face/<R> missing


def identity_samples(faces: VideoFaces) -> np.ndarray:
    """[<=K, D] generated samples of one video: per reference, the face matched to it one-to-one at
    the (lower) median of its matched similarities over the analysed frames; none if never matched."""
    rows = []
    for k in range(faces.refs.shape[0]):
        matched = [(float(m.sims[k, j]), t, int(j)) for t, m in enumerate(faces.matches) if (j := m.face_of_ref[k]) >= 0]
        if not matched:
            continue
        _sim, t, j = sorted(matched)[(len(matched) - 1) // 2]
        rows.append(faces.embeddings[faces.face_indices(t)[j]])
    return np.asarray(rows, dtype=np.float32).reshape(-1, faces.embeddings.shape[1])


def reference_samples(faces_by_case: dict[str, VideoFaces], references: dict[str, tuple[str, ...]]) -> np.ndarray:
    """[R, D] embeddings of the distinct reference photos (by file SHA-256 where the case's paths are
    known, else by embedding bytes), in first-seen order over the cases."""
    seen: dict[tuple[str, bytes | str], np.ndarray] = {}
    for case_id, faces in faces_by_case.items():
        paths = references.get(case_id, ())
        for k, emb in enumerate(faces.refs):
            path = Path(paths[k]) if len(paths) == len(faces.refs) else None
            key = ("sha256", _file_digest(path)) if path is not None and path.is_file() else ("embedding", emb.tobytes())
            seen.setdefault(key, emb)
    dim = next(iter(faces_by_case.values())).refs.shape[1]
    return np.asarray(list(seen.values()), dtype=np.float32).reshape(-1, dim)


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _digest(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _digest(path: str, _mtime_ns: int, _size: int) -> str:
    """SHA-256 of a file, cached per (path, mtime, size)."""
    return file_sha256(path)


def distribution_samples(inputs, backend: str) -> tuple[np.ndarray, np.ndarray, int] | str:
    """(reference samples [distinct photos, D], generated samples [<= sum K, D], videos) of one
    method for `backend`, or the reason there are none (shared by fid_face and kid_face)."""
    faces = {c: f for c in inputs.case_ids if (f := inputs.faces(c, backend)) is not None}
    if not faces:
        return f"no video of this method has a {backend!r} face analysis (see face_sim/{backend} reasons)"
    real = reference_samples(faces, inputs.references)
    fake = np.concatenate([identity_samples(f) for f in faces.values()])
    return real, fake, len(faces)


def too_few(real: np.ndarray, fake: np.ndarray, videos: int, need: int, why: str) -> str | None:
    """The missing reason when either side has fewer than `need` samples."""
    if len(real) >= need and len(fake) >= need:
        return None
    return (f"too few face samples: {len(real)} distinct reference photos and {len(fake)} generated faces "
            f"(at most one per identity per video, over {videos} videos), need at least {need} on each side ({why})")


@register("fid_face", level="aggregate", prepare=prepare)
def compute(inputs) -> MetricResult:
    """inputs: eval.aggregate.AggregateInputs for one method."""
    result = MetricResult()
    for backend in inputs.params.face_backends:
        name = f"fid_face/{backend}"
        samples = distribution_samples(inputs, backend)
        if isinstance(samples, str):
            result.missing[name] = samples
            continue
        real, fake, videos = samples
        dim = real.shape[1]
        need = min_samples(dim, inputs.params.fid_min_samples_factor)
        reason = too_few(real, fake, videos, need, f"{inputs.params.fid_min_samples_factor:g} x {dim}-d features")
        if reason:
            result.missing[name] = reason
            continue
        result.values[name] = frechet_distance(
            torch.from_numpy(real).double(), torch.from_numpy(fake).double(), PrecomputedFeatures(dim)
        )
    return result
