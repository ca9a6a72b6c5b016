"""id_cond as the reference code builds it (issue #16 item 10), recomputed here through the libraries the
reference calls (insightface's FaceAnalysis and model zoo, facexlib's FaceRestoreHelper and BiSeNet,
torchvision's resize / normalize) on the exported ONNX fakes, the random facexlib fakes and the tiny
CLIP tower; the sources are PKU-YuanGroup/ConsisID models/consisid_utils.py::process_face_embeddings
and feizc/Ingredients models/utils.py::process_face_embeddings_split."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import normalize, resize

from ingredients.faces.base import Face
from ingredients.faces.reference import (
    CONSISID_FACE_SETTINGS,
    INGREDIENTS_FACE_SETTINGS,
    FaceConditioner,
    FaceSettings,
    select_face,
)
from tests.faces.conftest import textured_photo
from tests.faces.onnx_fakes import marker_image

# the fake RetinaFace's one face is a 512 px box around a cell centre: border and two-faces doubts are expected
pytestmark = pytest.mark.filterwarnings("ignore::ingredients.faces.errors.FaceQualityWarning")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
BG_LABELS = [0, 16, 18, 7, 8, 9, 14, 15]


def luma(x: torch.Tensor) -> torch.Tensor:
    """The reference's to_gray: [N, 3, H, W] -> 0.299 R + 0.587 G + 0.114 B on 3 channels."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).repeat(1, 3, 1, 1)


@torch.no_grad()
def reference_clip(tiny_clip, image: torch.Tensor):
    """resize(., image_size, BICUBIC) -> normalize(OpenAI) -> tower; the CLS embedding divided by its norm."""
    pixels = normalize(resize(image, tiny_clip.image_size, InterpolationMode.BICUBIC), OPENAI_MEAN, OPENAI_STD)
    features = tiny_clip(pixels)  # our hooks give the hidden states; the pooled vector is recomputed below
    vit = tiny_clip.visual(pixels)
    return vit / torch.norm(vit, 2, 1, True), features.hidden


@pytest.fixture(scope="module")
def app(face_encoder_dir):
    """insightface's FaceAnalysis on the antelopev2 fakes, as ConsisID's prepare_face_models builds it."""
    from insightface.app import FaceAnalysis

    folder, _ = face_encoder_dir
    app = FaceAnalysis(name=str(folder / "models" / "antelopev2"), providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=-1, det_size=(96, 96))
    return app


@pytest.fixture(scope="module")
def handler_ante(face_encoder_dir):
    """`insightface.model_zoo.get_model(.../glintr100.onnx)`: the reference's face_helper_2 / handler_ante."""
    import insightface

    folder, _ = face_encoder_dir
    handler = insightface.model_zoo.get_model(str(folder / "models" / "antelopev2" / "glintr100.onnx"),
                                              providers=["CPUExecutionProvider"])
    handler.prepare(ctx_id=-1)
    return handler


def largest_embedding(app, image_bgr):
    with warnings.catch_warnings():  # skimage's notice about the estimate() insightface's norm_crop calls
        warnings.simplefilter("ignore", FutureWarning)
        face_info = app.get(image_bgr)
    if not face_info:
        return None
    face_info = sorted(face_info, key=lambda x: (x["bbox"][2] - x["bbox"][0]) * (x["bbox"][3] - x["bbox"][1]))[-1]
    return face_info["embedding"]


def test_largest_face_ties_go_to_the_later_face():
    """ConsisID: sorted(face_info, key=area)[-1], so of two equal areas the later (lower-score) face."""
    box = np.array([0.0, 0.0, 20.0, 20.0])
    faces = [Face(box=box, landmarks=np.full((5, 2), 10.0), score=0.9),
             Face(box=box + 40, landmarks=np.full((5, 2), 50.0), score=0.8),
             Face(box=np.array([0.0, 0.0, 10.0, 10.0]), landmarks=np.full((5, 2), 5.0), score=0.95)]
    face, _ = select_face(faces, "p.png", (100, 100, 3), "insightface", 1.0)
    assert face is faces[1]


