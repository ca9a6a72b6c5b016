"""alignment: facexlib (issue #16 item 9): facexlib's own model classes from local .pth files, its
512 px template crop, and BiSeNet whitening of the EVA-CLIP input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ingredients.config import ParamsError, validate_model
from ingredients.faces.base import Face
from ingredients.faces.errors import NoFaceError
from ingredients.faces.facexlib_alignment import (
    BORDER_RGB,
    DETECTION_FILE,
    FACEXLIB_TEMPLATE_512,
    FACEXLIB_URLS,
    PARSING_FILE,
    FacexlibFaces,
    align_facexlib,
    facexlib_alignment_matrix,
    facexlib_template,
    resize_long_edge,
    resolve_facexlib_dir,
    select_facexlib_face,
)
from ingredients.faces.reference import FaceConditioner, FaceSettings, build_face_conditioner
from tests.faces.conftest import textured_photo
from tests.faces.facexlib_fakes import LANDMARK_OFFSETS, colour_centroids, dots_image, fake_retinaface_state


# the fake RetinaFace's one face is a 512 px box around a cell centre: border and two-faces doubts are expected
pytestmark = pytest.mark.filterwarnings("ignore::ingredients.faces.errors.FaceQualityWarning")


def similarity(points: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ (scale * rot).T + np.asarray(shift)


@pytest.mark.parametrize("angle", [0.0, 12.0, -25.0])
def test_landmarks_land_on_the_512_template(angle):
    """Dots drawn at 5 landmarks are found, after the crop, within a pixel of facexlib's template."""
    landmarks = similarity(FACEXLIB_TEMPLATE_512 - 256, angle, 0.35, (150.0, 140.0))  # a face ~44 px between the eyes
    image = dots_image(300, 280, landmarks, radius=3)
    crop = align_facexlib(image, landmarks, 512)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    found = colour_centroids(crop)
    assert np.abs(found - facexlib_template(512)).max() < 1.0
    matrix = facexlib_alignment_matrix(landmarks, 512)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, FACEXLIB_TEMPLATE_512, atol=1e-3)
    # the template scales with the crop size, as facexlib's face_size does
    half = align_facexlib(image, landmarks, 256)
    np.testing.assert_allclose(colour_centroids(half), facexlib_template(256), atol=1.0)


def test_border_is_facexlibs_gray_in_rgb():
    landmarks = similarity(FACEXLIB_TEMPLATE_512 - 256, 0.0, 0.25, (20.0, 20.0))  # face at the top-left corner
    crop = align_facexlib(np.full((100, 100, 3), 30, np.uint8), landmarks, 128)
    assert tuple(crop[0, 0]) == BORDER_RGB == (132, 133, 135)  # facexlib's (135, 133, 132) is BGR
    assert tuple(crop[-1, -1]) == (30, 30, 30)


def test_matches_facexlibs_own_face_restore_helper(face_helper, facexlib_faces):
    """Our detector + centre face + warp == facexlib's FaceRestoreHelper as ConsisID builds it (face_size
    128 here: the helper scales its template the same way), from the same local weight files."""
    helper = face_helper
    helper.clean_all()
    np.testing.assert_allclose(helper.face_template, facexlib_template(128))
    photo = textured_photo()
    bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    helper.read_image(bgr)
    with torch.no_grad():
        helper.get_face_landmarks_5(only_center_face=True)
    helper.align_warp_face()
    faces = facexlib_faces.detect(photo)
    index = select_facexlib_face(faces, 96, 96, "center")
    np.testing.assert_allclose(faces[index].landmarks, helper.all_landmarks_5[0], atol=1e-4)
    ours = align_facexlib(photo, faces[index].landmarks, 128)
    np.testing.assert_array_equal(ours, helper.cropped_faces[0][..., ::-1])
    # the fake detector's one face: a stride-32 cell centre + the encoded landmark offsets
    centre = faces[0].landmarks - LANDMARK_OFFSETS
    np.testing.assert_allclose(centre, np.repeat(centre[:1], 5, axis=0), atol=1e-3)
    assert len(faces) == 1 and faces[0].score > 0.97


