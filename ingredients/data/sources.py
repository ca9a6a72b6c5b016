"""Where curation's raw videos come from: the `data:` section of params.yaml.

Everything curation reads lies under the folder `path`, the curate stage's DVC dependency: videos,
caption sidecars, a captions file, a clip list and the videos it names. A file outside it is refused
naming the key or line (editing it would not rerun curation); a symlink under `path` may point
anywhere.

- `synth`: the tiny profile's synthesised folder (top level only: its `heldout/` videos are curated
  separately as validation clips);
- `videos`: a folder tree of the researcher's raw videos, scanned recursively, symlinked folders
  followed (each real folder once) (mp4, mov, mkv, webm, avi; any resolution and frame rate).
  Captions from a sidecar beside each video (`NAME.txt`, or `NAME.json` with a "caption" key) or from
  one `captions_file` under `path` (CSV with columns `path,caption`, a spreadsheet's BOM allowed, or
  JSONL with those keys; video paths relative to `path`; a row naming no video is an error);
- `list`: a clip list `list_file` (JSONL, under `path`), one clip per line:
  `{"video": "relative/path.mp4", "caption": "...", "start": 0, "end": 120, "unit": "frames",
  "id": "name"}` (`start`/`end` optional, `unit` "frames" or "seconds", default frames, `id` an
  optional name for the clip: letters, digits, `_`, `-`; relative videos resolve against the list
  file's folder). Curation reads exactly those frames. Any other key, a fractional frame number or an
  `id` that is not a plain name stops the run naming the line.

Each source gives work items with a unique `key` (it names the per-video result file and the clip
ids, so it is a plain name, never a path): the path relative to `path` with '/' replaced by '__' and
no extension, plus the frame range for a list entry. `video_key` names the video file itself: the
validation split is drawn per video, so all ranges of one video land on the same side. Lines that
name no usable clip (a missing file, an empty range) are skipped and counted with the reason.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ingredients.files.jsonl import jsonl_lines

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
LIST_KEYS = ("video", "caption", "start", "end", "unit", "id")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # a clip id / result file name: never a path


class DataParams(BaseModel):
    """The `data:` section: which raw videos curation reads, and the validation clips training gets.

    `val_fraction` of the videos (chosen by a hash of their key and `val_seed`, so adding videos
    never moves others between the splits) go to `val.jsonl` beside the training manifest: held out
    by video. `val_manifest` is the manifest the training stages validate on: that file, or (tiny
    profile) the separately curated videos of people held out of training altogether.
    """

    model_config = ConfigDict(extra="forbid")
    source: Literal["synth", "videos", "list"] = "synth"
    path: str = "data/raw"  # the folder everything curation reads lies in (the curate stage's DVC dep)
    captions_file: str | None = None  # videos: CSV or JSONL of (path, caption) under `path`, instead of sidecars
    list_file: str | None = None  # list: the clip list (JSONL) under `path`
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    val_seed: int = 0
    val_manifest: str = "data/curated_heldout/manifest.jsonl"

    @field_validator("captions_file")
    @classmethod
    def _captions_file_needs_a_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("source") == "list":
            raise ValueError("only for source 'videos' or 'synth' (a list file carries its captions on each line); "
                             "set captions_file: null, or source: videos")
        return value

    @field_validator("list_file")
    @classmethod
    def _list_file_with_list(cls, value: str | None, info: ValidationInfo) -> str | None:
        source = info.data.get("source")
        if source == "list" and value is None:
            raise ValueError("source 'list' reads its clips from list_file (a JSONL file under data.path); set it")
        if source != "list" and value is not None:
            raise ValueError(f"only for source 'list' (source is {source!r}); set list_file: null")
        return value


def inside(root: Path, path: Path, what: str) -> Path:
    """`path` (relative to `root`, or absolute) when it lies under `root` (compared as written:
    a symlink inside counts as inside); else a ValueError naming it, `what` and the fix."""
    full = Path(os.path.normpath(os.path.abspath(root / path)))
    if not full.is_relative_to(Path(os.path.normpath(os.path.abspath(root)))):
        raise ValueError(f"{what} {str(path)!r} lies outside data.path {str(root)!r}: everything curation reads must lie "
                         f"under data.path, the folder DVC tracks for the curate stage (else editing it would not rerun "
                         f"curation); move it (or a symlink to it) under {root}")
    return full


def is_validation(key: str, fraction: float, seed: int) -> bool:
    """Whether the video `key` is held out for validation (a stable hash of key and seed < fraction)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass(frozen=True)
