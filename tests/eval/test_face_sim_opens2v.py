"""face_sim_opens2v: OpenS2V-Eval's FaceSim-Cur protocol on hand-made faces (no face backend needed)."""

from types import SimpleNamespace

import numpy as np
import pytest

from eval.metrics import face_sim_opens2v as opens2v
from eval.registry import get_metric
from eval.video_faces import VideoFaces
from ingredients.faces.base import Face

E = np.eye(4, dtype=np.float32)
MIX = np.array([0.6, 0.8, 0, 0], np.float32)  # cosine 0.6 with E0, 0.8 with E1


def test_frame_indices_are_opens2v_truncated_linspace():
    # OpenS2V's indices for a 49-frame video (int cast truncates; rounding would give 2, 5, ...)
    assert opens2v.sample_indices(49).tolist() == [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 17, 18, 20, 21, 23, 24, 26,
                                                   27, 29, 30, 32, 34, 35, 37, 38, 40, 41, 43, 44, 46, 48]
    assert len(opens2v.sample_indices(6)) == 32  # a short video repeats frames, as decord's get_batch does
    assert get_metric("face_sim_opens2v").level == "video"


def test_clipped_scores_skip_faceless_frames_and_drop_zeros():
    largest = [E[0], None, -E[0], MIX, E[2]]
    (s0, _), (s1, _) = opens2v.protocol_scores(E[:2], largest)
    assert s0 == pytest.approx((1.0 + 0.6) / 2)  # -1 -> 0 and E2 -> 0 are dropped, None skipped
    assert s1 == pytest.approx(0.8)  # only MIX scores above 0 for E1
    result = opens2v.summarize(E[:2], largest, "face_sim_opens2v/fake")
    assert result.values == pytest.approx({"face_sim_opens2v/fake": 0.8, "face_sim_opens2v/fake/id0": 0.8,
                                           "face_sim_opens2v/fake/id1": 0.8, "face_sim_opens2v/fake/faceless_as_0": 0.8})
    # the protocol value is the first reference's: missing with the reason when it has no kept frame
    result = opens2v.summarize(E[:2], [E[1], None], "face_sim_opens2v/fake")
    # OpenS2V's aggregation writes 0.0 where ours is missing
    assert result.values == {"face_sim_opens2v/fake/id1": 1.0, "face_sim_opens2v/fake/faceless_as_0": 0.0}
    assert "cosine <= 0 with reference 0" in result.missing["face_sim_opens2v/fake"]
    result = opens2v.summarize(E[:2], [None] * 32, "face_sim_opens2v/fake")
    assert result.values == {"face_sim_opens2v/fake/faceless_as_0": 0.0}
    assert result.missing["face_sim_opens2v/fake"].startswith("no face in any of the 32 sampled frames")


class PadOnlyDetector:
    """A fake backend: finds one face (embedding MIX) only in grey-padded images; counts detections."""

    name, embedding_dim, verification_threshold = "fake", 4, 0.9

    def __init__(self, size):
        self.size = size
        self.calls = {"plain": 0, "padded": 0}

    def detect(self, image):
        padded = image.shape[0] > self.size
        self.calls["padded" if padded else "plain"] += 1
        return [Face(np.array([1, 1, 9, 9], np.float32), np.zeros((5, 2), np.float32), 1.0)] if padded else []

    def embed_face(self, image, face):
        return MIX


def test_largest_face_per_sampled_frame_reusing_the_face_analysis():
    """8 frames analysed every 2nd: analysed frames with a face reuse the largest one; the others are
    detected here, faceless ones retried on the grey-padded frame as OpenS2V does."""
    # analysed frame 0 (video frame 0): a small E1 face and a large E0 face; frame 2 (video 4): E0
    frame = np.array([0, 0, 2])
    boxes = np.array([[0, 0, 4, 4], [0, 0, 8, 8], [0, 0, 8, 8]], np.float32)
    faces = VideoFaces("fake", 0.9, 4, E[:2], frame, boxes, np.stack([E[1], E[0], E[0]]))
    detector = PadOnlyDetector(size=16)
    ctx = SimpleNamespace(frames=np.zeros((8, 16, 16, 3), np.uint8), params=SimpleNamespace(face_frame_stride=2),
                          analyzers=SimpleNamespace(get=lambda backend: detector))
    largest = opens2v.sampled_largest_faces(ctx, "fake", faces)
    idx = opens2v.sample_indices(8)
    for i, emb in zip(idx, largest):
        np.testing.assert_array_equal(emb, E[0] if i in (0, 4) else MIX)
    # plain detection only on the 4 frames not analysed (1, 3, 5, 7); padded retries on all 6 faceless ones
    assert detector.calls == {"plain": 4, "padded": 6}
    (s0, _), (s1, _) = opens2v.protocol_scores(E[:2], largest)
    assert s0 == pytest.approx(np.mean([1.0 if i in (0, 4) else 0.6 for i in idx]))
    assert s1 == pytest.approx(0.8)  # E0 frames score 0 for E1 and are dropped


def test_compute_names_values_per_backend():
    faces = VideoFaces("fake", 0.9, 2, E[:1], np.array([0, 1]), np.array([[0, 0, 8, 8]] * 2, np.float32),
                       np.stack([E[0], MIX]))
    ctx = SimpleNamespace(frames=np.zeros((2, 16, 16, 3), np.uint8),
                          params=SimpleNamespace(face_frame_stride=1, face_backends=("fake",)),
                          faces=lambda backend: faces, analyzers=SimpleNamespace(get=lambda backend: None))
    result = opens2v.compute(ctx)
    expected = np.mean([1.0 if i == 0 else 0.6 for i in opens2v.sample_indices(2)])
    assert result.values == pytest.approx({"face_sim_opens2v/fake": expected, "face_sim_opens2v/fake/id0": expected,
                                           "face_sim_opens2v/fake/faceless_as_0": expected})


def test_opens2v_aggregation_counts_a_faceless_video_as_zero(tmp_path):
    """Over one video with a face (0.8) and one without: ours averages 0.8 over the 1 video that has a
    value; OpenS2V's aggregation averages (0.8 + 0) / 2 = 0.4, as its leaderboard does."""
    from eval.aggregate import aggregate_video_metrics

    records = []
    for case_id, largest in (("a", [MIX] * 32), ("b", [None] * 32)):
        r = opens2v.summarize(E[:2], largest, "face_sim_opens2v/fake")
        records.append({"case_id": case_id, "metrics": r.values, "missing": r.missing})
    values, missing = aggregate_video_metrics(records)
    assert values["face_sim_opens2v/fake"] == pytest.approx(0.6)  # MIX is 0.6 E0 + 0.8 E1
    assert values["face_sim_opens2v/fake/faceless_as_0"] == pytest.approx(0.3)
    assert "averaged over 1 of 2 videos" in missing["face_sim_opens2v/fake"]
