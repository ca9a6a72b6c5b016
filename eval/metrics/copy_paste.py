"""copy_paste/R: WithAnyone's copy-paste score (arXiv 2510.14975, MultiID-Bench
`metrics/arcface_metric.py`, `copy_geo`), per identity through face_sim's one-to-one matching.

With theta(a, b) = arccos of the cosine between face embeddings, g a generated face, r the identity's
reference and t a target (another photo of the same person than the reference, from the benchmark's
`targets`): CP = (theta(g, t) - theta(g, r)) / theta(t, r). +1: the generated face sits on the
reference (a copy of the photo); -1: it sits on the target (the person, not the photo); 0: halfway.
Per frame, g is the face matched to reference k by the same Hungarian assignment as face_sim; frames
where identity k has no matched face are skipped (no face is not a copy). Several targets of one
identity: the mean of their scores. Per identity: the mean over its matched frames
(`copy_paste/R/id<k>`); the video's score: the mean over the identities that have one. Aggregated like
every video metric, overall and per identity count K. Missing with the reason where the case has no
targets (OpenS2V-Eval gives none), an identity has none, a target photo has no face, theta(t, r) is
below MIN_ANGLE (the target is the reference photo; MultiID-Bench writes 0 there, here it is missing)
or no identity is ever matched.
"""

from __future__ import annotations

import numpy as np

from eval.context import VideoContext
from eval.face_matching import cosine_matrix
from eval.registry import MetricResult, MetricUnavailable, register
from eval.video_faces import VideoFaces

NAME = "copy_paste"
MIN_ANGLE = 1e-3  # radians; a smaller theta(target, reference) makes the ratio meaningless


def angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """theta [K, N] = arccos of the cosines between rows of a [K, D] and b [N, D], in radians."""
    return np.arccos(np.clip(cosine_matrix(a, b), -1.0, 1.0))


def copy_paste_scores(gen: np.ndarray, ref: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[N] CP of generated faces gen [N, D] against one reference ref [D], averaged over targets
    [T, D]; ValueError when a target is (nearly) the reference."""
    theta_tr = angles(targets, ref[None])[:, 0]  # [T]
    if np.any(theta_tr < MIN_ANGLE):
        raise ValueError(f"theta(target, reference) = {theta_tr.min():.2e} rad < {MIN_ANGLE:g}: the target is the reference photo")
    theta_gt = angles(gen, targets)  # [N, T]
    theta_gr = angles(gen, ref[None])  # [N, 1]
    return ((theta_gt - theta_gr) / theta_tr[None]).mean(axis=1)  # [N]


def summarize(faces: VideoFaces, targets: list[np.ndarray | str]) -> MetricResult:
    """values/missing with keys '' and '/id<k>' (relative to copy_paste/R). targets[k]: identity k's
    target embeddings [T, D], or the reason it has none."""
    out = MetricResult()
    per_id = []
    for k, target in enumerate(targets):
        key = f"/id{k}"
        if isinstance(target, str):
            out.missing[key] = target
            continue
        gen = [faces.embeddings[faces.face_indices(t)[m.face_of_ref[k]]]
               for t, m in enumerate(faces.matches) if m.face_of_ref[k] >= 0]
        if not gen:
            out.missing[key] = f"identity {k} is matched to no face in any of the {faces.n_frames} analysed frames"
            continue
        try:
            scores = copy_paste_scores(np.stack(gen), faces.refs[k], target)  # [matched frames]
        except ValueError as exc:
            out.missing[key] = f"identity {k}: {exc}"
            continue
        out.values[key] = float(scores.mean())
        per_id.append(out.values[key])
    if per_id:
        out.values[""] = float(np.mean(per_id))
    else:
        out.missing[""] = "no identity has a score: " + "; ".join(out.missing.values())
    return out


def target_embeddings(ctx: VideoContext, backend: str) -> list[np.ndarray | str]:
    """Per identity: its target photos' embeddings [T, D] (largest face, as for references), or the
    reason why there are none. MetricUnavailable when the case has no targets at all."""
    case = ctx.case
    if not case.targets:
        raise MetricUnavailable(f"case {case.case_id!r} has no targets (other photos of its people; the benchmark "
                                "line has no 'targets'), so copy-paste cannot be measured")
    out: list[np.ndarray | str] = []
    for k, paths in enumerate(case.targets):
        if not paths:
            out.append(f"identity {k} has no target photo in the benchmark")
            continue
        try:
            out.append(np.stack([ctx.analyzers.reference_embedding(backend, p) for p in paths]))
        except MetricUnavailable as exc:
            out.append(f"identity {k}: target photo unusable: {exc}")
    return out


@register(NAME)
def compute(ctx: VideoContext) -> MetricResult:
    result = MetricResult()
    for backend in ctx.params.face_backends:
        name = f"{NAME}/{backend}"
        try:
            faces = ctx.faces(backend)  # first: an unavailable backend is the reason, not its targets
            part = summarize(faces, target_embeddings(ctx, backend))
        except MetricUnavailable as exc:
            result.missing[name] = str(exc)
            continue
        result.values.update({name + s: v for s, v in part.values.items()})
        result.missing.update({name + s: v for s, v in part.missing.items()})
    return result
