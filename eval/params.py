"""Evaluation parameters: the `eval:` section of params.yaml.

Every field has an offline default, so `python -m eval.run` without --params evaluates with the
dlib face backend, Farneback flow and no CLIP model (clip_score reported missing). Validated through
`ingredients.config.validate_model`, so errors name the key, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ingredients.config import ParamsError, load_params, section, validate_model

DEFAULT_METRICS = (
    "face_sim", "face_sim_max", "face_sim_opens2v", "copy_paste", "face_found", "id_confusion", "clip_score", "fid_face", "kid_face",
    "dynamic_degree", "flow_magnitude", "flicker", "routing_acc", "routing_consistency",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClipParams(_Frozen):
    """open_clip model for clip_score: a model name (or a model config JSON) and a local weights file.

    model: an open_clip model name (e.g. 'ViT-B-32'); config: optional path to an open_clip model
    config JSON registered under `model` (for models open_clip does not ship); weights: a
    .safetensors file or a torch state dict (loaded with weights_only=True).
    """

    model: str | None = None
    config: str | None = None
    weights: str | None = None
    batch_size: int = Field(16, ge=1)


class FlowParams(_Frozen):
    """Optical flow for dynamic_degree / flow_magnitude: 'farneback' (OpenCV) or 'raft'
    (torchvision raft_large/raft_small, needs `raft_weights`, a local state-dict file)."""

    method: Literal["farneback", "raft"] = "farneback"
    raft_model: str = "raft_small"
    raft_weights: str | None = None


class EvalParams(_Frozen):
    """All evaluation settings.

    face_backends: recognizer backends (ingredients.faces.registry names); each gives its own
    face_sim/R etc. face_backend_options: keyword arguments per backend for build_analyzer.
    max_frames: read at most this many frames per video (None: all). face_frame_stride: run face
    metrics on every n-th frame. fid_min_samples_factor: fid_face needs at least this many x D
    crops (D = embedding size) on each side. kid_min_samples: kid_face needs at least this many
    samples on each side (2: the unbiased estimator's minimum).
    """

    face_backends: tuple[str, ...] = ("dlib",)
    face_backend_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    max_frames: int | None = Field(None, ge=2)
    face_frame_stride: int = Field(1, ge=1)
    fid_min_samples_factor: float = Field(2.0, ge=1)
    kid_min_samples: int = Field(2, ge=2)
    clip: ClipParams = ClipParams()
    flow: FlowParams = FlowParams()

    @field_validator("face_backends", "metrics", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"expected a list of names, e.g. [{value}]")
        return value

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate names in {list(value)}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return self.model_dump(mode="json")


def params_from_dict(data: Mapping[str, Any] | None, where: str = "eval") -> EvalParams:
    """Validate a mapping of evaluation parameters (ParamsError naming the key)."""
    return validate_model(EvalParams, data, where)


def eval_params(path: str | None) -> EvalParams:
    """The `eval:` section of a params file (defaults when `path` is None)."""
    if path is None:
        return EvalParams()
    return params_from_dict(section(load_params(path), "eval", path, required=True))


__all__ = ["DEFAULT_METRICS", "ClipParams", "EvalParams", "FlowParams", "ParamsError", "eval_params", "params_from_dict"]
