"""Typed, validated settings of data curation (the `curate` section of params.yaml)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ingredients.config import validate_model
from ingredients.faces.registry import available_backends, backend_options


class CurationParams(BaseModel):
    """Every knob of `ingredients.data.curate`, with the tiny profile's defaults.

    Unknown keys are errors (a typo must not silently fall back to a default).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # face backend (ingredients.faces.registry) and constructor options per backend: only the entry of
    # the selected `analyzer` is used, so a profile that switches backends never passes one backend's
    # options to another
    analyzer: str = "dlib"
    analyzer_options: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"dlib": {"upsample": 1}})
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
    # bounds that hold memory and time to the settings, whatever the footage's length and resolution
    max_clip_seconds: float | None = Field(10.0, gt=0, description="shots longer than this are split into clips of equal duration at most this long (null: shots kept whole)")
    detect_max_side: int | None = Field(640, ge=64, description="shots and faces are found on frames scaled so their longer side is at most this (px; boxes mapped back; null: full size)")
    mask_max_side: int | None = Field(720, ge=16, description="segmentation masks are saved scaled so their longer side is at most this (px, the training resolution; null: full size)")
    # plug-ins
    masker: Literal["box", "landmarks"] = "box"
    captioner: Literal["sidecar"] = "sidecar"
    # execution and outputs
    num_workers: int = Field(1, ge=1, description="process pool size over videos; 1 = in-process")
    max_failed_fraction: float = Field(0.1, ge=0, le=1, description="fail the run (naming report.json) when more of the videos failed")
    contact_sheet_clips: int = Field(8, ge=0)
    contact_sheet_frames: int = Field(4, ge=1)

    @field_validator("analyzer")
    @classmethod
    def _known_analyzer(cls, value: str) -> str:
        if value not in available_backends():
            raise ValueError(f"unknown face backend; allowed: {', '.join(available_backends())}")
        return value

    @field_validator("analyzer_options")
    @classmethod
    def _options_of_known_backends(cls, value: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - set(available_backends()))
        if unknown:
            raise ValueError(f"keys are face backends ({', '.join(available_backends())}), each with its options "
                             f"(e.g. {{dlib: {{upsample: 1}}}}); unknown: {', '.join(unknown)}")
        analyzer = info.data.get("analyzer")
        if analyzer in value:
            allowed = backend_options(analyzer)
            bad = sorted(set(value[analyzer]) - set(allowed))
            if bad:
                raise ValueError(f"{analyzer}: unknown option(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")
        return value

    @property
    def options(self) -> dict[str, Any]:
        """The constructor options of the selected analyzer."""
        return dict(self.analyzer_options.get(self.analyzer, {}))

    def fingerprint(self) -> str:
        """Hash of the settings that change per-video results (resumed runs must match it)."""
        keys = {k: v for k, v in self.model_dump().items() if k not in ("num_workers", "contact_sheet_clips", "contact_sheet_frames",
                                                                       "analyzer_options", "max_failed_fraction")}
        keys["analyzer_options"] = self.options  # another backend's entry changes nothing
        return hashlib.sha1(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def params_from_mapping(mapping: Mapping[str, Any] | None, where: str = "curate") -> CurationParams:
    """Validate a dict of settings; errors name each bad key as `where.key` with the value."""
    return validate_model(CurationParams, mapping, where)
