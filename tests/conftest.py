"""Shared test fixtures: the reference-parity folder and small helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`shared/` beside the checkout (or $INGREDIENTS_SHARED)."""
    path = Path(os.environ.get("INGREDIENTS_SHARED", REPO_ROOT.parent / "shared"))
    if not (path / "fixtures").is_dir():
        raise FileNotFoundError(f"test fixtures not found at {path}/fixtures; set INGREDIENTS_SHARED to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return shared_dir() / "fixtures" / "reference_parity"


@pytest.fixture(scope="session")
def parity_config(parity_dir) -> dict:
    return json.loads((parity_dir / "config.json").read_text())


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
