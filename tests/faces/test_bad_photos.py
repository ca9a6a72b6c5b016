"""Bad reference photos: each case fails or warns with a message that names the file and the problem."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ingredients.faces.base import Face
from ingredients.faces.errors import FaceQualityWarning, ImageReadError, NoFaceError
from ingredients.faces.reference import FaceConditioner, FaceSettings, process_references


@pytest.fixture(scope="module")
def conditioner(dlib_analyzer, tiny_clip, tmp_path_factory):
    return FaceConditioner(dlib_analyzer, tiny_clip,
                           FaceSettings(crop_size=64, cache_dir=str(tmp_path_factory.mktemp("bad_cache"))))


def test_no_face_names_the_file(conditioner, tmp_path):
    from skimage import data

    path = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(path)
    with pytest.raises(NoFaceError, match=r"no face found in .*coffee\.jpg by the 'dlib' backend") as info:
        process_references([path], conditioner, use_cache=False)
    assert info.value.path == str(path)


def test_several_faces_use_the_largest_and_warn(conditioner, photo_dir, tmp_path):
    path = photo_dir / "group.png"
    with pytest.warns(FaceQualityWarning, match=r"group\.png: 6 faces detected; using the largest .*130x130 px"):
        result = process_references([path], conditioner)
    np.testing.assert_array_equal(result.faces[0].box, [870, 67, 1000, 197])
    # a cache hit repeats the warning, naming the file it was given this time
    copy = tmp_path / "same_group.png"
    copy.write_bytes(path.read_bytes())
    with pytest.warns(FaceQualityWarning, match=r"same_group\.png: 6 faces detected"):
        again = process_references([copy], conditioner)
    assert again.from_cache and again.warnings[0].startswith(str(copy))


def test_tiny_face_warns_with_its_size(conditioner, photo_dir):
    with pytest.warns(FaceQualityWarning, match=r"carphone_0\.png: the face is tiny, 44 px .*below min_face_size 64"):
        result = process_references([photo_dir / "carphone_0.png"], conditioner, use_cache=False)
    assert result.id_cond.shape == (1, 160)


def test_face_cut_by_the_border_warns(conditioner, photo_dir, tmp_path):
    hopper = np.asarray(Image.open(photo_dir / "grace_hopper.png"))
    path = tmp_path / "hopper_cut_left.png"
    Image.fromarray(np.ascontiguousarray(hopper[:, 220:])).save(path)
    with pytest.warns(FaceQualityWarning, match=r"hopper_cut_left\.png: the face touches or crosses the image border "
                                                r"\(box \(-68, 139, 140, 326\)"):
        process_references([path], conditioner, use_cache=False)
    path = tmp_path / "hopper_cut_chin.png"
    Image.fromarray(np.ascontiguousarray(hopper[:300])).save(path)
    with pytest.warns(FaceQualityWarning, match=r"hopper_cut_chin\.png: the face touches .*image 512x300"):
        process_references([path], conditioner, use_cache=False)


def test_clean_photo_gives_no_warning(conditioner, photo_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FaceQualityWarning)
        process_references([photo_dir / "grace_hopper.png"], conditioner, use_cache=False)


def test_corrupt_and_missing_files_are_named(conditioner, photo_dir, tmp_path):
    data = (photo_dir / "grace_hopper.png").read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match=r"cannot read image .*broken\.png: corrupt or truncated"):
        process_references([photo_dir / "person_0.png", broken], conditioner, use_cache=False)
    with pytest.raises(ImageReadError, match=r"cannot read image .*absent\.jpg"):
        process_references([tmp_path / "absent.jpg"], conditioner)


def test_modes_are_converted(conditioner, photo_dir, tmp_path):
    """RGBA (opaque) == RGB; grayscale 8-bit == grayscale 16-bit; all give a real conditioning."""
    rgb = Image.open(photo_dir / "person_0.png").convert("RGB")
    rgb.convert("RGBA").save(tmp_path / "rgba.png")
    gray = rgb.convert("L")
    gray.save(tmp_path / "gray.png")
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    base = process_references([photo_dir / "person_0.png"], conditioner, use_cache=False)
    rgba = process_references([tmp_path / "rgba.png"], conditioner, use_cache=False)
    torch.testing.assert_close(rgba.id_cond, base.id_cond, rtol=0, atol=0)
    g8 = process_references([tmp_path / "gray.png"], conditioner, use_cache=False)
    g16 = process_references([tmp_path / "gray16.png"], conditioner, use_cache=False)
    torch.testing.assert_close(g16.id_cond, g8.id_cond, rtol=0, atol=0)
    pal = process_references([tmp_path / "palette.png"], conditioner, use_cache=False)
    # the same person: grayscale and palette versions stay above the same-person threshold
    threshold = conditioner.analyzer.verification_threshold
    for other in (g8, pal):
        assert float(other.id_cond[0, :128] @ base.id_cond[0, :128]) > threshold


class _ZeroRecognizer:
    """A backend whose recognizer fails silently (all-zero vector): must be refused, not passed on."""

    name = "zero"
    embedding_dim = 4
    verification_threshold = 0.5

    def detect(self, image):
        return [Face(box=np.array([10.0, 10.0, 90.0, 90.0]), landmarks=np.array(
            [[35.0, 40.0], [65.0, 40.0], [50.0, 55.0], [38.0, 70.0], [62.0, 70.0]]), score=1.0)]

    def align(self, image, face, size=112):
        return np.zeros((size, size, 3), np.uint8)

    def embed(self, aligned):
        return np.zeros(4, np.float32)


def test_zero_vector_is_refused(tiny_clip, photo_dir):
    conditioner = FaceConditioner(_ZeroRecognizer(), tiny_clip, FaceSettings(crop_size=64))
    with pytest.raises(RuntimeError, match=r"person_0\.png: the 'zero' recognizer gave an unusable vector"):
        process_references([photo_dir / "person_0.png"], conditioner, use_cache=False)
