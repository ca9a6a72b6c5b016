"""Curation of one video (or the frame range of it a source names): decode -> shots -> detection ->
tracks -> identities -> clips -> filters -> captions, reference crops, masks; and its result file.

This module is what a worker runs (a pool process or a Ray task imports it by name), so it holds no
state of a driver: the face backend and plug-ins are built once per process (`components`) from the
settings. `ingredients.data.curate` orchestrates the videos, resume, manifest and report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ingredients.files.atomic import write_json, write_png
from ingredients.data.captions import CaptionError, build_captioner
from ingredients.data.clustering import cluster_tracks
from ingredients.data.curation_params import CurationParams
from ingredients.data.manifest import ManifestClip
from ingredients.data.masks import build_masker
from ingredients.data.reference_crop import choose_reference, crop_reference, face_quality
from ingredients.data.scoring import score_video
from ingredients.data.shots import ShotCuts, shot_duration, split_long_shots
from ingredients.data.tracking import Track, track_faces
from ingredients.data.sources import VideoItem
from ingredients.files.npz_stream import StreamedNpz
from ingredients.files.video_decode import decode
from ingredients.files.video_io import NotAVideoError, VideoReadError, frames_at, iter_frames, video_rate

logger = logging.getLogger(__name__)

RESULT_VERSION = 1
MASK_WINDOW = 16  # frames a segmentation masker gets at a time: memory flat in video and clip length (but the masks)
# clip drop reasons, in the order the filters are applied
CLIP_DROP_REASONS = ("too_short", "no_faces", "too_many_identities", "face_too_small", "briefly_visible")
# video skip reasons
VIDEO_SKIP_REASONS = ("empty_video", "corrupt_video", "not_a_video", "range_past_end", "range_without_frames", "missing_caption",
                      "unreadable_sidecar", "no_faces", "failed")
TIME_EPS = 1e-6  # seconds: presentation times compare equal within this (container time bases round)


# ---------------------------------------------------------------------------------------------
# components


class Components:
    """The face backend and plug-ins, built once per process from the settings."""

    def __init__(self, params: CurationParams) -> None:
        from ingredients.faces.registry import build_analyzer

        self.analyzer = build_analyzer(params.analyzer, **params.options)
        self.masker = build_masker(params.masker)
        self.captioner = build_captioner(params.captioner)
        self.threshold = params.cluster_threshold if params.cluster_threshold is not None else float(self.analyzer.verification_threshold)

    def embed(self, image: np.ndarray, face) -> np.ndarray:
        if hasattr(self.analyzer, "embed_face"):  # dlib: its own chip extraction, the better path
            return np.asarray(self.analyzer.embed_face(image, face), dtype=np.float64)
        return np.asarray(self.analyzer.embed(self.analyzer.align(image, face, 112)), dtype=np.float64)


def file_fingerprint(path: Path) -> str:
    """Size + SHA-1 of the first and last MiB: detects replaced videos without hashing big files."""
    size = path.stat().st_size
    h = hashlib.sha1(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# per-video processing (pure compute on decoded frames + thin writes)


def detection_frames(shots: list[tuple[int, int]], stride: int) -> set[int]:
    """Frames to detect on: every `stride`-th frame of each shot from its first, and each shot's last."""
    out: set[int] = set()
    for start, end in shots:
        out.update(range(start, end, stride))
        out.add(end - 1)
    return out


def _detect(frames: Iterator[np.ndarray], shots: list[tuple[int, int]], params: CurationParams, comp: Components):
    """Stream the frames once: per shot [(frame, faces)] at the detection stride (and each shot's last
    frame), and the quality of every detected face {id(face): FaceQuality} (the reference crop is
    chosen from these; the faces stay alive in the detections). One frame in memory at a time."""
    wanted = detection_frames(shots, params.detect_stride)
    found: dict[int, list] = {}
    quality: dict[int, object] = {}
    for t, frame in enumerate(frames):
        if t in wanted:
            faces = comp.analyzer.detect(frame)
            found[t] = faces
            for face in faces:
                quality[id(face)] = face_quality(frame, face)
    per_shot = [[(t, found[t]) for t in sorted(found) if start <= t < end] for start, end in shots]
    return per_shot, quality


