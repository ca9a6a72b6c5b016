"""Evaluation parameters: the `eval:` section of params.yaml (or a file holding only that section).

Every field has an offline default, so `python -m eval.run` without --params evaluates with the
dlib face backend, Farneback flow and no CLIP model (clip_score reported missing).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_METRICS = (
    "face_sim", "face_sim_max", "face_found", "id_confusion", "clip_score", "fid_face",
    "dynamic_degree", "flow_magnitude", "flicker", "routing_acc",
)


class ParamsError(ValueError):
    """An invalid evaluation parameter; the message names the key."""


@dataclass(frozen=True)
class ClipParams:
    """open_clip model for clip_score: a model name (or a model config JSON) and a local weights file.

    model: an open_clip model name (e.g. 'ViT-B-32'); config: optional path to an open_clip model
    config JSON registered under `model` (for models open_clip does not ship); weights: a
    .safetensors file or a torch state dict (loaded with weights_only=True).
    """

    model: str | None = None
    config: str | None = None
    weights: str | None = None
    batch_size: int = 16


@dataclass(frozen=True)
class FlowParams:
    """Optical flow for dynamic_degree / flow_magnitude: 'farneback' (OpenCV) or 'raft'
    (torchvision raft_large/raft_small, needs `raft_weights`, a local state-dict file)."""

    method: str = "farneback"
    raft_model: str = "raft_small"
    raft_weights: str | None = None


@dataclass(frozen=True)
class EvalParams:
    """All evaluation settings.

    face_backends: recognizer backends (ingredients.faces.registry names); each gives its own
    face_sim/R etc. face_backend_options: keyword arguments per backend for build_analyzer.
    max_frames: read at most this many frames per video (None: all). face_frame_stride: run face
    metrics on every n-th frame. fid_min_samples_factor: fid_face needs at least this many x D
    crops (D = embedding size) on each side.
    """

    face_backends: tuple[str, ...] = ("dlib",)
    face_backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    max_frames: int | None = None
    face_frame_stride: int = 1
    fid_min_samples_factor: float = 2.0
    clip: ClipParams = ClipParams()
    flow: FlowParams = FlowParams()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}"
        if name == "clip":
            value = _build(ClipParams, value, key)
        elif name == "flow":
            value = _build(FlowParams, value, key)
        elif name in ("face_backends", "metrics"):
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ParamsError(f"{key}: expected a list of names, got {value!r}")
            value = tuple(value)
        elif name == "face_backend_options":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise ParamsError(f"{key}: expected {{backend: {{option: value}}}}, got {value!r}")
        kwargs[name] = value
    params = cls(**kwargs)
    _check(params, where)
    return params


def _check(params: Any, where: str) -> None:
    if isinstance(params, EvalParams):
        if params.max_frames is not None and (not isinstance(params.max_frames, int) or params.max_frames < 2):
            raise ParamsError(f"{where}.max_frames: expected null or an integer >= 2, got {params.max_frames!r}")
        if not isinstance(params.face_frame_stride, int) or params.face_frame_stride < 1:
            raise ParamsError(f"{where}.face_frame_stride: expected an integer >= 1, got {params.face_frame_stride!r}")
        if not isinstance(params.fid_min_samples_factor, (int, float)) or params.fid_min_samples_factor < 1:
            raise ParamsError(f"{where}.fid_min_samples_factor: expected a number >= 1, got {params.fid_min_samples_factor!r}")
        if len(set(params.metrics)) != len(params.metrics):
            raise ParamsError(f"{where}.metrics: duplicate names in {list(params.metrics)}")
    if isinstance(params, FlowParams) and params.method not in ("farneback", "raft"):
        raise ParamsError(f"{where}.method: expected 'farneback' or 'raft', got {params.method!r}")
    if isinstance(params, ClipParams) and (not isinstance(params.batch_size, int) or params.batch_size < 1):
        raise ParamsError(f"{where}.batch_size: expected a positive integer, got {params.batch_size!r}")


def params_from_dict(data: dict | None, where: str = "eval") -> EvalParams:
    """Validate a mapping of evaluation parameters."""
    return _build(EvalParams, data, where)


def load_params(path: str | os.PathLike | None) -> EvalParams:
    """Read EvalParams from a YAML file's `eval:` section (or the whole file if it has none)."""
    if path is None:
        return EvalParams()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    if "eval" in data:
        return params_from_dict(data["eval"], f"{path}:eval")
    return params_from_dict(data, str(path))
