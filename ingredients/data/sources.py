"""Where curation's raw videos come from: the `data:` section of params.yaml.

- `synth`: the tiny profile's synthesised folder (`path`, top level only: its `heldout/` videos are
  curated separately as validation clips);
- `videos`: a folder tree of the researcher's raw videos (`path`), scanned recursively (mp4, mov,
  mkv, webm, avi; any resolution and frame rate). Captions from a sidecar beside each video
  (`NAME.txt`, or `NAME.json` with a "caption" key) or from one `captions_file` (CSV with columns
  `path,caption`, or JSONL with those keys; paths relative to `path`);
- `list`: an annotation file (`path`, JSONL) listing clips, one per line:
  `{"video": "relative/or/absolute.mp4", "caption": "...", "start": 0, "end": 120, "unit": "frames"}`
  (`start`/`end` optional, `unit` "frames" or "seconds", default frames; relative videos resolve
  against the list file's folder). Curation reads exactly those frames.

Each source gives work items with a unique `key` (it names the per-video result file and the clip
ids): the path relative to the root with '/' replaced by '__' and no extension, plus the frame range
for a list entry. Items that cannot be used (a list line naming a missing file, a bad range) are
skipped and counted with the reason, never fatal.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ingredients.config import ParamsError
from ingredients.files.jsonl import jsonl_lines

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")


class DataParams(BaseModel):
    """The `data:` section: which raw videos curation reads, and the validation clips training gets.

    `val_fraction` of the videos (chosen by a hash of their key and `val_seed`, so adding videos
    never moves others between the splits) go to `val.jsonl` beside the training manifest: held out
    by video. `val_manifest` is the manifest the training stages validate on: that file, or (tiny
    profile) the separately curated videos of people held out of training altogether.
    """

    model_config = ConfigDict(extra="forbid")
    source: Literal["synth", "videos", "list"] = "synth"
    path: str = "data/raw"
    captions_file: str | None = None  # videos: CSV or JSONL of (path, caption), instead of sidecars
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    val_seed: int = 0
    val_manifest: str = "data/curated_heldout/manifest.jsonl"


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


def _key(path: Path, root: Path) -> str:
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return "__".join(rel.with_suffix("").parts)


def _unique(items: list[VideoItem], where: Path) -> list[VideoItem]:
    dup = sorted(k for k, n in Counter(i.key for i in items).items() if n > 1)
    if dup:
        raise ValueError(f"videos under {where} share a name (result files would collide): {dup}; rename them")
    return items


def list_folder(root: Path, recursive: bool) -> list[VideoItem]:
    """Video files under `root` (recursively or top level only), sorted by key."""
    if not root.is_dir():
        raise FileNotFoundError(f"raw video folder not found: {root}")
    found = root.rglob("*") if recursive else root.iterdir()
    videos = [p for p in found if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith(".")]
    items = sorted((VideoItem(_key(p, root), p) for p in videos), key=lambda i: i.key)
    return _unique(items, root)


def read_captions_file(path: Path, root: Path) -> dict[Path, str]:
    """{resolved video path: caption} from a CSV (columns path, caption) or JSONL captions file."""
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path} (data.captions_file)")
    rows: list[dict] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        for where, row, error in jsonl_lines(path):
            if error:
                raise ValueError(f"{where}: {error} (data.captions_file)")
            rows.append(row)
    out = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("path") or not isinstance(row.get("caption"), str):
            raise ValueError(f"{path}: row {n} needs 'path' and 'caption', got {row!r}")
        out[(root / row["path"]).resolve()] = " ".join(row["caption"].split())
    return out


def read_clip_list(path: Path) -> tuple[list[VideoItem], Counter]:
    """Items of an annotation file (see the module docstring) and the count of skipped lines by reason."""
    if not path.is_file():
        raise FileNotFoundError(f"clip list not found: {path} (data.path with data.source: list)")
    items, skipped = [], Counter()
    for where, row, error in jsonl_lines(path):
        if error or not isinstance(row, dict):
            logger.warning("%s: skipped, %s", where, error or f"expected a JSON object, got {type(row).__name__}")
            skipped["bad_list_line"] += 1
            continue
        video = Path(str(row.get("video", "")))
        video = video if video.is_absolute() else (path.parent / video)
        if not row.get("video") or not video.is_file():
            logger.warning("%s: skipped, video not found: %s", where, video)
            skipped["missing_video"] += 1
            continue
        unit = row.get("unit", "frames")
        start, end = row.get("start", 0), row.get("end")
        if unit not in ("frames", "seconds") or not isinstance(start, (int, float)) or (end is not None and (
                not isinstance(end, (int, float)) or end <= start)) or start < 0:
            logger.warning("%s: skipped, bad range start=%r end=%r unit=%r (unit: frames | seconds)", where, start, end, unit)
            skipped["bad_range"] += 1
            continue
        caption = row.get("caption")
        key = str(row.get("id") or f"{_key(video, path.parent)}__{start}-{end if end is not None else 'end'}").replace(".", "_")
        if unit == "seconds":
            items.append(VideoItem(key, video, caption=caption, seconds=(float(start), None if end is None else float(end))))
        else:
            items.append(VideoItem(key, video, int(start), None if end is None else int(end), caption))
    return _unique(items, path), skipped


def collect_items(params: DataParams) -> tuple[list[VideoItem], Counter]:
    """The work items of the configured source, and lines skipped before curation by reason."""
    root = Path(params.path)
    if params.source == "list":
        if params.captions_file:
            raise ParamsError("data.captions_file: only for data.source videos or synth (a list file carries its captions)")
        return read_clip_list(root)
    items = list_folder(root, recursive=params.source == "videos")
    if params.captions_file:
        captions = read_captions_file(Path(params.captions_file), root)
        items = [VideoItem(i.key, i.path, caption=captions.get(i.path.resolve())) for i in items]
    return items, Counter()
