"""Face-stack speed: reference processing per photo, dlib detection + embedding per video frame.

In the default suite (--benchmark-disable) each runs once as a smoke test. Measure with
`.venv/bin/python -m pytest tests/instruments/speed/test_faces_speed.py --benchmark-enable`; the
per-frame benchmarks also store frames per second in extra_info (`--benchmark-json` shows it).
"""

from __future__ import annotations

import itertools
import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from ingredients.data.packaged_photos import load_photo
from tests.faces.conftest import GROUP_BOXES, carphone_frames

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def dlib_by_upsample():
    from ingredients.faces.dlib_backend import DlibFaceAnalyzer

    return {0: DlibFaceAnalyzer(upsample=0), 1: DlibFaceAnalyzer(upsample=1)}


@pytest.fixture(scope="module")
def frames():
    return carphone_frames()


@pytest.fixture(scope="module")
def reference_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_photos")
    paths = [folder / "grace_hopper.png"]
    Image.fromarray(load_photo("grace")).save(paths[0])
    group = load_photo("t1")
    for i, (x0, y0, x1, y1) in enumerate(GROUP_BOXES[:3]):
        m = int(0.6 * (x1 - x0))
        paths.append(folder / f"person_{i}.png")
        Image.fromarray(group[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m]).save(paths[-1])
    return paths


def test_reference_processing_per_photo(benchmark, dlib_by_upsample, reference_photos):
    """One photo -> crop, id_cond, 5 ViT scales, canvas (dlib upsample 1 + tiny CLIP, no cache)."""
    from ingredients.faces.eva_clip import build_tiny_clip
    from ingredients.faces.reference import FaceConditioner, FaceSettings, process_references

    logging.getLogger("ingredients.faces.eva_clip").setLevel(logging.ERROR)
    conditioner = FaceConditioner(dlib_by_upsample[1], build_tiny_clip(0), FaceSettings(crop_size=112))
    photos = itertools.cycle(reference_photos)

    def setup():
        return ([next(photos)], conditioner), {"use_cache": False}

    result = benchmark.pedantic(process_references, setup=setup, rounds=8, warmup_rounds=1)
    assert result.id_cond.shape == (1, 160)
    benchmark.extra_info["photos_per_second"] = _rate(benchmark)


@pytest.mark.parametrize("upsample", [0, 1])
@pytest.mark.parametrize("height,width", [(256, 256), (480, 720)])
def test_dlib_detect_and_embed_per_frame(benchmark, dlib_by_upsample, frames, height, width, upsample):
    """Per video frame: HOG detection + an embedding for every face (the carphone clip, resized)."""
    analyzer = dlib_by_upsample[upsample]
    resized = [np.ascontiguousarray(cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR))
               for f in frames[::10]]
    cycle = itertools.cycle(resized)

    def per_frame(frame):
        faces = analyzer.detect(frame)
        return [analyzer.embed_face(frame, face) for face in faces]

    def setup():
        return (next(cycle),), {}

    vectors = benchmark.pedantic(per_frame, setup=setup, rounds=12, warmup_rounds=1)
    assert len(vectors) == 1 and vectors[0].shape == (128,)
    benchmark.extra_info["frames_per_second"] = _rate(benchmark)


def _rate(benchmark) -> float | None:
    """Items per second from the benchmark's mean time (None when benchmarks are disabled)."""
    stats = getattr(benchmark, "stats", None)
    if not stats:
        return None
    return 1.0 / stats.stats.mean
