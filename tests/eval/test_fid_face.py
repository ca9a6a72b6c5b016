"""fid_face: torchmetrics FID over recognizer embeddings."""

import numpy as np
import pytest
import torch

from eval.metrics.fid_face import PrecomputedFeatures, RecognizerFeatures, compute, frechet_distance
from eval.params import EvalParams
from eval.video_faces import VideoFaces, largest_face


def test_fid_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu = np.array([1.0, -2.0, 0.5, 0.0])
    real = torch.from_numpy(rng.normal(size=(20000, 4)))
    fake = torch.from_numpy(rng.normal(size=(20000, 4)) + mu)
    # same covariance (identity): FID = |mu|^2 = 5.25
    assert frechet_distance(real, fake, PrecomputedFeatures(4)) == pytest.approx(5.25, abs=0.1)
    assert frechet_distance(real, real.clone(), PrecomputedFeatures(4)) == pytest.approx(0.0, abs=1e-6)


def test_recognizer_wrapper_equals_precomputed_embeddings(dlib_analyzer, photos):
    """FID with the recognizer as torchmetrics' feature extractor on aligned crops equals FID on the
    embeddings the per-video stage stores (what aggregation uses)."""
    crops = []
    for name in ("hanks", "grace", "astronaut", "t1_a", "t1_b"):
        img = photos[name]
        face = largest_face(dlib_analyzer.detect(img))
        aligned = dlib_analyzer.align(img, face, 112)
        crops += [aligned, aligned[:, ::-1].copy()]  # plus a mirrored crop
    crops = np.stack(crops)  # [10, 112, 112, 3]
    real, fake = crops[::2], crops[1::2]
    wrapper = RecognizerFeatures(dlib_analyzer)
    as_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # [N, H, W, 3] -> [N, 3, H, W]
    direct = frechet_distance(as_tensor(real), as_tensor(fake), wrapper)
    emb = lambda x: torch.from_numpy(np.stack([dlib_analyzer.embed(c) for c in x])).double()
    stored = frechet_distance(emb(real), emb(fake), PrecomputedFeatures(128))
    assert direct > 0
    assert direct == pytest.approx(stored, rel=1e-9)


class Inputs:
    """The part of AggregateInputs fid_face reads."""

    def __init__(self, faces, params):
        self._faces = faces
        self.params = params
        self.case_ids = sorted(faces)

    def faces(self, case_id, backend):
        return self._faces[case_id].get(backend)


def fake_faces(rng, n_refs, n_faces, shift=0.0):
    return VideoFaces("dlib", 0.9, n_faces, rng.normal(size=(n_refs, 8)).astype(np.float32),
                      np.arange(n_faces), np.zeros((n_faces, 4), np.float32),
                      (rng.normal(size=(n_faces, 8)) + shift).astype(np.float32))


def test_too_few_crops_is_missing_with_the_counts():
    rng = np.random.default_rng(1)
    faces = {f"c{i}": {"dlib": fake_faces(rng, 2, 5)} for i in range(4)}  # 8 refs, 20 faces; need 16
    result = compute(Inputs(faces, EvalParams()))
    assert result.values == {}
    assert result.missing["fid_face/dlib"] == (
        "too few face crops: 8 reference and 20 generated, need at least 16 on each side (2 x 8-d features)")


def test_enough_crops_gives_a_value_that_grows_with_the_shift():
    rng = np.random.default_rng(2)
    near = {f"c{i}": {"dlib": fake_faces(rng, 4, 40)} for i in range(10)}
    far = {f"c{i}": {"dlib": fake_faces(rng, 4, 40, shift=1.0)} for i in range(10)}
    fid_near = compute(Inputs(near, EvalParams())).values["fid_face/dlib"]
    fid_far = compute(Inputs(far, EvalParams())).values["fid_face/dlib"]
    assert fid_far > fid_near + 6.0  # the mean shift adds |1|^2 x 8 dims = 8
    missing = compute(Inputs({"c0": {}}, EvalParams()))
    assert "no video of this method has a 'dlib' face analysis" in missing.missing["fid_face/dlib"]
