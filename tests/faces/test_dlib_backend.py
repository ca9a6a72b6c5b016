"""dlib backend on real photos: detection, landmarks, verification margins, threshold."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from ingredients.faces.alignment import arcface_template
from ingredients.faces.base import FaceAnalyzer
from ingredients.faces.dlib_backend import (
    DLIB_COSINE_THRESHOLD,
    DlibFaceAnalyzer,
    default_model_dir,
    dlib_parts_to_landmarks,
)
from ingredients.data.packaged_photos import load_photo
from tests.faces.conftest import carphone_frames

# min(same-person cosine) - max(different-person cosine) required on the photos below.
# Measured: 0.064 with embed_face (dlib's own chip), 0.054 with embed on a 112 px ArcFace crop.
MARGIN_EMBED_FACE = 0.04
MARGIN_EMBED_CROP = 0.03


def largest(analyzer, image):
    faces = analyzer.detect(image)
    assert faces, "no face detected"
    return max(faces, key=lambda f: f.size)


@pytest.fixture(scope="module")
def identity_set(dlib_analyzer):
    """(name, person, image, face) for real photos: same-person pairs and a crowd of other people."""
    astronaut = load_photo("astronaut_full")
    hopper = load_photo("grace")
    hanks = load_photo("hanks")
    frames = carphone_frames()
    group = load_photo("t1")
    items = [
        ("astronaut", "collins", astronaut),
        ("astronaut_flipped", "collins", np.ascontiguousarray(astronaut[:, ::-1])),
        ("hopper", "hopper", hopper),
        ("hopper_half", "hopper", cv2.resize(hopper, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)),
        ("hanks", "hanks", hanks),
        ("hanks_flipped", "hanks", np.ascontiguousarray(hanks[:, ::-1])),
        ("carphone_0", "carphone", frames[0]),
        ("carphone_110", "carphone", frames[110]),
    ]
    out = [(name, person, image, largest(dlib_analyzer, image)) for name, person, image in items]
    for i, face in enumerate(sorted(dlib_analyzer.detect(group), key=lambda f: f.box[0])):
        out.append((f"group_{i}", f"group_{i}", group, face))
    return out


def cosine_table(vectors: dict, persons: dict):
    same, diff = [], []
    for a, b in itertools.combinations(vectors, 2):
        (same if persons[a] == persons[b] else diff).append(float(vectors[a] @ vectors[b]))
    return np.array(same), np.array(diff)


def test_is_a_face_analyzer(dlib_analyzer):
    assert isinstance(dlib_analyzer, FaceAnalyzer)
    assert dlib_analyzer.name == "dlib" and dlib_analyzer.embedding_dim == 128


def test_group_photo_one_face_per_person(dlib_analyzer):
    image = load_photo("t1")
    faces = dlib_analyzer.detect(image)
    assert len(faces) == 6
    boxes = np.stack([f.box for f in faces])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    # six distinct people: no two boxes overlap
    for i, j in itertools.combinations(range(6), 2):
        assert np.abs(centres[i] - centres[j]).max() > 60
    for face in faces:
        assert face.landmarks.shape == (5, 2)
        x0, y0, x1, y1 = face.box
        # landmarks lie in the box, eyes above nose above mouth, left eye left of right eye
        assert (face.landmarks[:, 0] > x0 - 5).all() and (face.landmarks[:, 0] < x1 + 5).all()
        assert face.landmarks[0, 0] < face.landmarks[1, 0] and face.landmarks[3, 0] < face.landmarks[4, 0]
        assert face.landmarks[:2, 1].max() < face.landmarks[2, 1] < face.landmarks[3:, 1].min()


def test_same_person_beats_different_people_with_margin(dlib_analyzer, identity_set):
    persons = {name: person for name, person, _, _ in identity_set}
    vectors = {name: dlib_analyzer.embed_face(image, face) for name, _, image, face in identity_set}
    for v in vectors.values():
        assert v.shape == (128,) and v.dtype == np.float32
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    same, diff = cosine_table(vectors, persons)
    assert len(same) == 4 and len(diff) == 14 * 13 // 2 - 4
    assert same.min() - diff.max() >= MARGIN_EMBED_FACE, (same, diff.max())
    # the documented threshold separates them too
    assert same.min() >= DLIB_COSINE_THRESHOLD > diff.max()


def test_aligned_crop_path_also_separates(dlib_analyzer, identity_set):
    persons = {name: person for name, person, _, _ in identity_set}
    vectors = {name: dlib_analyzer.embed(dlib_analyzer.align(image, face, 112))
               for name, _, image, face in identity_set}
    same, diff = cosine_table(vectors, persons)
    assert same.min() - diff.max() >= MARGIN_EMBED_CROP, (same, diff.max())
    # both paths describe the same face: nearly the same vector
    for name, _, image, face in identity_set[:4]:
        assert float(vectors[name] @ dlib_analyzer.embed_face(image, face)) > 0.97


def test_cosine_threshold_matches_dlib_distance_rule(dlib_analyzer, identity_set):
    """0.6 on raw descriptors <=> the cosine threshold, given the descriptors' typical norm."""
    raw = [dlib_analyzer.embed_face(image, face, normalize=False) for _, _, image, face in identity_set]
    norms = np.array([np.linalg.norm(v) for v in raw])
    assert abs(norms.mean() - 1.45) < 0.02 and norms.std() < 0.08
    assert DLIB_COSINE_THRESHOLD == pytest.approx(1 - 0.5 * (0.6 / norms.mean()) ** 2, abs=0.005)


