"""Curation report (counts kept / dropped per reason, identity histogram, throughput) and a contact
sheet of sample clips with boxes coloured by identity."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ingredients.files.atomic import write_png
from ingredients.data.curation_params import CurationParams
from ingredients.data.manifest import ManifestClip
from ingredients.data.packaged_photos import package_dir
from ingredients.files.video_io import frames_at

IDENTITY_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def video_outcome(result: dict) -> dict:
    """One video's outcome: the clips it gave, or why it gave none (its skip reason and message, or
    the filters that dropped each of its shots)."""
    if result["status"] == "skipped":
        return {"clips": 0, "why": result["reason"], "message": result["message"]}
    if not result["clips"]:
        return {"clips": 0, "why": "all_clips_dropped", "message": f"dropped clips by reason: {result.get('dropped', {})}"}
    return {"clips": len(result["clips"])}


def build_report(results: list[dict], params: CurationParams, wall_seconds: float, videos_this_run: list[str]) -> dict:
    """Aggregate per-video result records (in video order) into the report dict."""
    skipped = Counter(r["reason"] for r in results if r["status"] == "skipped")
    dropped: Counter = Counter()
    for r in results:
        dropped.update(r.get("dropped", {}))
    kept = [c for r in results for c in r["clips"]]
    hist = Counter(len(c["identities"]) for c in kept)
    frames = sum(r["num_frames"] for r in results)
    seconds = sum(r.get("seconds", 0.0) for r in results)
    run = [r for r in results if r["video"] in set(videos_this_run)]
    run_frames = sum(r["num_frames"] for r in run)
    return {
        "params": params.model_dump(),
        "params_fingerprint": params.fingerprint(),
        "videos": {
            "total": len(results),
            "curated": sum(r["status"] == "ok" for r in results),
            "skipped": dict(sorted(skipped.items())),
            "skipped_files": {r["video"]: r["message"] for r in results if r["status"] == "skipped"},
            "outcomes": {r["video"]: video_outcome(r) for r in results},
            "without_clips": sum(not r["clips"] for r in results),
        },
        "clips": {
            "shots": sum(r.get("num_shots", 0) for r in results),
            "kept": len(kept),
            "dropped": dict(sorted(dropped.items())),
            "kept_frames": sum(c["end_frame"] - c["start_frame"] for c in kept),
            "references_outside_clip": sum(i["reference_outside_clip"] for c in kept for i in c["identities"]),
            "identities": sum(len(c["identities"]) for c in kept),
        },
        "identity_histogram": {str(k): hist[k] for k in sorted(hist)},
        "tracks": {"kept": sum(r.get("tracks", 0) for r in results), "discarded_short": sum(r.get("short_tracks", 0) for r in results)},
        "throughput": {
            # decoded video frames per second of per-video processing time (one process)
            "frames": frames,
            "processing_seconds": round(seconds, 3),
            "frames_per_second": (frames / seconds) if seconds > 0 else None,
            # this run only (resumed videos excluded), wall clock, all workers together
            "run_videos": len(run),
            "run_frames": run_frames,
            "run_wall_seconds": round(wall_seconds, 3),
            "run_wall_frames_per_second": (run_frames / wall_seconds) if run and wall_seconds > 0 else None,
            "num_workers": params.num_workers,
        },
    }


def label_font(size: int = 11) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped in matplotlib's package), which covers Latin, Greek, Cyrillic and more:
    PIL's default bitmap font draws names outside ASCII as boxes."""
    path = package_dir("matplotlib", "the DejaVu Sans font of the contact sheet") / "mpl-data/fonts/ttf/DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size)


def _draw_clip_row(frames: dict[int, np.ndarray], clip: ManifestClip, picks: list[int], thumb_h: int,
                   font: ImageFont.FreeTypeFont) -> Image.Image:
    """One row: the picked clip frames (clip-local index -> frame decoded at about thumbnail size)
    with the identities' boxes, under the clip's id, range and caption."""
    scale = thumb_h / clip.height
    thumb_w = int(round(clip.width * scale))
    row = Image.new("RGB", (thumb_w * len(picks), thumb_h + 14), (0, 0, 0))
    draw = ImageDraw.Draw(row)
    for j, i in enumerate(picks):
        img = Image.fromarray(frames[i]).resize((thumb_w, thumb_h), Image.BILINEAR)
        d = ImageDraw.Draw(img)
        for k, ident in enumerate(clip.identities):
            box = ident.boxes[i]
            if box is not None:
                d.rectangle([v * scale for v in box], outline=IDENTITY_COLOURS[k % len(IDENTITY_COLOURS)], width=2)
        row.paste(img, (j * thumb_w, 14))
    times = f" {clip.start_time:.2f}-{clip.end_time:.2f} s" if clip.start_time is not None else ""
    draw.text((2, 0), f"{clip.clip_id} K={clip.num_identities} [{clip.start_frame},{clip.end_frame}){times}  {clip.caption[:90]}",
              fill=(255, 255, 255), font=font)
    return row


def write_contact_sheet(path: Path, manifest_dir: Path, clips: list[ManifestClip], max_clips: int, frames_per_clip: int, thumb_h: int = 96) -> Path:
    """Rows of evenly spaced frames from up to `max_clips` clips (spread over the manifest); only the
    picked frames are decoded, each at about thumbnail size (memory: a few thumbnails, whatever the
    clips' length and resolution)."""
    sel = np.unique(np.linspace(0, len(clips) - 1, min(max_clips, len(clips))).round().astype(int))
    font = label_font()
    rows = []
    for ci in sel:
        clip = clips[int(ci)]
        picks = np.unique(np.linspace(0, clip.num_frames - 1, frames_per_clip).round().astype(int)).tolist()
        side = int(np.ceil(max(clip.width, clip.height) * thumb_h / clip.height)) + 1  # at least the thumbnail
        got = frames_at(manifest_dir / clip.video, [clip.start_frame + i for i in picks], max_side=side)
        rows.append(_draw_clip_row({i: got[clip.start_frame + i] for i in picks}, clip, picks, thumb_h, font))
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), (0, 0, 0))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    return write_png(path, np.asarray(sheet))
