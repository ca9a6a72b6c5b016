"""insightface backend: insightface's real model-zoo loading and inference on exported ONNX fakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ingredients.faces.base import FaceAnalyzer
from ingredients.faces.insightface_backend import InsightFaceAnalyzer, resolve_model_dir
from ingredients.faces.registry import build_analyzer
from tests.faces.onnx_fakes import BOX_HALF, KPS_OFFSETS, marker_image, write_fake_antelopev2


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface_root")
    folder, recognizer = write_fake_antelopev2(root)
    return root, folder, recognizer


@pytest.fixture(scope="module")
def analyzer(fake_root):
    root, _, _ = fake_root
    return build_analyzer("insightface", model_dir=str(root))


def expected_face(x: float, y: float, scale: float = 1.0):
    anchor = np.array([x, y])
    box = np.concatenate([anchor - BOX_HALF * scale, anchor + BOX_HALF * scale])
    return box, anchor + KPS_OFFSETS * scale


def test_folder_layout_and_model_routing(fake_root, analyzer):
    root, folder, _ = fake_root
    assert sorted(p.name for p in folder.iterdir()) == ["glintr100.onnx", "scrfd_10g_bnkps.onnx"]
    # the insightface root, the pack folder and the zip's nested layout all resolve to the pack
    assert resolve_model_dir(root) == folder and resolve_model_dir(folder) == folder
    assert isinstance(analyzer, InsightFaceAnalyzer) and isinstance(analyzer, FaceAnalyzer)
    assert analyzer.model_dir == folder
    assert analyzer.embedding_dim == 512 and analyzer.recognizer_size == 112
    from insightface.model_zoo.scrfd import SCRFD

    assert isinstance(analyzer._detector, SCRFD) and analyzer._detector.use_kps
    assert analyzer._detector._num_anchors == 2 and analyzer._detector._feat_stride_fpn == [8, 16, 32]


def test_detect_returns_the_encoded_boxes(analyzer):
    corners = [(200, 160), (400, 320)]
    faces = analyzer.detect(marker_image(640, 480, corners))
    assert len(faces) == 2
    faces = sorted(faces, key=lambda f: f.box[0])
    for face, (x, y) in zip(faces, corners):
        box, kps = expected_face(x, y)
        np.testing.assert_allclose(face.box, box, atol=1e-3)
        np.testing.assert_allclose(face.landmarks, kps, atol=1e-3)
        assert face.score == pytest.approx(1 / (1 + np.exp(-50 * (255 - 127.5) / 128 + 45)), abs=1e-4)


def test_detect_undoes_the_letterbox_scale(analyzer):
    """A 1280 x 960 photo is shrunk by 2 into the 640 input; boxes come back in photo pixels."""
    faces = analyzer.detect(marker_image(1280, 960, [(400, 320)], cell=16))
    assert len(faces) == 1
    box, kps = expected_face(400, 320, scale=2.0)
    np.testing.assert_allclose(faces[0].box, box, atol=1e-3)
    np.testing.assert_allclose(faces[0].landmarks, kps, atol=1e-3)


def test_no_marker_no_face(analyzer):
    assert analyzer.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_embed_matches_the_exported_network(fake_root, analyzer):
    """Unit 512-d vectors equal to the torch model on (RGB - 127.5) / 127.5, the ArcFaceONNX preprocessing."""
    _, _, recognizer = fake_root
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[:480, :])  # content for the crop
    image[160:168, 200:208] = 255
    face = analyzer.detect(image)
    assert face, "the marker should be found"
    crop = analyzer.align(image, face[0], 112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    vector = analyzer.embed(crop)
    assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    with torch.no_grad():
        pixels = (torch.from_numpy(crop).permute(2, 0, 1)[None].float() - 127.5) / 127.5  # [1, 3, 112, 112]
        expected = torch.nn.functional.normalize(recognizer(pixels), dim=-1)[0].numpy()
    np.testing.assert_allclose(vector, expected, atol=1e-5)
    # embed_face = norm_crop at 112 + the recognizer; raw = before normalisation
    np.testing.assert_allclose(analyzer.embed_face(image, face[0]), vector, atol=1e-6)
    raw = analyzer.embed_face(image, face[0], normalize=False)
    np.testing.assert_allclose(raw / np.linalg.norm(raw), vector, atol=1e-6)
    # a different face gives a different vector; a 224 crop is resized to the recognizer input
    other = analyzer.embed(np.ascontiguousarray(crop[::-1]))
    assert float(other @ vector) < 0.999
    big = analyzer.embed(analyzer.align(image, face[0], 224))
    assert float(big @ vector) > 0.98


def test_align_is_norm_crop_and_scales_for_other_sizes(analyzer):
    """112: insightface's norm_crop, pixel-identical to our template warp; 96: the template scaled."""
    from skimage import data

    from ingredients.faces.alignment import align_to_template

    image = np.ascontiguousarray(data.astronaut()[:480, :])
    image[160:168, 200:208] = 255
    face = analyzer.detect(image)[0]
    crop = analyzer.align(image, face, 112)
    ours = align_to_template(image, face.landmarks, 112)
    # float32 landmarks inside norm_crop move the matrix by ~1e-5: a rare 1-3 level difference
    assert np.abs(crop.astype(int) - ours.astype(int)).mean() < 0.01
    small = analyzer.align(image, face, 96)
    np.testing.assert_array_equal(small, align_to_template(image, face.landmarks, 96))


@pytest.mark.parametrize("missing", ["scrfd_10g_bnkps.onnx", "glintr100.onnx"])
def test_missing_file_names_it_and_its_source(tmp_path, missing):
    folder, _ = write_fake_antelopev2(tmp_path)
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError) as info:
        InsightFaceAnalyzer(model_dir=tmp_path)
    message = str(info.value)
    assert str(folder / missing) in message
    assert "antelopev2.zip" in message and "DIAMONIK7777/antelopev2" in message


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere/scrfd_10g_bnkps\.onnx"):
        InsightFaceAnalyzer(model_dir=tmp_path / "nowhere")
