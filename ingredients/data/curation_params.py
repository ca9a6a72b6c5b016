"""Typed, validated settings of data curation (the `curate` section of params.yaml)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class CurationParams(BaseModel):
    """Every knob of `ingredients.data.curate`, with the tiny profile's defaults.

    Unknown keys are errors (a typo must not silently fall back to a default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # face backend (ingredients.faces.registry) and its constructor options
    analyzer: str = "dlib"
    analyzer_options: dict[str, Any] = Field(default_factory=lambda: {"upsample": 1})
    # shot splitting with PySceneDetect
    shot_detector: Literal["content", "adaptive"] = "content"
    shot_threshold: float = Field(27.0, gt=0, description="ContentDetector threshold (content detector)")
    adaptive_threshold: float = Field(3.0, gt=0, description="AdaptiveDetector threshold (adaptive detector)")
    min_scene_frames: int = Field(3, ge=1, description="shortest shot PySceneDetect may cut")
    # detection and tracking
    detect_stride: int = Field(1, ge=1, description="detect faces every N-th frame; boxes in between are interpolated")
    track_iou: float = Field(0.3, gt=0, le=1, description="IoU at which a detection continues a track")
    track_center_factor: float = Field(0.5, gt=0, description="or: centre distance below this x face size")
    track_max_gap: int = Field(2, ge=0, description="detection steps a track survives without a match")
    min_track_detections: int = Field(2, ge=1, description="shorter tracks are discarded as detector noise")
    embed_samples_per_track: int = Field(3, ge=1, description="faces embedded per track for clustering")
    cluster_threshold: float | None = Field(None, ge=-1.0, le=1.0, description="cosine for merging tracks; None = the backend's verification threshold")
    # clip filters
    min_face_size: float = Field(60.0, ge=0, description="drop clips where an identity's median face size (px) is below")
    min_visible_fraction: float = Field(0.5, ge=0, le=1, description="drop clips where an identity is visible in fewer of the frames")
    max_identities: int = Field(3, ge=1)
    min_clip_frames: int = Field(8, ge=1)
    # reference crops
    reference_size: int = Field(256, ge=32, description="side of the saved square reference crop")
    reference_margin: float = Field(1.8, ge=1.0, description="crop side / face box side")
    reference_outside_clip: bool = Field(True, description="prefer a reference frame outside the training clip")
    # plug-ins
    masker: Literal["box", "landmarks"] = "box"
    captioner: Literal["sidecar"] = "sidecar"
    # execution and outputs
    num_workers: int = Field(1, ge=1, description="process pool size over videos; 1 = in-process")
    contact_sheet_clips: int = Field(8, ge=0)
    contact_sheet_frames: int = Field(4, ge=1)

    def fingerprint(self) -> str:
        """Hash of the settings that change per-video results (resumed runs must match it)."""
        keys = {k: v for k, v in self.model_dump().items() if k not in ("num_workers", "contact_sheet_clips", "contact_sheet_frames")}
        return hashlib.sha1(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _format_errors(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(section)"
        value = e.get("input")
        lines.append(f"{where}.{key}: {e['msg']} (got {value!r})")
    return "invalid curation settings:\n  " + "\n  ".join(lines)


def params_from_mapping(mapping: dict[str, Any] | None, where: str = "curate") -> CurationParams:
    """Validate a dict of settings; errors name each bad key as `where.key` with the value."""
    try:
        return CurationParams(**(mapping or {}))
    except ValidationError as err:
        raise ValueError(_format_errors(err, where)) from None


def load_curation_params(path: str | os.PathLike | None, section: str = "curate") -> CurationParams:
    """Settings from `section` of a YAML params file; None -> defaults.

    A given file must exist and have the section (it may be empty), so a wrong path or section
    name fails loudly instead of curating with defaults.
    """
    if path is None:
        return CurationParams()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict) or section not in data:
        raise KeyError(f"{path} has no `{section}:` section; add one (it may be empty: `{section}: {{}}`)")
    section_data = data[section]
    if section_data is not None and not isinstance(section_data, dict):
        raise ValueError(f"{path}: `{section}` must be a mapping of settings, got {type(section_data).__name__}")
    return params_from_mapping(section_data, where=f"{path}:{section}")
