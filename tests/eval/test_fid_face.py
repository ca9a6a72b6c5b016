"""fid_face: torchmetrics FID over recognizer embeddings."""

import numpy as np
import pytest
import torch

from eval.metrics.fid_face import (PrecomputedFeatures, RecognizerFeatures, compute, frechet_distance,
                                   identity_samples)
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

    def __init__(self, faces, params, references=None):
        self._faces = faces
        self.params = params
        self.case_ids = sorted(faces)
        self.references = references or {}

    def faces(self, case_id, backend):
        return self._faces[case_id].get(backend)


def fake_faces(rng, n_refs, n_faces, shift=0.0):
    return VideoFaces("dlib", 0.9, n_faces, rng.normal(size=(n_refs, 8)).astype(np.float32),
                      np.arange(n_faces), np.zeros((n_faces, 4), np.float32),
                      (rng.normal(size=(n_faces, 8)) + shift).astype(np.float32))


def test_too_few_crops_is_missing_with_the_counts():
    rng = np.random.default_rng(1)
    faces = {f"c{i}": {"dlib": fake_faces(rng, 2, 5)} for i in range(4)}  # 8 refs, 4 x 2 identities
    result = compute(Inputs(faces, EvalParams()))
    assert result.values == {}
    assert result.missing["fid_face/dlib"] == (
        "too few face samples: 8 distinct reference photos and 8 generated faces (at most one per identity per "
        "video, over 4 videos), need at least 16 on each side (2 x 8-d features)")


def shared_photo_videos(rng, refs, n_videos, n_frames):
    """Videos of the same reference photos, each frame showing every identity (a noisy near-copy)."""
    k = len(refs)
    out = {}
    for v in range(n_videos):
        emb = np.repeat(refs, n_frames, axis=0) + 0.1 * rng.normal(size=(k * n_frames, refs.shape[1]))
        frame = np.tile(np.arange(n_frames), k)
        out[f"c{v}"] = {"dlib": VideoFaces("dlib", 0.9, n_frames, refs, frame, np.zeros((k * n_frames, 4), np.float32),
                                           emb.astype(np.float32))}
    return out


def test_counts_distinct_photos_and_one_face_per_identity_per_video(tmp_path):
    """Six videos of the same two photos, 49 frames each: 2 reference samples (not 12) and 12
    generated ones (not 588), so the 2 x D rule reports too few instead of computing on near-copies."""
    rng = np.random.default_rng(3)
    refs = rng.normal(size=(2, 8)).astype(np.float32)
    faces = shared_photo_videos(rng, refs, n_videos=6, n_frames=49)
    result = compute(Inputs(faces, EvalParams(fid_min_samples_factor=1.0)))
    assert result.missing["fid_face/dlib"].startswith(
        "too few face samples: 2 distinct reference photos and 12 generated faces")
    # photos told apart by file content when the benchmark's paths are known: two files, same bytes
    for name, data in (("a.png", b"photo A"), ("a_copy.png", b"photo A"), ("b.png", b"photo B")):
        (tmp_path / name).write_bytes(data)
    refs3 = rng.normal(size=(3, 8)).astype(np.float32)  # distinct embeddings, but a.png == a_copy.png
    two = {"c0": {"dlib": VideoFaces("dlib", 0.9, 1, refs3[:2], np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                                     np.zeros((0, 8), np.float32))},
           "c1": {"dlib": VideoFaces("dlib", 0.9, 1, refs3[2:], np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                                     np.zeros((0, 8), np.float32))}}
    paths = {"c0": (str(tmp_path / "a.png"), str(tmp_path / "b.png")), "c1": (str(tmp_path / "a_copy.png"),)}
    assert "3 distinct reference photos" in compute(Inputs(two, EvalParams())).missing["fid_face/dlib"]
    assert "2 distinct reference photos" in compute(Inputs(two, EvalParams(), paths)).missing["fid_face/dlib"]


def test_the_generated_sample_is_the_median_match():
    """Per identity, the face matched to it at the median similarity (not the best one)."""
    ref = np.eye(4, dtype=np.float32)[:1]
    sims = [0.9, 0.2, 0.5, 0.7, 0.3]  # median 0.5, in frame 2
    emb = np.array([[s, np.sqrt(1 - s * s), 0, 0] for s in sims], np.float32)
    vf = VideoFaces("dlib", 0.9, 5, ref, np.arange(5), np.zeros((5, 4), np.float32), emb)
    np.testing.assert_array_equal(identity_samples(vf), emb[2:3])
    assert identity_samples(VideoFaces("dlib", 0.9, 2, ref, np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                                       np.zeros((0, 4), np.float32))).shape == (0, 4)


def test_enough_crops_gives_a_value_that_grows_with_the_shift():
    rng = np.random.default_rng(2)
    near = {f"c{i}": {"dlib": fake_faces(rng, 4, 40)} for i in range(30)}
    far = {f"c{i}": {"dlib": fake_faces(rng, 4, 40, shift=1.0)} for i in range(30)}
    fid_near = compute(Inputs(near, EvalParams())).values["fid_face/dlib"]
    fid_far = compute(Inputs(far, EvalParams())).values["fid_face/dlib"]
    assert fid_far > fid_near + 5.0  # the mean shift adds |1|^2 x 8 dims = 8
    missing = compute(Inputs({"c0": {}}, EvalParams()))
    assert "no video of this method has a 'dlib' face analysis" in missing.missing["fid_face/dlib"]