def test_arcface_alignment_id_cond_is_raw_insightface_then_unit_gray_clip(face_encoder_dir, insightface96, tiny_clip,
                                                                          app, tmp_path):
    """alignment arcface + insightface + id_vector raw: id_cond = [FaceAnalysis.get(...) largest face's raw
    `embedding` (512), CLIP CLS / ||CLS|| (32)], with the CLIP input grayed at the crop's resolution, then
    resized bicubic and normalised with the OpenAI statistics, unclamped.

    On the code before issue #16 the ArcFace part and the order already matched; the CLIP part did not
    (it resized first and clamped the bicubic overshoot to [0, 1]), which the sharp white marker on
    black exposes."""
    image = marker_image(96, 96, [(40, 40)])
    image[20:60, 70:74] = 255  # more sharp edges inside the crop (too thin to be a fake SCRFD face)
    path = tmp_path / "marker.png"
    Image.fromarray(image).save(path)
    conditioner = FaceConditioner(insightface96, tiny_clip, FaceSettings(backend="insightface", id_vector="raw",
                                                                         crop_size=112))
    result = conditioner([path], use_cache=False)
    image_bgr = cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2BGR)
    arc = torch.from_numpy(largest_embedding(app, image_bgr)).float()[None]  # [1, 512], raw
    crop = torch.from_numpy(result.crops).permute(0, 3, 1, 2).float() / 255.0  # the ArcFace crop, RGB
    clip, hidden = reference_clip(tiny_clip, luma(crop))
    assert result.id_cond.shape == (1, 512 + 32)
    torch.testing.assert_close(result.id_cond[:, :512], arc, atol=1e-4, rtol=1e-5)
    assert abs(float(arc.norm()) - 1.0) > 0.1  # raw, not normed_embedding
    torch.testing.assert_close(result.id_cond[:, 512:], clip, atol=1e-5, rtol=1e-5)
    for got, want in zip(result.id_vit_hidden, hidden):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def facexlib_crop(helper, image_bgr, only_center_face):
    helper.clean_all()
    helper.read_image(image_bgr)
    with torch.no_grad():
        helper.get_face_landmarks_5(only_center_face=only_center_face)
    helper.align_warp_face()
    return helper.cropped_faces[0]  # BGR [128, 128, 3]


def recipe_conditioner(recipe, analyzer, clip, facexlib):
    settings = FaceSettings(backend="insightface", **{**recipe, "crop_size": 128})
    return FaceConditioner(analyzer, clip, settings, facexlib)


@pytest.mark.parametrize("insightface_finds_a_face", [True, False])
def test_consisid_recipe(insightface_finds_a_face, insightface96, tiny_clip, facexlib_faces, face_helper, app,
                         handler_ante, tmp_path):
    """ConsisID: arc = the largest insightface face's raw embedding, else get_feat(facexlib crop); the crop
    parsed by BiSeNet; EVA input = where(background, white, to_gray(crop)); id_cond = [arc, unit CLS]."""
    photo = textured_photo(marker=(40, 40) if insightface_finds_a_face else None)
    path = tmp_path / "p.png"
    Image.fromarray(photo).save(path)
    result = recipe_conditioner(CONSISID_FACE_SETTINGS, insightface96, tiny_clip, facexlib_faces)([path],
                                                                                                  use_cache=False)
    image_bgr = cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2BGR)
    arc = largest_embedding(app, image_bgr)
    align_face = facexlib_crop(face_helper, image_bgr, only_center_face=True)
    assert (arc is None) == (not insightface_finds_a_face)
    if arc is None:
        arc = handler_ante.get_feat(align_face)  # "incase insightface didn't detect face"
    arc = torch.from_numpy(np.asarray(arc)).float().reshape(1, -1)
    crop = torch.from_numpy(cv2.cvtColor(align_face, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        parsing = face_helper.face_parse(normalize(crop, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))[0]
    parsing = parsing.argmax(dim=1, keepdim=True)
    bg = sum(parsing == i for i in BG_LABELS).bool()
    assert 0.02 < bg.float().mean() < 0.98
    clip, hidden = reference_clip(tiny_clip, torch.where(bg, torch.ones_like(crop), luma(crop)))
    torch.testing.assert_close(result.id_cond, torch.cat([arc, clip], dim=-1), atol=1e-4, rtol=1e-5)
    for got, want in zip(result.id_vit_hidden, hidden):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # canvas crop = return_face_features_image_2: the colour crop, background white
    expected = np.where(bg[0, 0].numpy()[..., None], 255, cv2.cvtColor(align_face, cv2.COLOR_BGR2RGB))
    np.testing.assert_array_equal(result.crops[0], expected)
    # the recognizer's face (the SCRFD marker) and the cropped face differ here, as they can in ConsisID: said
    assert any("embeds its largest face" in m for m in result.warnings) == insightface_finds_a_face


def test_ingredients_recipe(insightface96, tiny_clip, facexlib_faces, face_helper, handler_ante, tmp_path):
    """Ingredients: the first RetinaFace face's crop; arc = handler_ante.get_feat(crop) even though insightface
    sees a face; no parsing; colour EVA input."""
    photo = textured_photo(marker=(40, 40))
    path = tmp_path / "q.png"
    Image.fromarray(photo).save(path)
    result = recipe_conditioner(INGREDIENTS_FACE_SETTINGS, insightface96, tiny_clip, facexlib_faces)([path],
                                                                                                    use_cache=False)
    image_bgr = cv2.cvtColor(np.asarray(Image.open(path).convert("RGB")), cv2.COLOR_RGB2BGR)
    align_face = facexlib_crop(face_helper, image_bgr, only_center_face=False)
    arc = torch.from_numpy(np.asarray(handler_ante.get_feat(align_face))).float().reshape(1, -1)
    crop = torch.from_numpy(cv2.cvtColor(align_face, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255.0
    clip, _ = reference_clip(tiny_clip, crop)
    torch.testing.assert_close(result.id_cond, torch.cat([arc, clip], dim=-1), atol=1e-4, rtol=1e-5)
    np.testing.assert_array_equal(result.crops[0], cv2.cvtColor(align_face, cv2.COLOR_BGR2RGB))
