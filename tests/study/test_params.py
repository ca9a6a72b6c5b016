"""Every params file validates against the schema; bad keys and types are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from study.params import validate_params
from ingredients.config import ParamsError, apply_overrides, deep_merge, flatten, load_params

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = sorted((ROOT / "experiments").glob("*.yaml")) + [ROOT / "profiles" / "full.yaml", ROOT / "profiles" / "small.yaml"]


def test_params_yaml_is_valid():
    typed = validate_params(load_params(ROOT / "params.yaml"))
    assert typed["prepare"].profile == "tiny" and set(typed["train"]) == {"stage1", "stage2"}


@pytest.mark.parametrize("path", OVERRIDES, ids=lambda p: p.name)
def test_every_override_file_validates_and_changes_something(path):
    base = load_params(ROOT / "params.yaml")
    override = load_params(path)
    merged = deep_merge(base, override)
    validate_params(merged)
    assert merged != base
    # the -S form DVC receives gives the same params as merging the file
    assert apply_overrides(base, flatten(override)) == merged


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"sample": {"stepz": 3}}, r"sample\.stepz: unknown key; allowed keys here: .*fps, .*guidance_scale"),
        ({"sample": {"steps": "many"}}, r"sample\.steps: Input should be a valid integer"),
        ({"prepare": {"profile": "huge"}}, r"prepare\.profile: Input should be 'tiny' or 'full'"),
        ({"sample": {"methods": ["ours", "magic"]}}, r"unknown \['magic'\]; allowed"),
        ({"train": {"stage2": {"routing": {"kind": "l1"}}}}, r"train\.stage2\.routing\.kind"),
        ({"curate": {"masker": "paint"}}, r"curate\.masker"),
        ({"nonsense": {}}, r"unknown params section\(s\) \['nonsense'\]"),
        # the rules the stages apply, applied before any stage runs
        ({"prepare": {"transformer": {"cross_atn_interval": 2}}},
         r"prepare\.transformer\.cross_atn_interval: unknown key; allowed keys here: .*cross_attn_interval"),
        ({"prepare": {"profile": "full"}, "faces": {"backend": "insightface", "model_dir": "elsewhere/antelopev2"}},
         r"faces\.model_dir: 'elsewhere/antelopev2' differs from prepare\.full\.antelopev2"),
    ],
)
def test_bad_params_name_the_key(override, message):
    with pytest.raises(ParamsError, match=message):
        validate_params(deep_merge(load_params(ROOT / "params.yaml"), override))


def test_yaml_files_parse_as_mappings():
    for path in OVERRIDES:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