def test_landmark_estimates_against_68_point_model(identity_set):
    """Eyes are measured (close to the 68-point eye centres); nose tip and mouth corners estimated."""
    analyzer68 = DlibFaceAnalyzer(upsample=1, landmark_model="68pt")
    errors = []
    for name, _, image, face in identity_set:
        if name.endswith("flipped") or name == "hopper_half":
            continue
        measured = [f for f in analyzer68.detect(image) if np.allclose(f.box, face.box)]
        assert len(measured) == 1
        iod = np.linalg.norm(measured[0].landmarks[1] - measured[0].landmarks[0])
        errors.append(np.linalg.norm(face.landmarks - measured[0].landmarks, axis=1) / iod)
    errors = np.array(errors)  # [faces, 5] in inter-ocular distances
    assert errors[:, :2].mean() < 0.08
    assert errors[:, 2:].mean() < 0.35
    assert np.median(errors[:, 2:]) < 0.3


def test_parts_mapping_on_dlib_template():
    """dlib's own template maps to its mean face's eye centres and exact mean-face nose/mouth."""
    from ingredients.faces.dlib_backend import DLIB_5PT_TEMPLATE, MEAN_FACE_5PT

    scale = 200.0
    landmarks = dlib_parts_to_landmarks(DLIB_5PT_TEMPLATE * scale + 10.0)
    np.testing.assert_allclose(landmarks[2:], MEAN_FACE_5PT[2:] * scale + 10.0, atol=1e-9)
    np.testing.assert_allclose(landmarks[0], DLIB_5PT_TEMPLATE[2:4].mean(0) * scale + 10.0)
    np.testing.assert_allclose(landmarks[1], DLIB_5PT_TEMPLATE[0:2].mean(0) * scale + 10.0)


def test_align_puts_landmarks_on_template(dlib_analyzer, identity_set):
    from ingredients.faces.alignment import alignment_matrix

    _, _, image, face = identity_set[0]
    for size in (112, 200):
        crop = dlib_analyzer.align(image, face, size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
        matrix = alignment_matrix(face.landmarks, size)
        mapped = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
        # a rigid fit: residuals of a few percent of the crop, eyes closest
        residual = np.linalg.norm(mapped - arcface_template(size), axis=1)
        assert residual.max() < 0.06 * size and residual[:2].max() < 0.03 * size


def test_detect_is_deterministic_and_validates_input(dlib_analyzer, identity_set):
    _, _, image, face = identity_set[2]
    again = largest(dlib_analyzer, image)
    np.testing.assert_array_equal(again.box, face.box)
    np.testing.assert_array_equal(dlib_analyzer.embed_face(image, face), dlib_analyzer.embed_face(image, again))
    with pytest.raises(ValueError, match="must be uint8"):
        dlib_analyzer.detect(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"RGB \[H, W, 3\]"):
        dlib_analyzer.detect(image[..., 0])


def test_blank_image_has_no_face(dlib_analyzer):
    assert dlib_analyzer.detect(np.full((200, 200, 3), 127, np.uint8)) == []


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"shape_predictor_5_face_landmarks\.dat.*face-recognition-models"):
        DlibFaceAnalyzer(model_dir=tmp_path)
    assert (default_model_dir() / "dlib_face_recognition_resnet_model_v1.dat").is_file()