class VideoItem:
    """One unit of curation: a video file, optionally a frame range of it and a given caption."""

    key: str
    path: Path
    start: int = 0
    end: int | None = None
    caption: str | None = None
    seconds: tuple[float, float | None] | None = None  # a range given in seconds, resolved on decode
    video_key: str | None = None  # the video file's key (the split unit); None: `key`
    where: str | None = None  # "file:line" of the list line that named it

    @property
    def split_key(self) -> str:
        return self.video_key or self.key


def _key(path: Path, root: Path) -> str:
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return "__".join(rel.with_suffix("").parts)


def _unique(items: list[VideoItem], where: Path) -> list[VideoItem]:
    """Refuse items whose keys collide (their result files would overwrite each other), naming both."""
    by_key: dict[str, list[VideoItem]] = {}
    for item in items:
        by_key.setdefault(item.key, []).append(item)
    clashes = [group for group in by_key.values() if len(group) > 1]
    if clashes:
        lines = "; ".join(f"key {g[0].key!r} from " + ", ".join(i.where or str(i.path) for i in g) for g in clashes)
        raise ValueError(f"items of {where} share a result name: {lines}. Give list lines distinct ranges or an "
                         f"'id' each, or rename the videos")
    return items


def _walk(root: Path) -> list[Path]:
    """Files under `root`, symlinked folders followed, each real folder visited once (no loops)."""
    seen: set[str] = set()
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found.extend(Path(folder) / f for f in files)
    return found


def list_folder(root: Path, recursive: bool) -> list[VideoItem]:
    """Video files under `root` (recursively or top level only), sorted by key."""
    if not root.is_dir():
        raise FileNotFoundError(f"raw video folder not found: {root}")
    found = _walk(root) if recursive else root.iterdir()
    videos = [p for p in found if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith(".")]
    items = sorted((VideoItem(_key(p, root), p) for p in videos), key=lambda i: i.key)
    return _unique(items, root)


def read_captions_file(path: Path, root: Path) -> dict[Path, str]:
    """{resolved video path: caption} from a CSV (columns path, caption) or JSONL captions file."""
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path} (data.captions_file)")
    rows: list[tuple[str, object]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f)
            rows = [(f"{path}:{reader.line_num}", row) for row in reader]
    else:
        for where, row, error in jsonl_lines(path):
            if error:
                raise ValueError(f"{where}: {error} (data.captions_file)")
            rows.append((where, row))
    out = {}
    for where, row in rows:
        if not isinstance(row, dict) or not row.get("path") or not isinstance(row.get("caption"), str):
            raise ValueError(f"{where}: a captions row needs a 'path' and a text 'caption', got {row!r} (data.captions_file)")
        video = inside(root, Path(row["path"]), f"{where}: video").resolve()
        if not video.is_file():
            raise ValueError(f"{where}: no video {row['path']!r} under {root} (data.path); fix the path in "
                             f"data.captions_file or remove the row")
        out[video] = " ".join(row["caption"].split())
    return out


