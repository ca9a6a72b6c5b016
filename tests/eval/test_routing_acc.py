from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

from eval.metrics import routing_acc, routing_consistency
from eval.metrics.routing_acc import read_routing, routing_accuracy
from eval.metrics.routing_consistency import matched_face_masks
from eval.registry import MetricUnavailable
from eval.video_faces import VideoFaces


def test_accuracy_ignores_background_tokens():
    routing = np.array([[2.0, 1.0], [0.1, 0.9], [5.0, 0.0], [0.0, 3.0]])
    mask = np.array([0, 1, -1, 0])
    assert routing_accuracy(routing, mask) == pytest.approx(2 / 3)
    assert routing_accuracy(routing, np.full(4, -1)) is None


def test_read_routing_validates_the_file(tmp_path):
    mask = np.array([[0, 1], [-1, 1]], dtype=np.int64)
    good = {"routing.0": np.random.default_rng(0).normal(size=(2, 2, 2)).astype(np.float32),
            "routing.1": np.zeros((2, 2, 2), np.float32), "index_mask": mask}
    save_file(good, str(tmp_path / "ok.safetensors"))
    points = read_routing(tmp_path / "ok.safetensors", n_refs=2)
    assert sorted(points) == [0, 1] and points[1][1] is not None
    with pytest.raises(ValueError, match="identities on its last axis"):
        read_routing(tmp_path / "ok.safetensors", n_refs=3)
    save_file({"routing.0": np.zeros((2, 2, 2), np.float32), "index_mask": np.array([[0, 2], [0, 0]])},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"integers in \[-1, 1\]"):
        read_routing(tmp_path / "bad.safetensors", n_refs=2)
    save_file({"weights": np.zeros(2, np.float32)}, str(tmp_path / "none.safetensors"))
    with pytest.raises(ValueError, match="no 'routing"):
        read_routing(tmp_path / "none.safetensors", n_refs=2)


# ---- routing_acc / routing_consistency on a metric context ---------------------------------------

E = np.eye(4, dtype=np.float32)
GEOMETRY = np.array([8, 4, 2], np.int64)  # token_geometry: spatial, temporal, patch: a token covers 16 x 16 px
N_FRAMES, HEIGHT, WIDTH = 5, 32, 64  # 2 latent frames x 2 x 4 tokens


def routing_ctx(path, faces=None, n_refs=2):
    """The part of VideoContext the routing metrics read."""
    return SimpleNamespace(routing_path=path, case=SimpleNamespace(references=[f"ref{k}.png" for k in range(n_refs)]),
                           params=SimpleNamespace(face_backends=("fake",), face_frame_stride=1, max_frames=None),
                           frames=np.zeros((N_FRAMES, HEIGHT, WIDTH, 3), np.uint8), faces=lambda backend: faces)


def test_routing_acc_without_a_ground_truth_mask_is_missing_with_the_reason(tmp_path):
    path = tmp_path / "case.routing.safetensors"
    save_file({"routing.0": np.zeros((2, 2, 4, 2), np.float32), "token_geometry": GEOMETRY}, str(path))
    with pytest.raises(MetricUnavailable, match="holds no ground-truth index mask"):
        routing_acc.compute(routing_ctx(path))
    with pytest.raises(MetricUnavailable, match="no routing maps for this method"):
        routing_acc.compute(routing_ctx(tmp_path / "absent.routing.safetensors"))


def two_faces_video():
    """Identity 0's face in the left token column, identity 1's in the right one, in every frame."""
    boxes = np.array([[0, 0, 16, 32], [48, 0, 64, 32]] * N_FRAMES, np.float32)
    return VideoFaces("fake", 0.9, N_FRAMES, E[:2], np.repeat(np.arange(N_FRAMES), 2), boxes, np.tile(E[:2], (N_FRAMES, 1)))


def test_matched_face_masks_cover_each_identity_box():
    masks = matched_face_masks(two_faces_video(), N_FRAMES, HEIGHT, WIDTH, stride=1)
    assert masks.shape == (2, N_FRAMES, HEIGHT, WIDTH)
    assert masks[0, :, :, :16].all() and not masks[0, :, :, 16:].any()
    assert masks[1, :, :, 48:].all() and not masks[1, :, :, :48].any()


def test_routing_consistency_with_the_faces_found_in_the_video(tmp_path):
    path = tmp_path / "case.routing.safetensors"
    toward = np.zeros((2, 2, 4, 2), np.float32)  # [T, h, w, K] logits
    toward[:, :, 0, 0] = 1.0  # left column -> identity 0, where its face is
    toward[:, :, 3, 1] = 1.0  # right column -> identity 1
    toward[:, :, 1:3, 1] = 1.0  # unlabelled middle columns: ignored
    save_file({"routing.0": toward, "routing.1": toward[..., ::-1].copy(), "token_geometry": GEOMETRY}, str(path))
    result = routing_consistency.compute(routing_ctx(path, two_faces_video()))
    assert result.values == pytest.approx({
        "routing_consistency/0": 1.0, "routing_consistency/1": 0.0,  # point 1 routes to the swapped identities
        "routing_consistency": 0.5, "routing_consistency/labelled_share": 0.5})  # 2 of 4 columns hold a face
    # no face of any reference: nothing to compare with
    faceless = VideoFaces("fake", 0.9, N_FRAMES, E[:2], np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                          np.zeros((0, 4), np.float32))
    with pytest.raises(MetricUnavailable, match="no face of any reference was found"):
        routing_consistency.compute(routing_ctx(path, faceless))
