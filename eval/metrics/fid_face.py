"""fid_face/R: Fréchet distance between the distribution of reference face crops and of generated
face crops of one method, in the feature space of recognizer R (its identity embeddings), computed
with torchmetrics' FrechetInceptionDistance given that recognizer as `feature=`.

Samples: every case's reference faces (one per reference per case) vs every face detected in any
analysed frame of the method's videos. Rule: both sides need at least
ceil(eval.fid_min_samples_factor x D) crops (default 2 x D, D = embedding size, e.g. 256 for
dlib's 128-d), since the D x D covariance is singular below D + 1 samples and noisy just above;
otherwise the metric is missing with the counts. Computed once per method at aggregation, from the
embeddings each video stored (its `prepare` step runs the face analysis), so a split run merges to
the same value. Scale differs from Inception FID: do not compare with the paper's FID numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from eval.context import VideoContext
from eval.registry import MetricResult, MetricUnavailable, register
from ingredients.faces.base import FaceAnalyzer


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


@register("fid_face", level="aggregate", prepare=prepare)
def compute(inputs) -> MetricResult:
    """inputs: eval.aggregate.AggregateInputs for one method."""
    result = MetricResult()
    for backend in inputs.params.face_backends:
        name = f"fid_face/{backend}"
        faces = [f for f in (inputs.faces(case_id, backend) for case_id in inputs.case_ids) if f is not None]
        if not faces:
            result.missing[name] = f"no video of this method has a {backend!r} face analysis (see face_sim/{backend} reasons)"
            continue
        dim = faces[0].refs.shape[1]
        real = np.concatenate([f.refs for f in faces])  # [sum K, D]
        fake = np.concatenate([f.embeddings for f in faces])  # [sum N, D]
        need = min_samples(dim, inputs.params.fid_min_samples_factor)
        if len(real) < need or len(fake) < need:
            result.missing[name] = (
                f"too few face crops: {len(real)} reference and {len(fake)} generated, need at least "
                f"{need} on each side ({inputs.params.fid_min_samples_factor:g} x {dim}-d features)"
            )
            continue
        result.values[name] = frechet_distance(
            torch.from_numpy(real).double(), torch.from_numpy(fake).double(), PrecomputedFeatures(dim)
        )
    return result
