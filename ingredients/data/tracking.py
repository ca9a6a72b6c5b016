"""Face tracking within a shot: link per-frame detections into tracks by IoU / centre distance.

Each step solves a one-to-one assignment (Hungarian) between the open tracks' last
boxes and the new detections, on pairs that overlap enough (IoU) or whose centres are close
relative to the face size. Tracks survive `max_gap` detection steps without a match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ingredients.faces.base import Face, box_iou


@dataclass
class Track:
    """One face followed through a shot; frames are absolute video frame indices, ascending."""

    frames: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    def boxes(self) -> np.ndarray:
        return np.stack([f.box for f in self.faces])  # [N, 4]

    def interpolated_boxes(self) -> dict[int, np.ndarray]:
        """A box for every frame from first to last detection, linear between detections."""
        frames = np.asarray(self.frames)
        boxes = self.boxes()
        out = {}
        for t in range(self.first, self.last + 1):
            out[t] = np.array([np.interp(t, frames, boxes[:, j]) for j in range(4)])
        return out


def _centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ca = (a[:, None, :2] + a[:, None, 2:]) / 2
    cb = (b[None, :, :2] + b[None, :, 2:]) / 2
    return np.linalg.norm(ca - cb, axis=-1)  # [N, M]


def _sizes(b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))


def track_faces(
    detections: list[tuple[int, list[Face]]],
    iou_threshold: float = 0.3,
    centre_factor: float = 0.5,
    max_gap: int = 2,
) -> list[Track]:
    """Link detections [(frame, faces), ...] (frames ascending, one shot) into tracks.

    A detection may continue an open track when IoU >= iou_threshold or the centre distance is
    below centre_factor x the mean face size of the pair. Cost = (1 - IoU) + distance / size; the
    assignment is optimal per step. A track closes after `max_gap` detection steps unmatched.
    Returns tracks ordered by first frame, then by box x.
    """
    open_tracks: list[tuple[Track, int]] = []  # (track, steps since last match)
    closed: list[Track] = []
    for frame, faces in detections:
        boxes = np.stack([f.box for f in faces]) if faces else np.zeros((0, 4))
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        if open_tracks and len(faces):
            last = np.stack([t.faces[-1].box for t, _ in open_tracks])
            iou = box_iou(last, boxes)
            dist = _centre_distance(last, boxes)
            size = (_sizes(last)[:, None] + _sizes(boxes)[None, :]) / 2
            ok = (iou >= iou_threshold) | (dist <= centre_factor * np.maximum(size, 1e-6))
            cost = (1.0 - iou) + dist / np.maximum(size, 1e-6)
            cost = np.where(ok, cost, 1e6)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if ok[r, c]:
                    open_tracks[r][0].frames.append(frame)
                    open_tracks[r][0].faces.append(faces[c])
                    matched_tracks.add(r)
                    matched_dets.add(c)
        still_open = []
        for i, (track, gap) in enumerate(open_tracks):
            gap = 0 if i in matched_tracks else gap + 1
            if gap <= max_gap:
                still_open.append((track, gap))
            else:
                closed.append(track)
        open_tracks = still_open
        for j, face in enumerate(faces):
            if j not in matched_dets:
                open_tracks.append((Track(frames=[frame], faces=[face]), 0))
    closed.extend(t for t, _ in open_tracks)
    closed.sort(key=lambda t: (t.first, float(t.faces[0].box[0])))
    return closed
