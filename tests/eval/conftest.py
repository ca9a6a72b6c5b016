"""Fixtures for the evaluation tests: real face photos shipped in installed packages, the dlib
backend, and small benchmark folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instruments.sample_benchmark import packaged_photos, write_sample_benchmark


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real single-person photos (see instruments.sample_benchmark): hanks, astronaut, grace, t1_a, t1_b."""
    return packaged_photos()


@pytest.fixture(scope="session")
def dlib_analyzer():
    from ingredients.faces.registry import build_analyzer

    return build_analyzer("dlib")


@pytest.fixture(scope="session")
def make_benchmark():
    """Factory: make_benchmark(root, {case_id: (photo name, ...)}) -> root/bench.jsonl."""
    return lambda root, pairs, seed=0: write_sample_benchmark(Path(root), pairs, seed)
