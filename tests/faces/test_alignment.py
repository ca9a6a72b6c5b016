import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from ingredients.faces.alignment import ARCFACE_TEMPLATE_112, align_to_template, arcface_template, similarity_transform


def test_similarity_matches_skimage():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, (5, 2))
    dst = arcface_template(112) + rng.normal(0, 2, (5, 2))
    expected = SimilarityTransform.from_estimate(src, dst).params if hasattr(SimilarityTransform, "from_estimate") \
        else _legacy(src, dst)
    np.testing.assert_allclose(similarity_transform(src, dst), expected, atol=1e-9)


def _legacy(src, dst):
    t = SimilarityTransform()
    t.estimate(src, dst)
    return t.params


def test_similarity_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE_112
    dst = src @ (scale * rot).T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:2, :2], scale * rot, atol=1e-12)
    np.testing.assert_allclose(matrix[:2, 2], shift, atol=1e-10)


def test_align_matches_insightface_norm_crop():
    import warnings

    from insightface.utils.face_align import norm_crop
    from skimage import data

    image = data.astronaut()
    # float32-exact landmarks: insightface casts to float32, so both fits see the same numbers
    landmarks = np.array([[203.5, 102.0], [246.5, 104.5], [224.0, 126.75], [203.875, 147.25], [242.0, 149.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = norm_crop(image, landmarks.astype(np.float32), image_size=112)
    np.testing.assert_array_equal(align_to_template(image, landmarks, 112), expected)


def test_template_scales_and_bad_input():
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2)
    with pytest.raises(ValueError, match=r"expected 5 landmarks \[5, 2\]"):
        align_to_template(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 2)), 112)
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.zeros((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError, match="NaN"):
        similarity_transform(np.full((5, 2), np.nan), ARCFACE_TEMPLATE_112)
