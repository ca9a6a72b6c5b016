"""The curated-clip manifest: JSONL, one training clip per line.

Paths inside a row (video, reference crops, mask file) are relative to the manifest's folder, so a
curated folder can be moved as a whole. They cannot escape their root: reference crops and masks must
lie inside the manifest's folder, source videos inside the data root: by default the folder curation
read (`data.path`, recorded in `report.json` beside the manifest as `source.root`, relative to the
manifest's folder), else the folder above the manifest's (which holds `raw/` beside `curated/`);
absolute paths and escapes are refused on reading. Frame ranges are [start_frame, end_frame) of the source
video (frames in decoding order), with the clip's presentation times (`start_time`, `end_time`,
`frame_times`: seconds from the video's first frame; variable-frame-rate footage is not 1 / fps
apart); `boxes` hold one entry per clip frame (None where the identity is not visible), in displayed
pixels (`width` x `height`: rotation and pixel aspect applied). The masks are the boxes when
`mask_kind == "box"`; with `"segmentation"` the file `mask_path` holds `masks`, bool [K, F, Hm, Wm]
in the order of `identities`, the displayed frame scaled to at most `curate.mask_max_side`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ingredients.files.atomic import write_text

Box = list[float]  # (x0, y0, x1, y1) in source-video pixels


class ManifestIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: int = Field(ge=0, description="identity cluster id within the source video")
    reference: str = Field(description="reference crop PNG, relative to the manifest folder")
    reference_frame: int = Field(ge=0, description="source-video frame the crop was taken from")
    reference_outside_clip: bool
    boxes: list[Box | None]


class ManifestClip(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip_id: str
    video: str = Field(description="source video, relative to the manifest folder")
    start_frame: int = Field(ge=0)
    end_frame: int
    # presentation times, seconds from the video's first frame (None: a manifest written before they were
    # recorded, read as constant rate at `fps`): where the clip starts and ends (the end of its last
    # frame) and each frame's; on variable-frame-rate footage the frames are not 1 / fps apart
    start_time: float | None = Field(None, ge=0)
    end_time: float | None = None
    frame_times: list[float] | None = None
    fps: float = Field(gt=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    caption: str
    mask_kind: Literal["box", "segmentation"]
    mask_path: str | None = None
    identities: list[ManifestIdentity]

    @model_validator(mode="after")
    def _check(self) -> "ManifestClip":
        n = self.end_frame - self.start_frame
        if n <= 0:
            raise ValueError(f"clip {self.clip_id}: end_frame {self.end_frame} must exceed start_frame {self.start_frame}")
        times = (self.start_time, self.end_time, self.frame_times)
        if any(v is None for v in times) and any(v is not None for v in times):
            raise ValueError(f"clip {self.clip_id}: start_time, end_time and frame_times are given together or not at all")
        if self.frame_times is not None:
            ft = self.frame_times
            if len(ft) != n:
                raise ValueError(f"clip {self.clip_id}: {len(ft)} frame_times for {n} frames")
            if any(b < a for a, b in zip(ft[:-1], ft[1:])) or ft[0] != self.start_time or not self.end_time > ft[-1]:
                raise ValueError(f"clip {self.clip_id}: frame_times must rise from start_time ({self.start_time}) and end "
                                 f"before end_time ({self.end_time})")
        for k, ident in enumerate(self.identities):
            if len(ident.boxes) != n:
                raise ValueError(f"clip {self.clip_id}: identity {k} has {len(ident.boxes)} boxes for {n} frames")
        if (self.mask_kind == "segmentation") != (self.mask_path is not None):
            raise ValueError(f"clip {self.clip_id}: mask_path must be set exactly when mask_kind is 'segmentation'")
        return self

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    def times(self) -> list[float]:
        """Each frame's presentation time (seconds): the recorded ones, else constant rate at `fps`."""
        if self.frame_times is not None:
            return list(self.frame_times)
        return [(self.start_frame + i) / self.fps for i in range(self.num_frames)]

    @property
    def num_identities(self) -> int:
        return len(self.identities)


def _check_inside(base: Path, rel: str, bound: Path, what: str, bound_name: str) -> None:
    """Refuse an absolute `rel`, or one that resolves from `base` (symlinks followed) outside `bound`."""
    if Path(rel).is_absolute():
        raise ValueError(f"{what} {rel!r} is absolute; manifest paths are relative to the manifest's folder")
    resolved, bound = (base / rel).resolve(), bound.resolve()
    if not resolved.is_relative_to(bound):
        raise ValueError(f"{what} {rel!r} resolves to {resolved}, outside the {bound_name} {bound}")


def check_clip_paths(clip: ManifestClip, manifest_dir: Path, data_root: Path) -> None:
    """Reference crops and masks stay in the manifest's folder, the source video in the data root."""
    _check_inside(manifest_dir, clip.video, data_root, "video", "data root (pass --data-root to widen it)")
    for ident in clip.identities:
        _check_inside(manifest_dir, ident.reference, manifest_dir, "reference", "manifest's folder")
    if clip.mask_path is not None:
        _check_inside(manifest_dir, clip.mask_path, manifest_dir, "mask_path", "manifest's folder")


def default_data_root(manifest_dir: Path) -> Path:
    """Where a manifest's videos may live: the folder its curation read (report.json `source.root`,
    relative to the manifest's folder), else the folder above the manifest's."""
    report = manifest_dir / "report.json"
    try:
        root = json.loads(report.read_text(encoding="utf-8"))["source"]["root"]
    except (OSError, ValueError, KeyError, TypeError):
        return manifest_dir.resolve().parent
    if not isinstance(root, str) or Path(root).is_absolute():
        raise ValueError(f"{report}: source.root {root!r} must be a path relative to the manifest's folder")
    return (manifest_dir / root).resolve()


def read_manifest(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> list[ManifestClip]:
    """Parse and validate a manifest, paths included; errors name the file and line.

    `data_root` bounds where source videos may live (default: `default_data_root`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}; create it with `python -m ingredients.data.curate`")
    manifest_dir = path.parent
    root = Path(data_root) if data_root is not None else default_data_root(manifest_dir)
    clips = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                clip = ManifestClip.model_validate(json.loads(line))
                check_clip_paths(clip, manifest_dir, root)
            except (json.JSONDecodeError, ValidationError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: invalid manifest row: {e}") from None
            clips.append(clip)
    return clips


def manifest_lines(clips: list[ManifestClip]) -> str:
    return "".join(json.dumps(c.model_dump(), separators=(",", ":")) + "\n" for c in clips)


def write_manifest(path: str | os.PathLike, clips: list[ManifestClip]) -> Path:
    """Write the manifest atomically (readers see the old or the complete new file)."""
    return write_text(path, manifest_lines(clips))