def _track_embeddings(video: Path, first: int, tracks: list[Track], samples: int, comp: Components,
                      max_side: int | None = None) -> np.ndarray:
    """The mean recognizer embedding (unit norm) of `samples` faces evenly spread over each track; the
    frames they need are decoded (at the working size the tracks were found on) in one pass that
    keeps only those. Returns [N, D]."""
    picks = [np.unique(np.linspace(0, len(tr.frames) - 1, min(samples, len(tr.frames))).round().astype(int)) for tr in tracks]
    needed = frames_at(video, [first + tr.frames[i] for tr, pick in zip(tracks, picks) for i in pick], max_side)
    out = []
    for tr, pick in zip(tracks, picks):
        vecs = np.stack([comp.embed(needed[first + tr.frames[i]], tr.faces[i]) for i in pick])  # [S, D]
        mean = vecs.mean(0)
        out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.stack(out)  # [N, D]


def _filter_clip(num_frames: int, boxes_by_identity: list[list], params: CurationParams) -> str | None:
    """The first failing filter's reason, or None when the clip is kept."""
    if num_frames < params.min_clip_frames:
        return "too_short"
    if not boxes_by_identity:
        return "no_faces"
    if len(boxes_by_identity) > params.max_identities:
        return "too_many_identities"
    for boxes in boxes_by_identity:
        sizes = [float(np.sqrt(max(b[2] - b[0], 0) * max(b[3] - b[1], 0))) for b in boxes if b is not None]
        if float(np.median(sizes)) < params.min_face_size:
            return "face_too_small"
    for boxes in boxes_by_identity:
        if sum(b is not None for b in boxes) / num_frames < params.min_visible_fraction:
            return "briefly_visible"
    return None


def _sidecar_state(video: Path) -> list[str | None]:
    """Content hashes of the caption sidecars beside `video` (None where absent): editing, adding or
    repairing a sidecar changes the video's fingerprint."""
    out = []
    for suffix in (".txt", ".json"):
        side = video.with_suffix(suffix)
        out.append(hashlib.sha1(side.read_bytes()).hexdigest()[:16] if side.is_file() else None)
    return out


def item_fingerprint(item: VideoItem) -> str:
    """The video file's fingerprint plus every other input of its result: the range and caption its
    source gives, or (no given caption) the caption sidecars it reads."""
    extra = [item.start, item.end, item.seconds, item.caption]
    if item.caption is None:
        extra.append(_sidecar_state(item.path))
    return file_fingerprint(item.path) + hashlib.sha1(json.dumps(extra).encode()).hexdigest()[:8]


def result_path(out_dir: Path, key: str) -> Path:
    """`OUT/work/KEY.json`; a key that is not a plain name (a path, `..`) is refused, so a result is
    never written outside the output folder."""
    work = Path(out_dir) / "work"
    path = work / f"{key}.json"
    if not key or key in (".", "..") or "/" in key or "\\" in key or path.resolve().parent != work.resolve():
        raise ValueError(f"item key {key!r} is not a plain name: it would write outside {work}")
    return path


@dataclass
class _Scan:
    """What the first pass over an item's range found: its first frame (in the file), the presentation
    times of its frames (seconds from the video's first frame; one more, the next frame's, when the
    range stops before the video's end), the frames' displayed size and the scale of the working
    frames, the shots, and the video's frame count and last time as far as the pass read."""

    first: int = 0
    times: list[float] = field(default_factory=list)
    num_frames: int = 0
    width: int = 0
    height: int = 0
    scale: float = 1.0
    shots: list[tuple[int, int]] = field(default_factory=list)
    seen: int = 0
    seen_times: tuple[float, ...] = ()  # the last two frame times the pass read (a video's end, the period)
    around: tuple[float | None, float | None] = (None, None)  # the frame times either side of a seconds range


