"""Fixtures for the evaluation tests: real face photos shipped in installed packages, the dlib
backend, and small benchmark folders."""

from __future__ import annotations

from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
from PIL import Image

from eval.benchmark import Case, write_benchmark


def _insightface_image(name: str) -> np.ndarray:
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / name
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real single-person photos: Tom Hanks, the astronaut (Eileen Collins; cropped to her head, the
    full picture has a second, false HOG detection on the suit), Grace Hopper, and two people
    cut from insightface's group photo t1.jpg."""
    t1 = _insightface_image("t1.jpg")
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = np.asarray(Image.open(f).convert("RGB"))
    return {
        "hanks": _insightface_image("Tom_Hanks_54745.png"),
        "astronaut": np.ascontiguousarray(skimage.data.astronaut()[0:300, 100:350]),
        "grace": grace,
        "t1_a": np.ascontiguousarray(t1[180:500, 0:250]),
        "t1_b": np.ascontiguousarray(t1[250:570, 620:940]),
    }


@pytest.fixture(scope="session")
def dlib_analyzer():
    from ingredients.faces.registry import build_analyzer

    return build_analyzer("dlib")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory, photos) -> Path:
    """The photos saved as PNG files."""
    root = tmp_path_factory.mktemp("photos")
    for name, img in photos.items():
        Image.fromarray(img).save(root / f"{name}.png")
    return root


@pytest.fixture(scope="session")
def make_benchmark(photo_dir):
    """Factory: make_benchmark(root, {case_id: (photo name, ...)}) -> benchmark path."""
    return lambda root, pairs, seed=0: _make_benchmark(root, photo_dir, pairs, seed)


def _make_benchmark(root: Path, photo_dir: Path, pairs: dict[str, tuple[str, ...]], seed: int = 0) -> Path:
    """A benchmark under root/ with images copied to root/refs/, one case per entry of `pairs`."""
    refs = root / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    cases = []
    for i, (case_id, names) in enumerate(pairs.items()):
        paths = []
        for n in names:
            dst = refs / f"{n}.png"
            if not dst.exists():
                dst.write_bytes((photo_dir / f"{n}.png").read_bytes())
            paths.append(dst.resolve())
        cases.append(Case(case_id=case_id, prompt=f"two people talking, case {i}", references=tuple(paths), seed=seed + i))
    return write_benchmark(root / "bench.jsonl", cases)
