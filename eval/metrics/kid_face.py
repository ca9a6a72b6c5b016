"""kid_face/R: Kernel Inception Distance between reference faces and generated faces, in the face
recognizer's identity-embedding space (torchmetrics `KernelInceptionDistance` on the embeddings the
face analysis stored, as fid_face does), beside fid_face.

Same samples as fid_face (eval/metrics/fid_face.py): the distinct reference photos on one side, at
most one generated face per identity per video (the median match) on the other. KID is the unbiased
polynomial-kernel MMD (degree 3, gamma 1/D, coef 1), averaged over `subsets` random subsets of
`subset_size` samples per side; unbiased at small sample sizes, unlike FID (which needs more than D
samples per side for a non-singular covariance: 2 x 128 = 256 with dlib, 1,024 with 512-d
CurricularFace), so it suits OpenS2V-Eval's few hundred photos. Subset size: the smaller of the two
counts, capped at KID_MAX_SUBSET (torchmetrics' default 1,000); both sides need at least
eval.kid_min_samples (default 2, the estimator's minimum) or the value is missing with the counts.
With few samples the estimate is noisy: `kid_face/R/std` is the standard deviation over the subsets
(0 when both sides are smaller than a subset's size would need to vary). The subsets are drawn from a
fixed seed, so a rerun or a merged run gives the same value. Scale differs from Inception KID.
"""

from __future__ import annotations

import torch

from eval.metrics.fid_face import PrecomputedFeatures, distribution_samples, prepare, too_few
from eval.registry import MetricResult, register

NAME = "kid_face"
KID_MAX_SUBSET = 1000
KID_SUBSETS = 100
SEED = 0


def subset_size(n_real: int, n_fake: int) -> int:
    """The subset size of KID from the sample counts: min(n_real, n_fake, KID_MAX_SUBSET)."""
    return min(n_real, n_fake, KID_MAX_SUBSET)


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, feature: torch.nn.Module) -> tuple[float, float]:
    """(mean, std) of torchmetrics' KID over KID_SUBSETS subsets, drawn from a fixed seed."""
    from torchmetrics.image.kid import KernelInceptionDistance  # slow import, only when needed

    kid = KernelInceptionDistance(feature=feature, subsets=KID_SUBSETS, subset_size=subset_size(len(real), len(fake)),
                                  reset_real_features=True)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)  # the subsets' torch.randperm draws
        mean, std = kid.compute()
    return float(mean), float(std)


@register(NAME, level="aggregate", prepare=prepare)
def compute(inputs) -> MetricResult:
    """inputs: eval.aggregate.AggregateInputs for one method."""
    result = MetricResult()
    for backend in inputs.params.face_backends:
        name = f"{NAME}/{backend}"
        samples = distribution_samples(inputs, backend)
        if isinstance(samples, str):
            result.missing[name] = samples
            continue
        real, fake, videos = samples
        reason = too_few(real, fake, videos, inputs.params.kid_min_samples, "eval.kid_min_samples")
        if reason:
            result.missing[name] = reason
            continue
        mean, std = kernel_distance(torch.from_numpy(real).double(), torch.from_numpy(fake).double(),
                                    PrecomputedFeatures(real.shape[1]))
        result.values[name] = mean
        result.values[f"{name}/std"] = std
    return result