def _scan(item: VideoItem, params: CurationParams, fps: float) -> _Scan:
    """Pass 1: decode from the video's first frame to the range's end (working size), keep the times of
    the range's frames and feed them to the shot detector: shots cover the whole range whatever the
    video's frame rate, and a range in seconds selects the frames whose presentation times fall in it."""
    scan = _Scan(first=item.start)
    cuts = ShotCuts(params.shot_detector, params.shot_threshold, params.adaptive_threshold, params.min_scene_frames, fps)
    lo, hi = item.seconds if item.seconds is not None else (None, None)
    stop = None if item.seconds is not None or item.end is None else item.end + 1  # one past: the next frame's time
    prev = None
    for frame in decode(item.path, 0, stop, params.detect_max_side):
        t = frame.time
        scan.seen, scan.seen_times = frame.index + 1, (*scan.seen_times[-1:], t)
        if item.seconds is not None:
            started, ended = t >= lo - TIME_EPS, hi is not None and t >= hi - TIME_EPS
        else:
            started, ended = frame.index >= item.start, item.end is not None and frame.index >= item.end
        if ended:  # the first frame after the range: its time ends the range's last frame
            if scan.num_frames:
                scan.times.append(t)
            scan.around = (prev, t)
            break
        prev = t
        if not started:
            continue
        if not scan.num_frames:
            scan.first = frame.index
            scan.width, scan.height = frame.geometry.display
            scan.scale = frame.geometry.scale
        scan.num_frames += 1
        scan.times.append(t)
        cuts.add(frame.image)
    scan.shots = split_long_shots(cuts.shots(), scan.times, params.max_clip_seconds)
    return scan


def _range_problem(item: VideoItem, scan: _Scan) -> tuple[str, str] | None:
    """(reason, message) when the item's range holds no frame or ends past the video; else None."""
    where, path = item.where or item.path, item.path
    end_time = scan.seen_times[-1] + (scan.seen_times[-1] - scan.seen_times[0] if len(scan.seen_times) > 1 else 0.0)
    if item.seconds is not None:
        lo, hi = item.seconds
        span = f"[{lo:g}, {'end' if hi is None else f'{hi:g}'}) s"
        if not scan.num_frames and scan.around[1] is not None:  # frames after the range, none in it
            before, after = scan.around
            near = f"frames at {before:.3f} s and {after:.3f} s" if before is not None else f"its first frame at {after:.3f} s"
            return "range_without_frames", (f"{where}: the range {span} is shorter than one frame of {path} and holds no frame "
                                            f"({near}); widen it to include a frame's time")
        if not scan.num_frames:
            return "range_past_end", (f"{where}: the range {span} starts past the end of {path} ({scan.seen} frames, "
                                      f"{end_time:.3f} s); fix start/end")
        if hi is not None and scan.around[1] is None and hi > end_time + TIME_EPS:
            return "range_past_end", (f"{where}: the range {span} ends past the video ({end_time:.3f} s, {scan.seen} frames in "
                                      f"{path}); set end <= {end_time:.3f} or leave it out")
        return None
    if not scan.num_frames and item.start > 0:
        return "range_past_end", (f"{where}: the range starts at frame {item.start}, past the end of {path} "
                                  f"({scan.seen} frames); fix start/end")
    if item.end is not None and scan.first + scan.num_frames < item.end:
        return "range_past_end", (f"{where}: the range [{item.start}, {item.end}) ends past the video ({scan.seen} frames in "
                                  f"{path}); set end <= {scan.seen} or leave it out")
    return None


