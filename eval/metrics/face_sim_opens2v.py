"""face_sim_opens2v/R: OpenS2V-Eval's FaceSim-Cur protocol, a labelled variant so a number can be set
beside the OpenS2V leaderboard (its `eval/get_facesim.py`). Our one-to-one matched face_sim stays
the primary score.

Protocol, as OpenS2V's code does it:
- 32 frames at `np.linspace(0, F - 1, 32, dtype=int)` (the cast truncates) over the F frames read
  (eval.max_frames caps F); a video shorter than 32 frames repeats frames, which count repeatedly.
- per frame the largest face by box area (the last one on ties); when the detector finds none, the
  frame is padded by 25 % grey on each side and searched again (as OpenS2V does for frames).
- frame score max(0, cosine(reference, face)); frames without a face are skipped, and frames whose
  clipped score is exactly 0 are dropped too (OpenS2V keeps a score only `if cur_score != 0.0`).
- the video's score: the mean over the kept frames.
Differences, stated: detector and recognizer are backend R of eval.face_backends (CurricularFace,
OpenS2V's "Cur", where configured; dlib here), not OpenS2V's insightface detector + IR-101 with its
224 -> 112 crop; a face found only after padding is embedded from the padded frame (OpenS2V aligns
the unpadded frame with shifted keypoints, so its out-of-frame border is black, not grey). Where
no frame is kept OpenS2V writes 0.0; here the value is missing with the reason (ours: faceless
missing), and beside it `face_sim_opens2v/R/faceless_as_0` is OpenS2V's own aggregation: the same
value, and 0.0 where OpenS2V writes 0.0 (no kept frame), so its mean over the videos is the number
their leaderboard averages (`eval/leaderboard.py` writes it in their CSV layout). Labelled, never the
primary score.
Frames the face analysis already covered (every eval.face_frame_stride-th) reuse it; the others
are analysed here.

References: OpenS2V scores only the first face reference of a case (multi-face cases are never
scored). Here every reference k gets the protocol score against the same largest face,
`face_sim_opens2v/R/id<k>` (per video, not aggregated), and `face_sim_opens2v/R` is the FIRST
reference's score: the protocol value. For K > 1 it measures only whether the largest face is the
first identity; it says nothing about the others (that is what face_sim measures).
"""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.face_matching import cosine_matrix
from eval.registry import MetricResult, MetricUnavailable, register
from eval.video_faces import VideoFaces, largest_box_index, largest_face_embedding

NUM_FRAMES = 32
NAME = "face_sim_opens2v"
OPENS2V_AGGREGATION = "/faceless_as_0"  # suffix of the value in OpenS2V's aggregation (no kept frame = 0.0)


def sample_indices(total: int, num: int = NUM_FRAMES) -> np.ndarray:
    """OpenS2V's frame indices: np.linspace(0, total - 1, num, dtype=int) (truncation, repeats for short videos)."""
    if total < 1:
        raise ValueError(f"sample_indices: a video needs at least 1 frame, got {total}")
    return np.linspace(0, total - 1, num, dtype=int)


def analysed_largest(faces: VideoFaces, t: int) -> np.ndarray | None:
    """Embedding [D] of the largest face (box area) in analysed frame t, or None."""
    idx = faces.face_indices(t)
    i = largest_box_index(faces.boxes[idx])
    return None if i is None else faces.embeddings[idx[i]]


def protocol_scores(refs: np.ndarray, largest: list[np.ndarray | None]) -> list[tuple[float | None, str]]:
    """Per reference k: (mean of the kept clipped scores, or None, with the reason why) over the
    sampled frames' largest-face embeddings (None = no face in that frame)."""
    embs = [e for e in largest if e is not None]
    if not embs:
        reason = f"no face in any of the {len(largest)} sampled frames (OpenS2V would write 0.0)"
        return [(None, reason)] * len(refs)
    clipped = np.maximum(cosine_matrix(refs, np.stack(embs)), 0.0)  # [K, frames with a face]
    out = []
    for k, row in enumerate(clipped):
        kept = row[row != 0.0]
        if kept.size:
            out.append((float(kept.mean()), ""))
        else:
            out.append((None, f"the largest face of all {row.size} sampled frames with a face has cosine <= 0 with "
                              f"reference {k} (OpenS2V drops 0 scores and would write 0.0)"))
    return out


def sampled_largest_faces(ctx: VideoContext, backend: str, faces: VideoFaces) -> list[np.ndarray | None]:
    """The largest-face embedding of each of the 32 sampled frames (None: no face, also after padding)."""
    stride = ctx.params.face_frame_stride
    found: dict[int, np.ndarray | None] = {}
    for i in sample_indices(len(ctx.frames)).tolist():
        if i in found:
            continue
        analysed = i % stride == 0 and i // stride < faces.n_frames
        emb = analysed_largest(faces, i // stride) if analysed else None
        if emb is None:  # not analysed, or no face there: detect (again) with the padded retry
            emb = largest_face_embedding(ctx.analyzers.get(backend), ctx.frames[i], plain=not analysed)
        found[i] = emb
    return [found[i] for i in sample_indices(len(ctx.frames)).tolist()]


def summarize(refs: np.ndarray, largest: list[np.ndarray | None], name: str) -> MetricResult:
    """`name` (first reference: the protocol value) and `name/id<k>` values, or missing with reasons."""
    result = MetricResult()
    for k, (value, reason) in enumerate(protocol_scores(refs, largest)):
        key = f"{name}/id{k}"
        if value is None:
            result.missing[key] = reason
        else:
            result.values[key] = value
    if f"{name}/id0" in result.values:
        result.values[name] = result.values[f"{name}/id0"]
    else:
        result.missing[name] = result.missing[f"{name}/id0"]
    result.values[name + OPENS2V_AGGREGATION] = result.values.get(name, 0.0)  # OpenS2V writes 0.0 there
    return result


@register(NAME)
def compute(ctx: VideoContext) -> MetricResult:
    result = MetricResult()
    for backend in ctx.params.face_backends:
        name = f"{NAME}/{backend}"
        try:
            faces = ctx.faces(backend)
            result.update(summarize(faces.refs, sampled_largest_faces(ctx, backend, faces), name))
        except MetricUnavailable as exc:
            result.missing[name] = str(exc)
    return result
