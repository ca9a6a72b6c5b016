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
from pathlib import Path

import numpy as np

from ingredients.files.atomic import write_json, write_npz, write_png
from ingredients.data.captions import CaptionError, build_captioner
from ingredients.data.clustering import cluster_tracks
from ingredients.data.curation_params import CurationParams
from ingredients.data.manifest import ManifestClip
from ingredients.data.masks import build_masker
from ingredients.data.reference_crop import choose_reference, crop_reference, face_quality
from ingredients.data.scoring import score_video
from ingredients.data.shots import detect_shots
from ingredients.data.tracking import Track, track_faces
from ingredients.data.sources import VideoItem
from ingredients.files.video_io import VideoReadError, read_video, video_rate

logger = logging.getLogger(__name__)

RESULT_VERSION = 1
# clip drop reasons, in the order the filters are applied
CLIP_DROP_REASONS = ("too_short", "no_faces", "too_many_identities", "face_too_small", "briefly_visible")
# video skip reasons
VIDEO_SKIP_REASONS = ("empty_video", "corrupt_video", "range_past_end", "missing_caption", "unreadable_sidecar", "no_faces", "failed")


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


def _detect(frames: np.ndarray, shots: list[tuple[int, int]], params: CurationParams, comp: Components):
    """Per shot: [(frame, faces)] at the detection stride, always including each shot's last frame."""
    per_shot = []
    for start, end in shots:
        idx = list(range(start, end, params.detect_stride))
        if idx[-1] != end - 1:
            idx.append(end - 1)
        per_shot.append([(t, comp.analyzer.detect(frames[t])) for t in idx])
    return per_shot


def _track_embedding(frames: np.ndarray, track: Track, samples: int, comp: Components) -> np.ndarray:
    pick = np.unique(np.linspace(0, len(track.frames) - 1, min(samples, len(track.frames))).round().astype(int))
    vecs = np.stack([comp.embed(frames[track.frames[i]], track.faces[i]) for i in pick])  # [S, D]
    mean = vecs.mean(0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


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


def curate_video(item: VideoItem | Path, out_dir: Path, params: CurationParams, comp: Components) -> dict:
    """Curate one video (or the frame range of it that its source names); returns its result record
    (clips as manifest-row dicts with frames numbered in the source video, drop counts, timing)."""
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

    # 1. decode (the item's frame range; a range in seconds is turned into frames with the container's rate)
    try:
        first, last = item.start, item.end
        if item.seconds is not None:
            fps = video_rate(video_path)
            first, last = int(round(item.seconds[0] * fps)), None if item.seconds[1] is None else int(round(item.seconds[1] * fps))
        frames, fps = read_video(video_path, first, last)  # [T, H, W, 3]
    except VideoReadError as e:
        if item.where is not None and video_path.stat().st_size > 0 and "no decodable frames" in str(e):
            return skip("range_past_end", f"{item.where}: the range starts past the end of {video_path}; fix start/end")
        return skip("empty_video" if video_path.stat().st_size == 0 else "corrupt_video", str(e))
    num_frames, height, width = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    if last is not None and first + num_frames < last:
        return skip("range_past_end", f"{item.where or video_path}: the range [{first}, {last}) ends past the video "
                    f"({first + num_frames} frames in {video_path}); set end <= {first + num_frames} or leave it out")
    result["num_frames"] = num_frames
    # 2. caption: the source's (a list line, a captions file), else the captioner's (sidecar)
    try:
        caption_of = (lambda a, b: item.caption) if item.caption else (lambda a, b: comp.captioner.caption(video_path, a, b))
        caption_of(first, first + num_frames)
    except CaptionError as e:
        return skip(e.reason, str(e))
    # 3. shots (frames numbered from `first` in the file; local numbering from here on)
    shots = detect_shots(video_path, num_frames, params.shot_detector, params.shot_threshold, params.adaptive_threshold,
                         params.min_scene_frames, start=first)
    result["num_shots"] = len(shots)
    # 4. detection, 5. tracking per shot
    detections = _detect(frames, shots, params, comp)
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
    # 6. identities: cluster tracks over the whole video
    emb = np.stack([_track_embedding(frames, tr, params.embed_samples_per_track, comp) for _, tr in tracks])  # [N, D]
    n = len(tracks)
    cannot = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            si, ti = tracks[i]
            sj, tj = tracks[j]
            cannot[i, j] = i != j and si == sj and ti.first <= tj.last and tj.first <= ti.last
    labels = cluster_tracks(emb, cannot, comp.threshold)
    # detections per cluster over the video: reference candidates
    candidates: dict[int, list[tuple[int, object]]] = {}
    for (_, tr), lab in zip(tracks, labels):
        candidates.setdefault(int(lab), []).extend(zip(tr.frames, tr.faces))
    # 7. clips per shot, filters
    dropped: Counter = Counter()
    gt_path = video_path.with_suffix(".gt.json") if first == 0 and item.end is None and item.seconds is None else Path("/nonexistent")
    clip_masks: dict[str, np.ndarray] = {}
    for s, (start, end) in enumerate(shots):
        length = end - start
        per_cluster: dict[int, list] = {}
        for (ts, tr), lab in zip(tracks, labels):
            if ts != s:
                continue
            seq = per_cluster.setdefault(int(lab), [None] * length)
            for t, box in tr.interpolated_boxes().items():
                seq[t - start] = [round(float(v), 2) for v in box]
        # identities left to right by mean box centre (a stable, readable order)
        order = sorted(per_cluster, key=lambda c: float(np.mean([(b[0] + b[2]) / 2 for b in per_cluster[c] if b is not None])))
        boxes_by_identity = [per_cluster[c] for c in order]
        reason = _filter_clip(length, boxes_by_identity, params)
        if reason is not None:
            dropped[reason] += 1
            continue
        clip_id = f"{stem}_s{s:02d}"
        caption = caption_of(first + start, first + end)
        identities = []
        for k, c in enumerate(order):
            cand = sorted(candidates[c], key=lambda fc: fc[0])
            quals = [face_quality(frames[f], face) for f, face in cand]
            best, outside = choose_reference([f for f, _ in cand], quals, (start, end), params.reference_outside_clip)
            ref_frame, ref_face = cand[best]
            ref_rel = f"refs/{clip_id}/{k}.png"
            write_png(out_dir / ref_rel, crop_reference(frames[ref_frame], ref_face.box, params.reference_margin, params.reference_size))
            identities.append({"cluster": c, "reference": ref_rel, "reference_frame": first + int(ref_frame),
                               "reference_outside_clip": outside, "boxes": per_cluster[c]})
        mask_rel = None
        masks = comp.masker.masks(frames[start:end], [[None if b is None else np.asarray(b) for b in seq] for seq in boxes_by_identity])
        if masks is not None:
            mask_rel = f"masks/{clip_id}.npz"
            write_npz(out_dir / mask_rel, masks=masks)
            clip_masks[clip_id] = masks
        row = ManifestClip(
            clip_id=clip_id,
            video=os.path.relpath(video_path.resolve(), out_dir.resolve()),
            start_frame=first + start,
            end_frame=first + end,
            fps=fps,
            width=width,
            height=height,
            caption=caption,
            mask_kind=comp.masker.kind,
            mask_path=mask_rel,
            identities=identities,
        )
        result["clips"].append(row.model_dump())
    result["dropped"] = dict(sorted(dropped.items()))
    # 8. score against ground truth when present
    if gt_path.is_file():
        with open(gt_path, encoding="utf-8") as f:
            gt = json.load(f)
        result["score"] = score_video(result["clips"], gt, clip_masks if comp.masker.kind == "segmentation" else None)
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
