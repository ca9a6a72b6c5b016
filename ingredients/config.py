"""params.yaml: loading, merging override files, and validating every section against its schema.

params.yaml is the single home of hyperparameters (the tiny profile); `profiles/full.yaml` and the
ablations in `experiments/` are override files merged on top. Each top-level section belongs to one
stage and is validated by that stage's typed config, so an unknown key or a wrong type is reported
with its full name (`train.stage2.routing.weight`) and the allowed values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ParamsError(ValueError):
    """An invalid params file; the message names the key."""


class TrackingParams(BaseModel):
    """MLflow: `uri` null = the repository's SQLite store; `fallback_to_local` when a server is down."""

    model_config = ConfigDict(extra="forbid")
    uri: str | None = None
    experiment: str = "ingredients"
    fallback_to_local: bool = False


class FullFolders(BaseModel):
    """Where the full profile's weights live (see README, 'Full profile')."""

    model_config = ConfigDict(extra="forbid")
    backbone: str = "weights/CogVideoX-5b-I2V"   # or a CogVideoX-5b (text-to-video) folder with backbone_init t2v
    ingredients: str | None = None
    antelopev2: str = "weights/face_encoder/models/antelopev2"
    eva_clip: str = "weights/face_encoder/EVA02_CLIP_L_336_psz14_s6B.pt"
    curricularface: str = "weights/curricularface/glint360k_curricular_face_r101_backbone.bin"
    clip_score: str = "weights/open_clip/ViT-L-14/open_clip_pytorch_model.bin"


class PrepareParams(BaseModel):
    """Model preparation: `tiny` builds and saves the toy model (and fits its VAE briefly on the tiny
    clips); `full` checks the local weight folders and assembles the model folder."""

    model_config = ConfigDict(extra="forbid")
    profile: Literal["tiny", "full"] = "tiny"
    seed: int = 0
    # i2v: the image-to-video backbone as it is; t2v: a text-to-video backbone whose image-condition
    # input channels start at zero (the paper's text-to-video initialisation ablation)
    backbone_init: Literal["i2v", "t2v"] = "i2v"
    # IngredientsTransformer3DModel config keys replacing the profile's (e.g. cross_attn_interval)
    transformer: dict[str, Any] = Field(default_factory=dict)
    vae_fit_steps: int = Field(40, ge=0)
    vae_fit_lr: float = Field(2e-3, gt=0)
    vae_fit_videos: int = Field(6, ge=1)
    full: FullFolders = Field(default_factory=FullFolders)


class SynthParams(BaseModel):
    """Tiny raw-data synthesis."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    num_videos: int = Field(14, ge=1)
    num_heldout: int = Field(3, ge=0)
    num_heldout_videos: int = Field(0, ge=0)


class BenchmarkParams(BaseModel):
    """The tiny benchmark built from held-out identities: one case per identity subset x prompt."""

    model_config = ConfigDict(extra="forbid")
    prompts: list[str] = Field(default_factory=lambda: ["people talking to each other in a bright room"], min_length=1)
    max_identities: int = Field(2, ge=1)
    seed: int = 0


def _pydantic(cls: type[BaseModel]) -> Callable[[Mapping[str, Any], str], Any]:
    def validate(data: Mapping[str, Any], where: str) -> Any:
        try:
            return cls(**(data or {}))
        except ValidationError as err:
            lines = []
            for e in err.errors():
                key = ".".join(str(p) for p in e["loc"])
                lines.append(f"{where}.{key}: {e['msg']} (got {e.get('input')!r})")
            raise ParamsError("invalid params:\n  " + "\n  ".join(lines)) from None
        except ValueError as err:  # model_post_init checks
            raise ParamsError(f"{where}: {err}") from None

    return validate


def _wrap(fn: Callable[..., Any]) -> Callable[[Mapping[str, Any], str], Any]:
    def validate(data: Mapping[str, Any], where: str) -> Any:
        try:
            return fn(data, where)
        except ParamsError:
            raise
        except (ValueError, TypeError, KeyError) as err:
            raise ParamsError(f"{where}: {err}") from None

    return validate


def _faces(data: Mapping[str, Any], where: str) -> Any:
    from .faces.reference import FaceSettings

    return FaceSettings.from_dict(data or {})


def _curate(data: Mapping[str, Any], where: str) -> Any:
    from .data.curation_params import params_from_mapping

    return params_from_mapping(dict(data or {}), where)


def _train(data: Mapping[str, Any], where: str) -> Any:
    from .training.stage_spec import build_stage_spec

    stages = [name for name in (data or {}) if name != "common"]
    return {name: build_stage_spec(dict(data), name) for name in stages}


def _sample(data: Mapping[str, Any], where: str) -> Any:
    from .sample import SampleParams

    return _pydantic(SampleParams)(data, where)


def _eval(data: Mapping[str, Any], where: str) -> Any:
    from eval.params import params_from_dict

    return params_from_dict(dict(data or {}), where)


SECTIONS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "tracking": _pydantic(TrackingParams),
    "prepare": _pydantic(PrepareParams),
    "synth": _pydantic(SynthParams),
    "benchmark": _pydantic(BenchmarkParams),
    "faces": _wrap(_faces),
    "curate": _wrap(_curate),
    "train": _wrap(_train),
    "sample": _wrap(_sample),
    "eval": _wrap(_eval),
}


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file (a mapping of sections)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def section(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One section as a dict (empty when absent)."""
    if name not in SECTIONS:
        raise ParamsError(f"unknown params section {name!r}; sections: {sorted(SECTIONS)}")
    value = params.get(name) or {}
    if not isinstance(value, Mapping):
        raise ParamsError(f"{name}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, mappings merged key by key, everything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply `-S`-style dotted overrides ({"train.stage2.routing.weight": 0}) or nested ones."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return deep_merge(params, nested)


def stage_params(params: Mapping[str, Any], name: str) -> Any:
    """One section, validated into its typed config (errors name the key)."""
    return SECTIONS[name](section(params, name), name)


def validate_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate every section; returns {section: typed config}. Unknown sections are errors."""
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"unknown params section(s) {unknown}; allowed: {sorted(SECTIONS)}")
    return {name: SECTIONS[name](section(params, name), name) for name in params}


def main(argv: list[str] | None = None) -> None:
    """`python -m ingredients.config params.yaml [override.yaml ...]`: validate, print the merged params."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m ingredients.config", description=main.__doc__)
    parser.add_argument("params", type=Path)
    parser.add_argument("overrides", type=Path, nargs="*")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    for path in args.overrides:
        params = deep_merge(params, load_params(path))
    validate_params(params)
    print(json.dumps(params, indent=2, default=str))  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
