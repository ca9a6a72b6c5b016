"""Fixtures for the data tests: a 4-video tiny raw set and its curation, shared by the session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingredients.data.curate import curate
from ingredients.data.curation_params import CurationParams
from ingredients.data.synth import synthesize

# the first four recipes: clean videos with 1, 2 and 3 identities, two of them with a mid-clip cut
TINY_INDICES = [0, 1, 2, 3]
SEED = 0


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "raw"
    synthesize(root, seed=SEED, indices=TINY_INDICES)
    return root


@pytest.fixture(scope="session")
def tiny_curated(tiny_raw) -> tuple[Path, dict]:
    """(output folder, report) of an uninterrupted in-process curation of `tiny_raw`."""
    out = tiny_raw.parent / "curated"
    report = curate(tiny_raw, out, CurationParams())
    return out, report


@pytest.fixture(scope="session")
def dlib_analyzer():
    from ingredients.faces.registry import build_analyzer

    return build_analyzer("dlib", upsample=1)


def load_gt(raw: Path, stem: str) -> dict:
    return json.loads((raw / f"{stem}.gt.json").read_text())
