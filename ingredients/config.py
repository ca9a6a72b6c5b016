"""params.yaml: the one loader, override merging, and the one error style for every section's schema.

params.yaml is the single home of hyperparameters (the tiny profile); `profiles/full.yaml` and the
ablations in `experiments/` are override files merged on top. Each top-level section belongs to one
stage and has one typed schema, kept beside the stage that reads it (`TrackingParams` in
`ingredients.mlflow_run`, `SynthParams` in `ingredients.data.synth`, `PrepareParams` in
`ingredients.model_folder.prepare`, `FaceSettings` in `ingredients.faces.reference`,
`CurationParams` in `ingredients.data.curation_params`, the `train` stages in
`ingredients.training.stage_spec`, `SampleParams` in `ingredients.sampling.sample`, `EvalParams` in
`eval.params`, `BenchmarkParams` in `eval.build_benchmark`). A stage validates only its own sections;
`study.params` validates them all. Every error is a `ParamsError` naming the full key
(`train.stage2.routing.weight`), the value and the allowed values.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

M = TypeVar("M", bound=BaseModel)


class ParamsError(ValueError):
    """An invalid params file or section; the message names the key, the value and what is allowed."""


def parse_yaml(text: str) -> Any:
    """YAML 1.2, as DVC reads and writes params files (`dvc exp run -S` rewrites params.yaml with
    ruamel): `mixed_precision: no` is the string 'no' here as there, never YAML 1.1's boolean false."""
    return YAML(typ="safe", pure=True).load(text)  # pure: ruamel's C loader is YAML 1.1


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file (a mapping of sections), as YAML 1.2 (see `parse_yaml`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def load_merged(path: str | Path, overrides: tuple[str | Path, ...] = ()) -> dict[str, Any]:
    """A params file with override files merged on top, in order."""
    params = load_params(path)
    for override in overrides:
        params = deep_merge(params, load_params(override))
    return params


def section(params: Mapping[str, Any], name: str, where: str | Path = "params", required: bool = False) -> dict[str, Any]:
    """One section as a dict (empty when absent, unless `required`); a non-mapping is an error."""
    if required and name not in params:
        raise ParamsError(f"{where} has no `{name}:` section; add one (it may be empty: `{name}: {{}}`)")
    value = params.get(name) or {}
    if not isinstance(value, Mapping):
        raise ParamsError(f"{where}: `{name}` must be a mapping of settings, got {type(value).__name__}")
    return dict(value)


def validate_model(cls: type[M], data: Mapping[str, Any] | None, where: str) -> M:
    """`data` validated into the pydantic schema `cls`; errors name each key as `where.key`."""
    if data is not None and not isinstance(data, Mapping):
        raise ParamsError(f"{where}: expected a mapping, got {type(data).__name__}")
    try:
        return cls(**dict(data or {}))
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, where, cls)) from None
    except ValueError as err:  # model_post_init checks
        raise ParamsError(f"{where}: {err}") from None


def load_section(path: str | Path, name: str, cls: type[M], required: bool = False) -> M:
    """Section `name` of the params file at `path`, validated into `cls` (errors name `name.key`)."""
    return validate_model(cls, section(load_params(path), name, path, required=required), name)


def _model_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class holding the field at `loc` (to list its allowed keys)."""
    model = cls
    for part in loc[:-1]:
        annotation = getattr(model.model_fields.get(str(part)), "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def format_validation_error(err: ValidationError, where: str, cls: type[BaseModel] | None = None) -> str:
    """One line per bad key: `where.key: message (got value)`; an unknown key lists the allowed ones."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        name = ".".join([where, *map(str, loc)])
        if e["type"] == "extra_forbidden":
            model = _model_at(cls, loc) if cls is not None else None
            allowed = f"; allowed keys here: {', '.join(sorted(model.model_fields))}" if model is not None else ""
            lines.append(f"{name}: unknown key{allowed}")
        elif e["type"] == "missing":
            lines.append(f"{name}: required key is missing")
        else:
            lines.append(f"{name}: {e['msg']} (got {e.get('input')!r})")
    return "invalid params:\n  " + "\n  ".join(lines)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, mappings merged key by key, everything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"stage2": {"routing": {"weight": 0}}}} -> {"train.stage2.routing.weight": 0}.

    Leaves keep their values; an empty mapping is a leaf ({}), so flattening loses nothing.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
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


def param_text(value: Any) -> str:
    """A parameter value as text (MLflow params): JSON for lists and mappings, str otherwise."""
    return json.dumps(value) if isinstance(value, (list, tuple, Mapping)) else str(value)


def stage_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of a stage module (`python -m MODULE`): its docstring as help, and `--params`
    (the params file whose sections the stage reads)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    return parser
