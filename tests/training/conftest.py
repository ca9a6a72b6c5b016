"""Fixtures for the training tests: a tiny curated manifest and a smaller-than-tiny model folder.

The manifest is the data package's own pipeline on four synthesised videos (2 single-identity clips,
3 with two identities, 1 with three): tests/conftest.py's `tiny_curated`, shared with the data tests. The model is the tiny profile shrunk further: 2
transformer layers, a 2-layer projector, 64 x 64 video of 5 frames (2 latent frames).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMALL_MODEL = {"num_layers": 2, "sample_height": 8, "sample_width": 8, "sample_frames": 5}
REPO_ROOT = Path(__file__).resolve().parents[2]

# the params every training test starts from (steps and lr chosen per test)
BASE_TRAIN_PARAMS = {
    "common": {
        "seed": 0,
        "log_mlflow": False,
        "max_grad_norm": 1.0,
        "precompute": {"enabled": True},
        # on by default in params; costs a VAE pass per sample per step (about 1 s on 2 busy cores), so
        # the tests that check it or exact reproducibility turn it on (image noise, resume, DDP)
        "image_noise": {"enabled": False},
        "validation": {"num_clips": 2, "inference_steps": 0, "timesteps": [200, 500, 800]},
    },
    "stage1": {
        "steps": 10,
        "lr": 2e-3,
        "batch_size": 2,
        "train": {"projector": True, "injectors": True, "routers": False, "backbone": "frozen"},
        "identities": {"min": 1, "max": 1},
    },
    "stage2": {
        "steps": 10,
        "lr": 2e-3,
        "batch_size": 2,
        "init_from": "stage1",
        "train": {"projector": True, "injectors": True, "routers": True, "backbone": "frozen"},
        "identities": {"min": 2, "max": 3},
        "routing": {"weight": 1.0, "kind": "ce"},
    },
}


def train_params(**stage_overrides) -> dict:
    """A deep copy of BASE_TRAIN_PARAMS with `stage1={...}` / `common={...}` merged in (one level deep)."""
    params = copy.deepcopy(BASE_TRAIN_PARAMS)
    for section, values in stage_overrides.items():
        params.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(params[section].get(key), dict):
                params[section][key] = {**params[section][key], **value}
            else:
                params[section][key] = value
    return params


@pytest.fixture(scope="session")
def tiny_manifest(tiny_curated) -> Path:
    """The manifest of tests/conftest.py's `tiny_curated` (the same four videos and curation the data
    tests check; it was built a second time here before)."""
    return tiny_curated[0] / "manifest.jsonl"


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    from ingredients.model_folder.folder import prepare_tiny_folder

    return prepare_tiny_folder(tmp_path_factory.mktemp("small_model") / "model", seed=0, **SMALL_MODEL)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; reset accelerate's process-wide singletons."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def run_cli(args: list[str], env_extra: dict | None = None, timeout: float = 600, launcher: list[str] | None = None,
            **popen_kwargs):
    """Start the training CLI in a subprocess (single thread, so runs are bit-reproducible)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           **(env_extra or {})}
    cmd = (launcher or [sys.executable]) + ["-m", "ingredients.training.train", *args]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen_kwargs)
