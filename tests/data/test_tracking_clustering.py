"""Tracking and clustering units: the rules on constructed detections, clustering on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from ingredients.data.clustering import cluster_tracks
from ingredients.data.synth import IDENTITY_SOURCES, sprite
from ingredients.data.tracking import track_faces
from ingredients.faces.base import box_iou
from ingredients.faces.base import Face


def _face(x: float, y: float, s: float = 60.0) -> Face:
    return Face(box=np.array([x, y, x + s, y + s]), landmarks=np.zeros((5, 2)), score=1.0)


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    assert np.allclose(box_iou(a, b), [[1 / 3, 0.0, 1.0]])


def test_two_faces_moving_apart_keep_their_tracks():
    dets = [(t, [_face(200 - 5 * t, 50), _face(20 + 5 * t, 50)]) for t in range(10)]  # listed in swapped order
    tracks = track_faces(dets)
    assert len(tracks) == 2
    left, right = tracks
    assert [f.box[0] for f in left.faces] == [20 + 5 * t for t in range(10)]
    assert [f.box[0] for f in right.faces] == [200 - 5 * t for t in range(10)]


def test_gap_within_max_gap_is_bridged_and_interpolated():
    dets = [(0, [_face(0, 0)]), (1, []), (2, []), (3, [_face(9, 0)])]
    (track,) = track_faces(dets, max_gap=2)
    assert track.frames == [0, 3]
    boxes = track.interpolated_boxes()
    assert sorted(boxes) == [0, 1, 2, 3] and np.allclose(boxes[2], [6, 0, 66, 60])
    assert len(track_faces(dets, max_gap=1)) == 2  # one step too many: a new track


def test_far_jump_starts_a_new_track():
    tracks = track_faces([(0, [_face(0, 0)]), (1, [_face(150, 0)])])
    assert len(tracks) == 2
    # a fast move with no overlap but a centre within half a face size still continues
    assert len(track_faces([(0, [_face(0, 0)]), (1, [_face(28, 0)])], iou_threshold=0.9, centre_factor=0.5)) == 1


@pytest.fixture(scope="module")
def real_embeddings(dlib_analyzer):
    """dlib embeddings of each identity's sprite photo at two scales: [2N, 128] and names."""
    import cv2

    vecs, names = [], []
    for src in IDENTITY_SOURCES:
        img = np.clip(sprite(src.name).rgb, 0, 255).astype(np.uint8)
        for side in (160, 224):
            im = np.ascontiguousarray(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
            face = max(dlib_analyzer.detect(im), key=lambda f: f.size)
            vecs.append(dlib_analyzer.embed_face(im, face))
            names.append(src.name)
    return np.stack(vecs), names


def test_clustering_real_faces_recovers_identities(real_embeddings, dlib_analyzer):
    emb, names = real_embeddings
    labels = cluster_tracks(emb, np.zeros((len(names), len(names)), bool), dlib_analyzer.verification_threshold)
    # same photo at two scales -> one cluster; 9 different people -> 9 clusters
    assert len(set(labels)) == len(IDENTITY_SOURCES)
    for i in range(0, len(names), 2):
        assert labels[i] == labels[i + 1]


def test_cannot_link_keeps_co_visible_tracks_apart(real_embeddings):
    emb, _ = real_embeddings
    pair = emb[:2]  # the same person twice
    assert cluster_tracks(pair, np.zeros((2, 2), bool), 0.5).tolist() == [0, 0]
    assert cluster_tracks(pair, np.array([[False, True], [True, False]]), 0.5).tolist() == [0, 1]
    # labels are numbered by first member; the threshold stops merging different people
    assert cluster_tracks(emb[[2, 0, 3, 1]], np.zeros((4, 4), bool), 0.95).tolist() == [0, 1, 0, 1]
    assert cluster_tracks(emb[[0, 2, 4]], np.zeros((3, 3), bool), 0.95).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="cannot_link"):
        cluster_tracks(emb[:3], np.zeros((2, 2), bool), 0.5)
