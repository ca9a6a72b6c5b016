"""face_sim_max/R: FaceSim in the authors' protocol (feizc/Ingredients `metric/face_sim_fid.py`,
`get_face_sim_and_fid`), kept to set numbers beside the paper's.

The protocol, line by line of that script:
- frames: `np.linspace(0, total_frames - 1, 24, dtype=int)` (`sample_video_frames`, lines 27-39;
  total = the frames read here, which eval.max_frames caps; a short video repeats frames).
- references: the largest face of each reference photo, retried on the grey-padded photo
  (`process_image`, lines 41-67), the same embedding as face_sim's references.
- per frame: all detected faces sorted by box area, the 2 largest kept (`get_face_keypoints2`,
  `sorted(...)[-2:]`, lines 70-74; a stable sort, so among equal areas the later detections), no
  padded retry for frames.
- frame score: the maximum cosine over all (reference, kept face) pairs, not clamped
  (`cosine_similarity`, lines 152-160); the video's score: the plain mean over the 24 frames
  (line 241).
- detector and recognizer: insightface's `FaceAnalysis` prepared at `det_size=(320, 320)` (line 174)
  for the references and the frames alike, and its ArcFace embedding; the script loads a
  CurricularFace model but never scores with it (`cur_scores` stays empty), so no paper number is a
  max-over-pairs CurricularFace score.
Which backend gives what:
- `face_sim_max/insightface` is the protocol: this metric detects the references and the 24 frames
  with the insightface backend at det_size 320 (a second analyzer from the same model files when
  eval.face_backend_options sets another det_size; the face analysis of the other metrics keeps its
  own). The recognizer is the one in the backend's model folder: the script's `FaceAnalysis(root=...)`
  names no pack, so insightface loads its default pack `buffalo_l` (det_10g + w600k_r50); point
  `model_dir` / `detector_file` / `recognizer_file` there for the paper's exact numbers (antelopev2,
  the default here, is the pack the authors' model conditions on).
- `face_sim_max/R` for any other R (dlib, curricularface) is a variant: the protocol's frames and
  aggregation with R's own detector and recognizer, not a number the script produces.
Where the script has no value: a sampled frame without a face makes it raise (`len(None)` at line
113, then `max([])`), so here such a video's face_sim_max is missing with that reason rather than a
number the script never produces. One well-rendered identity hides a missing or blended second one:
face_sim (one-to-one matching) is primary.
"""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.face_matching import cosine_matrix
from eval.registry import MetricResult, MetricUnavailable, register
from eval.video_faces import VideoFaces, embed_face

NAME = "face_sim_max"
NUM_FRAMES = 24  # sample_video_frames(video_path, num_frames=24)
FACES_PER_FRAME = 2  # get_face_keypoints2: sorted(face_info, key=area)[-2:]
PROTOCOL_BACKEND = "insightface"  # FaceAnalysis's ArcFace embedding
PROTOCOL_DET_SIZE = 320  # face_arc_model.prepare(ctx_id=0, det_size=(320, 320))


def sample_indices(total: int, num: int = NUM_FRAMES) -> np.ndarray:
    """The script's frame indices: np.linspace(0, total - 1, num, dtype=int)."""
    if total < 1:
        raise ValueError(f"sample_indices: a video needs at least 1 frame, got {total}")
    return np.linspace(0, total - 1, num, dtype=int)


def largest_two(boxes: np.ndarray) -> np.ndarray:
    """Indices of the FACES_PER_FRAME largest boxes [N, 4] by area, as `sorted(..., key=area)[-2:]`
    (stable ascending sort, the last two)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.argsort(area, kind="stable")[-FACES_PER_FRAME:]


def protocol_score(refs: np.ndarray, frames: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over frames of the max cosine between refs [K, D] and the frame's 2 largest faces;
    frames: per sampled frame (boxes [N, 4], embeddings [N, D]). ValueError naming the first frame
    without a face (the script raises there)."""
    scores = []
    for i, (boxes, embs) in enumerate(frames):
        if len(boxes) == 0:
            raise ValueError(f"sampled frame {i} of {len(frames)} has no face")
        keep = largest_two(boxes)
        scores.append(float(cosine_matrix(refs, np.asarray(embs)[keep]).max()))
    return float(np.mean(scores))


def faceless_reason(exc: ValueError) -> str:
    return f"{exc}: the authors' script raises on a faceless frame (len(None)), so it has no value"


def summarize(faces: VideoFaces) -> dict[str, float]:
    """{'': the protocol score} over a face analysis that covered every frame (stride 1);
    MetricUnavailable where a sampled frame has no face."""
    frames = []
    for i in sample_indices(faces.n_frames).tolist():
        idx = faces.face_indices(i)
        frames.append((faces.boxes[idx], faces.embeddings[idx]))
    try:
        return {"": protocol_score(faces.refs, frames)}
    except ValueError as exc:
        raise MetricUnavailable(faceless_reason(exc)) from exc


def detected_faces(analyzer, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [N, 4], embeddings [N, D]) of every face `analyzer` finds in `frame`."""
    detected = analyzer.detect(frame)
    boxes = np.array([f.box for f in detected], dtype=np.float32).reshape(-1, 4)
    embs = np.array([embed_face(analyzer, frame, f) for f in detected], dtype=np.float32)
    return boxes, embs.reshape(len(detected), -1)


def sampled_frame_faces(ctx: VideoContext, backend: str, faces: VideoFaces | None,
                        analyzer=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes, embeddings) of every face in each of the 24 sampled frames: from the face analysis
    `faces` where it covered the frame (every eval.face_frame_stride-th), else detected here by
    `analyzer` (default: the backend's)."""
    stride = ctx.params.face_frame_stride
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i in sample_indices(len(ctx.frames)).tolist():
        if i in found:
            continue
        if faces is not None and i % stride == 0 and i // stride < faces.n_frames:
            idx = faces.face_indices(i // stride)
            found[i] = (faces.boxes[idx], faces.embeddings[idx])
        else:
            found[i] = detected_faces(analyzer or ctx.analyzers.get(backend), ctx.frames[i])
    return [found[i] for i in sample_indices(len(ctx.frames)).tolist()]


def protocol_inputs(ctx: VideoContext, backend: str) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(reference embeddings [K, D], faces of the 24 sampled frames) for `backend`; for the protocol's
    backend, detected at det_size 320 (the configured face analysis is reused only when it runs at
    320 already)."""
    if backend == PROTOCOL_BACKEND:
        analyzer = ctx.analyzers.get(backend, det_size=PROTOCOL_DET_SIZE)
        if analyzer is not ctx.analyzers.get(backend):
            refs = np.stack([ctx.analyzers.reference_embedding(backend, p, det_size=PROTOCOL_DET_SIZE)
                             for p in ctx.case.references])
            return refs, sampled_frame_faces(ctx, backend, None, analyzer)
    faces = ctx.faces(backend)
    return faces.refs, sampled_frame_faces(ctx, backend, faces)


@register(NAME)
def compute(ctx: VideoContext) -> MetricResult:
    result = MetricResult()
    for backend in ctx.params.face_backends:
        name = f"{NAME}/{backend}"
        try:
            result.values[name] = protocol_score(*protocol_inputs(ctx, backend))
        except MetricUnavailable as exc:
            result.missing[name] = str(exc)
        except ValueError as exc:
            result.missing[name] = faceless_reason(exc)
    return result