def test_select_rules_center_and_first():
    def face(cx, cy, score):
        return Face(box=np.array([cx - 10, cy - 10, cx + 10, cy + 10], float), landmarks=np.zeros((5, 2)), score=score)

    faces = [face(10, 10, 0.99), face(48, 52, 0.98), face(52, 48, 0.97)]  # two at the same distance: the first
    assert select_facexlib_face(faces, 100, 100, "center") == 1
    assert select_facexlib_face(faces, 100, 100, "first") == 0
    with pytest.raises(ValueError, match="'center', 'first'|center, first"):
        select_facexlib_face(faces, 100, 100, "largest")


def test_resize_long_edge_as_the_reference():
    image = np.zeros((1000, 2001, 3), np.uint8)
    small, (sx, sy) = resize_long_edge(image, 1024)
    assert small.shape == (int(1000 * 1024 / 2001), 1024, 3)  # int() truncates, as resize_numpy_image_long
    assert sx == pytest.approx(2001 / 1024) and sy == pytest.approx(1000 / small.shape[0])
    same, scale = resize_long_edge(np.zeros((1024, 600, 3), np.uint8), 1024)
    assert same.shape == (1024, 600, 3) and scale == (1.0, 1.0)
    assert resize_long_edge(image, None)[0] is image


def test_weights_folder_follows_the_released_layout(face_encoder_dir, tmp_path):
    folder, _ = face_encoder_dir
    assert resolve_facexlib_dir(None, folder / "models" / "antelopev2") == folder
    assert resolve_facexlib_dir(tmp_path, folder / "models" / "antelopev2") == tmp_path
    with pytest.raises(ValueError, match="facexlib_dir"):
        resolve_facexlib_dir(None, None)


@pytest.mark.parametrize("missing", [DETECTION_FILE, PARSING_FILE])
def test_missing_file_names_it_and_never_downloads(tmp_path, face_encoder_dir, missing, no_downloads):
    folder, _ = face_encoder_dir
    for name in (DETECTION_FILE, PARSING_FILE):
        if name != missing:
            (tmp_path / name).symlink_to(folder / name)
    with pytest.raises(FileNotFoundError) as info:
        FacexlibFaces(tmp_path, parsing=True)
    message = str(info.value)
    assert str(tmp_path / missing) in message and FACEXLIB_URLS[missing] in message and "wget" in message


def test_dataparallel_prefix_and_wrong_file(tmp_path):
    state = fake_retinaface_state()
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / DETECTION_FILE)
    faces = FacexlibFaces(tmp_path, parsing=False)  # 'module.' stripped as facexlib's init_detection_model does
    torch.testing.assert_close(faces.detector.ClassHead[2].conv1x1.bias, state["ClassHead.2.conv1x1.bias"])
    torch.save({k: v for k, v in state.items() if not k.startswith("LandmarkHead")}, tmp_path / DETECTION_FILE)
    with pytest.raises(ValueError, match=rf"{DETECTION_FILE} does not fit facexlib's RetinaFace-ResNet50"):
        FacexlibFaces(tmp_path, parsing=False)


def write_photo(path, image):
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def parsing_conditioner(insightface96, tiny_clip, facexlib_faces):
    """crop 64 = the tiny tower's input size, so the EVA input is the crop itself (no resize)."""
    settings = FaceSettings(backend="insightface", alignment="facexlib", face_parsing=True, crop_size=64,
                            id_vector="raw")
    return FaceConditioner(insightface96, tiny_clip, settings, facexlib_faces)


def test_parsing_whitens_the_eva_input(parsing_conditioner, facexlib_faces, tiny_clip, tmp_path):
    photo = textured_photo()
    path = write_photo(tmp_path / "a.png", photo)
    taken = []
    handle = tiny_clip.visual.register_forward_pre_hook(lambda module, args: taken.append(args[0].clone()))
    try:
        result = parsing_conditioner([path], use_cache=False)
    finally:
        handle.remove()
    crop = align_facexlib(photo, result.faces[0].landmarks, 64)
    background = facexlib_faces.background(crop[None])[0]  # bool [64, 64]
    assert 0.02 < background.mean() < 0.98, "the random parser should label both background and face pixels"
    pixels = taken[0][0] * tiny_clip.std[0] + tiny_clip.mean[0]  # back to [0, 1]: [3, 64, 64]
    white = torch.from_numpy(background)
    torch.testing.assert_close(pixels[:, white], torch.ones_like(pixels[:, white]))
    gray = torch.from_numpy(0.299 * crop[..., 0] + 0.587 * crop[..., 1] + 0.114 * crop[..., 2]).float() / 255
    torch.testing.assert_close(pixels[:, ~white], gray[~white].expand(3, -1), atol=1e-5, rtol=0)
    # the canvas crops: colour, background white
    assert (result.crops[0][background] == 255).all()
    np.testing.assert_array_equal(result.crops[0][~background], crop[~background])