def _number(where: str, name: str, value: object, unit: str) -> float | int | None:
    """A list line's start/end: a whole frame number, or seconds; a fractional frame is refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: '{name}' must be a number, got {value!r}")
    if unit == "frames" and value != int(value):
        raise ValueError(f"{where}: '{name}': {value} is not a whole frame number; give frames as integers "
                         f"or set \"unit\": \"seconds\"")
    return int(value) if unit == "frames" else float(value)


@dataclass(frozen=True)
class SkippedLine:
    """A list line that names no usable clip: its `file:line` (the list file's name), why, and the fix."""

    key: str
    reason: str
    message: str


def skip_counts(skipped: list[SkippedLine]) -> Counter:
    """Skipped lines counted by reason."""
    return Counter(s.reason for s in skipped)


def read_clip_list(path: Path, root: Path | None = None) -> tuple[list[VideoItem], list[SkippedLine]]:
    """Items of an annotation file (see the module docstring) and the lines skipped, each with its
    reason; videos must lie under `root` (default: the list's folder)."""
    root = path.parent if root is None else root
    if not path.is_file():
        raise FileNotFoundError(f"clip list not found: {path} (data.list_file under data.path, with data.source: list)")
    items: list[VideoItem] = []
    skipped: list[SkippedLine] = []

    def skip(where: str, reason: str, message: str) -> None:
        logger.warning("%s: skipped, %s", where, message)
        skipped.append(SkippedLine(Path(where).name, reason, f"{where}: {message}"))

    for where, row, error in jsonl_lines(path):
        if error or not isinstance(row, dict):
            skip(where, "bad_list_line", error or f"expected a JSON object, got {type(row).__name__}")
            continue
        unknown = sorted(set(row) - set(LIST_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; a list line has only {list(LIST_KEYS)}")
        unit = row.get("unit", "frames")
        if unit not in ("frames", "seconds"):
            raise ValueError(f"{where}: 'unit' must be \"frames\" or \"seconds\", got {unit!r}")
        start, end = _number(where, "start", row.get("start", 0), unit), _number(where, "end", row.get("end"), unit)
        if start is None:
            start = 0
        clip_id = row.get("id")
        if clip_id is not None and (not isinstance(clip_id, str) or not NAME.match(clip_id)):
            raise ValueError(f"{where}: 'id' {clip_id!r} must be a plain name (letters, digits, '_', '-'; no path, "
                             f"no dots): it names the clip's files under the output folder")
        caption = row.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise ValueError(f"{where}: 'caption' must be text, got {type(caption).__name__} {caption!r}")
        video = Path(str(row.get("video", "")))
        video = video if video.is_absolute() else (path.parent / video)
        if row.get("video"):
            video = inside(root, video, f"{where}: video")
        if not row.get("video") or not video.is_file():
            skip(where, "missing_video", f"video not found: {video}")
            continue
        if start < 0 or (end is not None and end <= start):
            skip(where, "bad_range", f"empty range start={start!r} end={end!r} ({unit}): end must exceed start >= 0")
            continue
        video_key = _key(video, root)
        mark = "s" if unit == "seconds" else ""  # seconds 1-2 and frames 1-2 are distinct clips
        key = clip_id or f"{video_key}__{start:g}{mark}-{'end' if end is None else f'{end:g}{mark}'}".replace(".", "_")
        if unit == "seconds":
            items.append(VideoItem(key, video, caption=caption, seconds=(float(start), None if end is None else float(end)),
                                   video_key=video_key, where=where))
        else:
            items.append(VideoItem(key, video, int(start), None if end is None else int(end), caption,
                                   video_key=video_key, where=where))
    return _unique(items, path), skipped


def collect_items(params: DataParams) -> tuple[list[VideoItem], list[SkippedLine]]:
    """The work items of the configured source, and the lines skipped before curation (with why)."""
    root = Path(params.path)
    if params.source == "list":
        if not root.is_dir():
            raise FileNotFoundError(f"data folder not found: {root} (data.path: the folder holding data.list_file and its videos)")
        return read_clip_list(inside(root, Path(params.list_file), "data.list_file"), root)
    items = list_folder(root, recursive=params.source == "videos")
    if params.captions_file:
        captions = read_captions_file(inside(root, Path(params.captions_file), "data.captions_file"), root)
        items = [VideoItem(i.key, i.path, caption=captions.get(i.path.resolve())) for i in items]
    return items, []