class _SavedMasks(Mapping):
    """{clip id: masks bool [K, F, H, W]} read from the clips' mask files when asked (one clip at a time)."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def __getitem__(self, clip_id: str) -> np.ndarray:
        with np.load(self.paths[clip_id]) as data:
            return data["masks"]

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def _scaled_box(box, scale: float) -> np.ndarray | None:
    return None if box is None else np.asarray(box, dtype=np.float64) * scale


def curate_video(item: VideoItem | Path, out_dir: Path, params: CurationParams, comp: Components) -> dict:
    """Curate one video (or the range of it that its source names); returns its result record (clips as
    manifest-row dicts with frames numbered in the source video and their presentation times, drop
    counts, timing)."""
    t0 = time.perf_counter()
    item = item if isinstance(item, VideoItem) else VideoItem(Path(item).stem, Path(item))
    video_path, stem = item.path, item.key
    result = {
        "version": RESULT_VERSION,
        "video": stem,
        "params": params.fingerprint(),
        "fingerprint": item_fingerprint(item),
        "status": "ok",
        "reason": None,
        "message": None,
        "num_frames": 0,
        "num_shots": 0,
        "clips": [],
        "dropped": {},
        "tracks": 0,
        "short_tracks": 0,
        "score": None,
    }

    def skip(reason: str, message: str) -> dict:
        logger.warning("skipping %s: %s", video_path, message)
        result.update(status="skipped", reason=reason, message=message, seconds=time.perf_counter() - t0)
        return result

    # 1. a first streaming pass reads the item's frames with their presentation times (a range in
    #    seconds selects the frames whose times fall in it) and finds the shots on them: corrupt files,
    #    still pictures and ranges holding no frame are skipped before any other work
    try:
        fps = video_rate(video_path)
        scan = _scan(item, params, fps)
    except NotAVideoError as e:
        return skip("not_a_video", str(e))
    except VideoReadError as e:
        return skip("empty_video" if video_path.stat().st_size == 0 else "corrupt_video", str(e))
    problem = _range_problem(item, scan)
    if problem is not None:
        return skip(*problem)
    if scan.num_frames == 0:
        return skip("corrupt_video", f"no decodable frames in {video_path}")
    first, num_frames, times, scale = scan.first, scan.num_frames, scan.times, scan.scale
    width, height = scan.width, scan.height
    result["num_frames"] = num_frames
    # 2. caption: the source's (a list line, a captions file), else the captioner's (sidecar)
    try:
        caption_of = (lambda a, b: item.caption) if item.caption else (lambda a, b: comp.captioner.caption(video_path, a, b))
        caption_of(first, first + num_frames)
    except CaptionError as e:
        return skip(e.reason, str(e))
    # 3. shots (numbered from `first` in the file; local numbering from here on), long ones split
    shots = scan.shots
    result["num_shots"] = len(shots)
    # 4. detection (a second streaming pass, working size), 5. tracking per shot (working-size boxes)
    detections, quality = _detect(iter_frames(video_path, first, first + num_frames, params.detect_max_side), shots, params, comp)
    tracks: list[tuple[int, Track]] = []
    for s, dets in enumerate(detections):
        for tr in track_faces(dets, params.track_iou, params.track_center_factor, params.track_max_gap):
            if len(tr.frames) >= params.min_track_detections:
                tracks.append((s, tr))
            else:
                result["short_tracks"] += 1
    result["tracks"] = len(tracks)
    if not tracks:
        return skip("no_faces", f"no face track in {video_path} ({num_frames} frames, {len(shots)} shots)")
    # 6. identities: cluster tracks over the whole video (embedding frames decoded on demand)
    emb = _track_embeddings(video_path, first, [tr for _, tr in tracks], params.embed_samples_per_track, comp,
                            params.detect_max_side)  # [N, D]
    n = len(tracks)
    cannot = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            si, ti = tracks[i]
            sj, tj = tracks[j]
            cannot[i, j] = i != j and si == sj and ti.first <= tj.last and tj.first <= ti.last
    labels = cluster_tracks(emb, cannot, comp.threshold)
    # detections per cluster over the video, with their quality: reference candidates
    candidates: dict[int, list[tuple[int, object, object]]] = {}
    for (_, tr), lab in zip(tracks, labels):
        candidates.setdefault(int(lab), []).extend((f, face, quality[id(face)]) for f, face in zip(tr.frames, tr.faces))
    # 7. clips per shot, filters (boxes in displayed pixels); the reference frame of each identity is
    #    chosen from the qualities
    dropped: Counter = Counter()
    gt_path = video_path.with_suffix(".gt.json") if first == 0 and item.end is None and item.seconds is None else Path("/nonexistent")
    kept = []  # (clip_id, (start, end), boxes_by_identity, [(cluster, ref frame, ref face, outside)])
    for s, (start, end) in enumerate(shots):
        length = end - start
        per_cluster: dict[int, list] = {}
        for (ts, tr), lab in zip(tracks, labels):
            if ts != s:
                continue
            seq = per_cluster.setdefault(int(lab), [None] * length)
            for t, box in tr.interpolated_boxes().items():
                seq[t - start] = [round(float(v) / scale, 2) for v in box]
        # identities left to right by mean box centre (a stable, readable order)
        order = sorted(per_cluster, key=lambda c: float(np.mean([(b[0] + b[2]) / 2 for b in per_cluster[c] if b is not None])))
        boxes_by_identity = [per_cluster[c] for c in order]
        reason = _filter_clip(length, boxes_by_identity, params)
        if reason is not None:
            dropped[reason] += 1
            continue
        refs = []
        for c in order:
            cand = sorted(candidates[c], key=lambda fc: fc[0])
            best, outside = choose_reference([f for f, _, _ in cand], [q for _, _, q in cand], (start, end), params.reference_outside_clip)
            refs.append((c, cand[best][0], cand[best][1], outside))
        kept.append((f"{stem}_s{s:02d}", (start, end), boxes_by_identity, refs))
    # 8. reference crops (from full-size frames) and masks (at mask size), written as soon as they are
    #    made, in a third streaming pass that holds one frame, or a window of at most MASK_WINDOW frames
    #    of the clip a segmentation masker masks; a clip's masks go to its file window by window
    refs_at: dict[int, list[tuple[int, int]]] = {}  # frame -> [(clip, identity)] whose reference it is
    for i, (_, _, _, refs) in enumerate(kept):
        for k, (_, f, _, _) in enumerate(refs):
            refs_at.setdefault(f, []).append((i, k))
    clip_at = {t: i for i, (_, (a, b), _, _) in enumerate(kept) for t in range(a, b)} if comp.masker.kind != "box" else {}
    score_masks = gt_path.is_file() and comp.masker.kind == "segmentation"
    mask_scale = 1.0 if params.mask_max_side is None else min(1.0, params.mask_max_side / max(width, height))
    mask_size = (width, height) if mask_scale == 1.0 else (max(1, round(width * mask_scale)), max(1, round(height * mask_scale)))
    mask_files: dict[str, Path] = {}
    mask_rels: dict[int, str] = {}
    writer: StreamedNpz | None = None
    window: list[np.ndarray] = []
    last_needed = max([*refs_at, *clip_at], default=-1) + 1
    try:
        for t, frame in enumerate(iter_frames(video_path, first, first + last_needed) if last_needed else ()):
            for i, k in refs_at.get(t, ()):
                clip_id, _, _, refs = kept[i]
                write_png(out_dir / f"refs/{clip_id}/{k}.png",
                          crop_reference(frame, _scaled_box(refs[k][2].box, 1.0 / scale), params.reference_margin, params.reference_size))
            if t in clip_at:
                i = clip_at[t]
                clip_id, (a, b), boxes_by_identity, _ = kept[i]
                if writer is None:
                    mask_rels[i] = f"masks/{clip_id}.npz"
                    writer = StreamedNpz(out_dir / mask_rels[i], "masks", len(boxes_by_identity), mask_size[::-1], np.bool_)
                window.append(frame if mask_scale == 1.0 else cv2.resize(frame, mask_size, interpolation=cv2.INTER_AREA))
                if len(window) == MASK_WINDOW or t == b - 1:
                    lo = t + 1 - len(window) - a  # the window's first frame, clip-local
                    boxes = [[_scaled_box(x, mask_scale) for x in seq[lo:lo + len(window)]] for seq in boxes_by_identity]
                    writer.append(comp.masker.masks(np.stack(window), boxes))  # [K, w, h, w]
                    window = []
                if t == b - 1:
                    mask_files[clip_id] = writer.close()
                    writer = None
    finally:
        if writer is not None:
            writer.discard()
    for i, (clip_id, (start, end), boxes_by_identity, refs) in enumerate(kept):
        identities = [{"cluster": c, "reference": f"refs/{clip_id}/{k}.png", "reference_frame": first + int(ref_frame),
                       "reference_outside_clip": outside, "boxes": boxes_by_identity[k]}
                      for k, (c, ref_frame, _, outside) in enumerate(refs)]
        row = ManifestClip(
            clip_id=clip_id,
            video=os.path.relpath(video_path.resolve(), out_dir.resolve()),
            start_frame=first + start,
            end_frame=first + end,
            start_time=round(times[start], 6),
            end_time=round(times[start] + shot_duration(times, start, end, 1.0 / fps), 6),
            frame_times=[round(v, 6) for v in times[start:end]],
            fps=fps,
            width=width,
            height=height,
            caption=caption_of(first + start, first + end),
            mask_kind=comp.masker.kind,
            mask_path=mask_rels.get(i),
            identities=identities,
        )
        result["clips"].append(row.model_dump())
    result["dropped"] = dict(sorted(dropped.items()))
    # 9. score against ground truth when present (masks read back one clip at a time)
    if gt_path.is_file():
        with open(gt_path, encoding="utf-8") as f:
            gt = json.load(f)
        result["score"] = score_video(result["clips"], gt, _SavedMasks(mask_files) if score_masks else None)
    result["seconds"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------------------------
# what a worker runs, and the per-video result files


_COMPONENTS: dict[str, Components] = {}


def components(params: CurationParams) -> Components:
    """The face backend and plug-ins of this process, built on its first video."""
    key = params.model_dump_json()
    if key not in _COMPONENTS:
        _COMPONENTS.clear()
        _COMPONENTS[key] = Components(params)
    return _COMPONENTS[key]


def run_one(item: VideoItem, out_dir: Path, params: CurationParams) -> dict:
    """Curate one video and write its result file (in whichever process or Ray worker runs it)."""
    path = result_path(out_dir, item.key)
    result = curate_video(item, out_dir, params, components(params))
    write_json(path, result)
    return result


def failed_result(item: VideoItem, params_fp: str, exc: BaseException) -> dict:
    """The record of a video whose curation raised (or whose worker died): skipped, not saved,
    so the next run tries it again."""
    logger.error("curation of %s failed: %s: %s", item.path, type(exc).__name__, exc)
    return {"version": RESULT_VERSION, "video": item.key, "params": params_fp, "fingerprint": None,
            "status": "skipped", "reason": "failed", "message": f"{type(exc).__name__}: {exc}",
            "num_frames": 0, "num_shots": 0, "clips": [], "dropped": {}, "tracks": 0, "short_tracks": 0, "score": None}


def load_result(path: Path, params_fp: str, item: VideoItem) -> dict | None:
    """A finished per-video result that is still valid for these settings and this file."""
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
    except (OSError, json.JSONDecodeError):
        logger.warning("ignoring unreadable result file %s (will recompute)", path)
        return None
    if res.get("version") != RESULT_VERSION or res.get("params") != params_fp or res.get("fingerprint") != item_fingerprint(item):
        return None
    return res