def test_no_retinaface_face_is_a_clear_error(parsing_conditioner, facexlib_faces, tmp_path):
    path = write_photo(tmp_path / "b.png", textured_photo())
    bias = facexlib_faces.detector.ClassHead[2].conv1x1.bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            bias.copy_(torch.tensor([5.0, -5.0, 5.0, -5.0]))  # the big anchors stop firing
        with pytest.raises(NoFaceError, match=r"b\.png by the 'facexlib RetinaFace' backend.*0\.97"):
            parsing_conditioner([path], use_cache=False)
    finally:
        with torch.no_grad():
            bias.copy_(saved)


def test_settings_rules(dlib_analyzer, tiny_clip, facexlib_faces):
    for data, message in [
        ({"alignment": "ffhq"}, r"faces\.alignment: Input should be 'arcface' or 'facexlib' \(got 'ffhq'\)"),
        ({"face_parsing": True}, r"faces\.face_parsing: .*needs alignment 'facexlib'.*with alignment 'arcface' "
                                 r"only false is allowed \(got True\)"),
        ({"id_source": "crop"}, r"faces\.id_source: .*needs alignment 'facexlib'.*with alignment 'arcface' "
                                r"only 'photo' is allowed \(got 'crop'\)"),
        ({"alignment": "facexlib", "facexlib_face": "largest"},
         r"faces\.facexlib_face: Input should be 'center' or 'first' \(got 'largest'\)"),
    ]:
        with pytest.raises(ParamsError, match=message):
            validate_model(FaceSettings, data, "faces")
    with pytest.raises(ValueError, match="face_parsing needs alignment 'facexlib'"):  # direct construction too
        FaceSettings(face_parsing=True)
    assert validate_model(FaceSettings, {"alignment": "facexlib", "face_parsing": True, "id_source": "crop"}, "faces").face_parsing
    with pytest.raises(ValueError, match="alignment 'facexlib' needs facexlib's models"):
        FaceConditioner(dlib_analyzer, tiny_clip, FaceSettings(alignment="facexlib"))
    with pytest.raises(ValueError, match="id_source 'crop' needs a backend that embeds facexlib crops"):
        FaceConditioner(dlib_analyzer, tiny_clip, FaceSettings(alignment="facexlib", id_source="crop"), facexlib_faces)
    assert validate_model(FaceSettings, {"alignment": "facexlib"}, "faces").output_settings()["alignment"] == "facexlib"
    assert FaceSettings().alignment == "arcface"


def test_built_from_params_finds_weights_beside_antelopev2(face_encoder_dir, tmp_path, no_downloads):
    """faces: {alignment: facexlib, model_dir: <face_encoder>/models/antelopev2} loads facexlib's files
    from <face_encoder>/ (the released layout); the crop is 512 on facexlib's template."""
    folder, _ = face_encoder_dir
    conditioner = build_face_conditioner({"backend": "insightface", "backend_options": {"det_size": 96},
                                          "model_dir": str(folder / "models" / "antelopev2"),
                                          "alignment": "facexlib", "crop_size": 512})
    assert conditioner.facexlib.folder == folder and conditioner.facexlib.parser is None
    assert set(conditioner.identity["facexlib"]["files"]) == {"detector"}
    result = conditioner([write_photo(tmp_path / "c.png", textured_photo())], use_cache=False)
    assert result.crops.shape == (1, 512, 512, 3) and result.id_cond.shape == (1, 544)
    np.testing.assert_array_equal(result.crops[0], align_facexlib(textured_photo(), result.faces[0].landmarks, 512))
