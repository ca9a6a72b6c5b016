"""The full-size model built for loading has exactly the released checkpoint's parameter set."""

from __future__ import annotations

import json

import pytest
import torch

from ingredients.models import IngredientsTransformer3DModel, config_from_reference


@pytest.mark.parametrize("interval", [1, 2])
def test_full_size_parameter_set_matches_manifest(parity_dir, interval):
    manifest = json.loads((parity_dir / "official_checkpoint_manifest.json").read_text())[f"cross_attn_interval={interval}"]
    with torch.device("meta"):
        model = IngredientsTransformer3DModel(**config_from_reference(manifest["config"]))
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    expected = {name: list(shape) for name, shape in manifest["params"].items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert ours == expected
    assert sum(t.numel() for t in model.state_dict().values()) == manifest["num_params"]
    assert len(model.perceiver_cross_attention) == len(model.router) == 42 // interval
