"""Where an evaluation run keeps its files (one place, so writers and readers agree).

    OUT/params.json                              resolved eval params of the run
    OUT/sources.json                             {"benchmark": path, "methods": {name: folder}}
    OUT/per_video.jsonl                          one record per (method, case)
    OUT/metrics.json                             {method: {metric: value}}, from per_video.jsonl
    OUT/missing.json                             {method: {metric: reason}} for aggregates
    OUT/cache/<method>/<case_id>.json            {"fingerprint", "record"}: resume cache
    OUT/cache/<method>/<case_id>.faces.safetensors   per-video face analysis (fid_face, report)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ingredients.files.atomic import atomic_path
from eval.video_faces import VideoFaces


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.json"

    @property
    def sources(self) -> Path:
        return self.root / "sources.json"

    @property
    def per_video(self) -> Path:
        return self.root / "per_video.jsonl"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def missing(self) -> Path:
        return self.root / "missing.json"

    def cache_record(self, method: str, case_id: str) -> Path:
        return self.root / "cache" / method / f"{case_id}.json"

    def cache_faces(self, method: str, case_id: str) -> Path:
        return self.root / "cache" / method / f"{case_id}.faces.safetensors"


def read_records(path: Path) -> list[dict]:
    """Per-video records from a JSONL file, validated; errors name the line."""
    if not path.is_file():
        raise FileNotFoundError(f"per-video records not found: {path}")
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
        if not isinstance(rec, dict) or not {"method", "case_id", "metrics", "missing"} <= set(rec):
            raise ValueError(f"{path}:{lineno}: a record needs 'method', 'case_id', 'metrics' and 'missing'")
        records.append(rec)
    return records


def save_faces(path: Path, analyses: dict[str, VideoFaces]) -> None:
    """Store face analyses by backend (atomically); removes a stale file when there are none."""
    if not analyses:
        path.unlink(missing_ok=True)
        return
    tensors: dict[str, np.ndarray] = {}
    for backend, faces in sorted(analyses.items()):
        tensors.update(faces.to_tensors(f"faces/{backend}/"))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_faces(path: Path) -> dict[str, VideoFaces]:
    """Face analyses by backend from a file written by `save_faces` ({} when absent)."""
    if not path.is_file():
        return {}
    tensors = load_file(str(path))
    backends = sorted({k.split("/")[1] for k in tensors if k.startswith("faces/")})
    return {b: VideoFaces.from_tensors(tensors, f"faces/{b}/", b) for b in backends}
