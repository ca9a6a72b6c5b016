"""Fixtures for the data tests. The 4-video tiny raw set and its curation (`tiny_raw`, `tiny_curated`)
are session fixtures of tests/conftest.py, shared with the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dlib_analyzer():
    from ingredients.faces.registry import build_analyzer

    return build_analyzer("dlib", upsample=1)


def load_gt(raw: Path, stem: str) -> dict:
    return json.loads((raw / f"{stem}.gt.json").read_text())
