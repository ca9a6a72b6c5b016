import numpy as np
import pytest

from eval.face_matching import (
    all_found, box_iou, cosine_matrix, link_faces, match_frame, max_pair_similarity, misassigned, swapped,
)


def unit(*v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


E0, E1, E2 = np.eye(3)


def test_cosine_matrix_normalises_rows():
    sims = cosine_matrix(np.array([[2.0, 0, 0], [0, 3.0, 0]]), np.array([[1.0, 1.0, 0]]))
    np.testing.assert_allclose(sims, [[2 ** -0.5], [2 ** -0.5]])


def test_hungarian_beats_greedy():
    # sims = [[0.60, 0.55], [0.58, 0.10]]: greedy (largest pair first) takes ref0-f0 (0.60) and leaves
    # ref1-f1 (0.10), sum 0.70; the optimum is ref0-f1 + ref1-f0 = 1.13
    refs = np.eye(3)[:2]
    faces = np.array([[0.60, 0.58, np.sqrt(1 - 0.60**2 - 0.58**2)], [0.55, 0.10, np.sqrt(1 - 0.55**2 - 0.10**2)]])
    m = match_frame(refs, faces)
    np.testing.assert_allclose(m.sims, [[0.60, 0.55], [0.58, 0.10]], atol=1e-12)
    assert list(m.face_of_ref) == [1, 0]
    np.testing.assert_allclose(m.score, [0.55, 0.58], atol=1e-12)
    assert list(m.ref_of_face) == [1, 0]


def test_unmatched_reference_scores_zero_and_no_face_frame():
    m = match_frame(np.eye(3)[:2], np.array([unit(0.2, 1.0, 0.0)]))
    assert list(m.face_of_ref) == [-1, 0]
    np.testing.assert_allclose(m.score, [0.0, unit(0.2, 1.0, 0.0)[1]])
    empty = match_frame(np.eye(3)[:2], np.zeros((0, 3)))
    assert list(empty.face_of_ref) == [-1, -1] and list(empty.score) == [0.0, 0.0]
    assert max_pair_similarity(empty) is None


def test_max_pair_similarity_ignores_the_second_identity():
    # one face equal to ref0, none for ref1: max-over-pairs is perfect, one-to-one mean is 0.5
    m = match_frame(np.eye(3)[:2], np.array([E0]))
    assert max_pair_similarity(m) == pytest.approx(1.0)
    assert m.score.mean() == pytest.approx(0.5)
    assert max_pair_similarity(match_frame(np.array([E0]), np.array([-E0]))) == 0.0  # clamped


def test_all_found_needs_every_reference_above_threshold():
    refs = np.eye(3)[:2]
    assert all_found(match_frame(refs, np.array([E1, E0])), 0.9)
    assert not all_found(match_frame(refs, np.array([E0])), 0.9)
    assert not all_found(match_frame(refs, np.array([E0, unit(0.5, 1, 1)])), 0.9)


def test_misassigned_when_one_person_is_rendered_twice():
    refs = np.eye(3)[:2]
    twice = np.array([unit(1.0, 0.05, 0.2), unit(1.0, 0.1, 0.1)])  # both faces look like ref0
    assert misassigned(match_frame(refs, twice), threshold=0.9)
    assert not misassigned(match_frame(refs, np.array([E0, E1])), threshold=0.9)
    # the competing reference must itself be recognised in the face (>= threshold)
    weak = np.array([unit(0.6, 0.5, 1.0), unit(0.5, 0.6, 1.0)])
    assert not misassigned(match_frame(refs, weak), threshold=0.9)


def test_box_iou_and_linking():
    a = np.array([[0, 0, 10, 10], [100, 0, 110, 10]], dtype=float)
    np.testing.assert_allclose(box_iou(a, a), np.eye(2))
    np.testing.assert_allclose(box_iou(a[:1], np.array([[5, 0, 15, 10]]))[0, 0], 50 / 150)
    # current boxes listed in the other order and moved a little: linked by position, not index
    cur = np.array([[102, 1, 112, 11], [3, 2, 13, 12]], dtype=float)
    assert sorted(link_faces(a, cur)) == [(0, 1), (1, 0)]
    # a non-overlapping but near move (centre 8 px for 10 px boxes) still links; a far one does not
    assert link_faces(a[:1], np.array([[8, 0, 18, 10]], dtype=float)) == [(0, 0)]
    assert link_faces(a[:1], np.array([[50, 50, 60, 60]], dtype=float)) == []
    assert link_faces(a, np.zeros((0, 4))) == []


def test_swapped_detects_identity_change_at_the_same_place():
    refs = np.eye(3)[:2]
    boxes = np.array([[0, 0, 50, 50], [100, 0, 150, 50]], dtype=float)
    before = match_frame(refs, np.array([E0, E1]))  # left = ref0, right = ref1
    after = match_frame(refs, np.array([E1, E0]))  # left = ref1, right = ref0
    assert swapped(before, boxes, after, boxes, threshold=0.9)
    assert not swapped(before, boxes, before, boxes, threshold=0.9)
    # faces that moved places along with their identities are not a swap
    assert not swapped(before, boxes, after, boxes[::-1].copy(), threshold=0.9)
    # low-confidence matches do not count
    weak = match_frame(refs, np.array([unit(0.5, 0.6, 1.0), unit(0.6, 0.5, 1.0)]))
    assert not swapped(before, boxes, weak, boxes, threshold=0.9)
