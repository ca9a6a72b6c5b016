"""Fixtures for the evaluation tests: real face photos shipped in installed packages, the dlib
backend, and small benchmark folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingredients.data.packaged_photos import load_photos
from instruments.photo_cases import write_photo_cases


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real single-person photos (ingredients.data.packaged_photos.PORTRAITS): hanks, astronaut, grace, t1_a, t1_b."""
    return load_photos()


@pytest.fixture(scope="session")
def dlib_analyzer():
    from ingredients.faces.registry import build_analyzer

    return build_analyzer("dlib")


@pytest.fixture(scope="session")
def make_benchmark():
    """Factory: make_benchmark(root, {case_id: (photo name, ...)}) -> root/bench.jsonl."""
    return lambda root, pairs, seed=0: write_photo_cases(Path(root), pairs, seed)
