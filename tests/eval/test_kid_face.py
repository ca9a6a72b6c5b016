"""kid_face: torchmetrics KID over recognizer embeddings, with the subset size chosen from the counts,
computable where fid_face's 2 x D rule leaves FID missing."""

import numpy as np
import pytest
import torch

from eval.metrics import fid_face, kid_face
from eval.metrics.fid_face import PrecomputedFeatures
from eval.params import EvalParams
from tests.eval.test_fid_face import Inputs, fake_faces


def poly_mmd_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3, written out (no subsets)."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_kid_with_whole_sets_as_the_subset_equals_the_closed_form():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(12, 8)), rng.normal(size=(12, 8)) + 0.5
    mean, std = kid_face.kernel_distance(torch.from_numpy(real), torch.from_numpy(fake), PrecomputedFeatures(8))
    assert mean == pytest.approx(poly_mmd_unbiased(real, fake), rel=1e-9) and std == pytest.approx(0.0, abs=1e-12)
    assert kid_face.subset_size(300, 5000) == 300 and kid_face.subset_size(5000, 4000) == 1000


def test_kid_is_computed_where_fid_has_too_few_samples_and_grows_with_the_shift():
    """8 photos and 8 generated faces per method: FID's 2 x 8 rule says missing, KID has a value
    (about 0 for the same distribution, clearly above for a shifted one), and is reproducible."""
    rng = np.random.default_rng(1)
    near = {f"c{i}": {"dlib": fake_faces(rng, 2, 5)} for i in range(4)}
    far = {f"c{i}": {"dlib": fake_faces(rng, 2, 5, shift=2.0)} for i in range(4)}
    assert "too few face samples" in fid_face.compute(Inputs(near, EvalParams())).missing["fid_face/dlib"]
    kid_near = kid_face.compute(Inputs(near, EvalParams())).values
    kid_far = kid_face.compute(Inputs(far, EvalParams())).values
    assert set(kid_near) == {"kid_face/dlib", "kid_face/dlib/std"}
    assert kid_far["kid_face/dlib"] > kid_near["kid_face/dlib"] + 1.0
    assert kid_face.compute(Inputs(far, EvalParams())).values == kid_far  # fixed-seed subsets
    few = kid_face.compute(Inputs(near, EvalParams(kid_min_samples=9)))
    assert few.values == {} and few.missing["kid_face/dlib"].startswith(
        "too few face samples: 8 distinct reference photos and 8 generated faces")
