"""routing_consistency: agreement of the ID router's argmax with the faces found in the generated video
itself — a self-consistency measure, not accuracy against ground truth (a generated video has none).

Input: `{case_id}.routing.safetensors` written by the sampling stage (`routing.<n>`: logits
[T, h, w, K] on the latent token grid; `token_geometry`: int [3] = the VAE's spatial and temporal
factors and the patch size, how tokens map to pixels). The "labels" are the boxes of the faces that the first configured face backend matched
one-to-one to each reference above its verification threshold, in every frame; they are pooled to
tokens exactly as training pools its face masks (`ingredients.data.index_mask`). Values:
`routing_consistency/<n>` per injection point, `routing_consistency` (mean over points) and its
coverage, `routing_consistency/labelled_share` (the share of tokens that got a label). Missing with
the reason when no face of any reference was found (nothing to compare with).
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.numpy import load_file

from eval.context import VideoContext
from eval.metrics.routing_acc import routing_accuracy, routing_file, routing_points
from eval.registry import MetricResult, MetricUnavailable, register
from eval.video_faces import VideoFaces
from ingredients.data.index_mask import index_mask_from_masks

GEOMETRY_KEY = "token_geometry"


def matched_face_masks(faces: VideoFaces, num_frames: int, height: int, width: int, stride: int) -> np.ndarray:
    """bool [K, F, H, W]: the boxes of the faces matched to each reference (above threshold).

    Analysed frame t is video frame t * stride; the frames up to the next analysed one hold its boxes.
    """
    masks = np.zeros((len(faces.refs), num_frames, height, width), dtype=bool)
    for t, match in enumerate(faces.matches):
        boxes = faces.frame_boxes(t)
        first, last = t * stride, min((t + 1) * stride, num_frames)
        for k, j in enumerate(match.face_of_ref):
            if j >= 0 and match.score[k] >= faces.threshold:
                x0, y0, x1, y1 = (max(int(round(v)), 0) for v in boxes[j])
                masks[k, first:last, y0:y1, x0:x1] = True
    return masks


@register("routing_consistency")
def compute(ctx: VideoContext) -> MetricResult:
    path = routing_file(ctx)
    tensors = load_file(str(path))
    if GEOMETRY_KEY not in tensors or tensors[GEOMETRY_KEY].shape != (3,):
        raise MetricUnavailable(f"{path.name}: no '{GEOMETRY_KEY}' [spatial, temporal, patch] tensor: cannot map tokens to pixels")
    spatial, temporal, patch = (int(v) for v in tensors[GEOMETRY_KEY])
    points = routing_points(tensors, path)
    if not ctx.params.face_backends:
        raise MetricUnavailable("eval.face_backends is empty: no faces to compare the routing with")
    backend = ctx.params.face_backends[0]
    faces = ctx.faces(backend)  # MetricUnavailable when the backend or a reference face is missing
    num_frames, height, width = ctx.frames.shape[:3]
    masks = matched_face_masks(faces, num_frames, height, width, ctx.params.face_frame_stride)
    index = index_mask_from_masks(torch.from_numpy(masks), spatial, temporal, patch).numpy()  # [T*h*w]
    result = MetricResult()
    values = []
    for n, key in points.items():
        routing = tensors[key]  # [T, h, w, K]
        if routing.shape[-1] != len(ctx.case.references) or int(np.prod(routing.shape[:-1])) != index.size:
            raise MetricUnavailable(
                f"{path.name}: {key} has shape {routing.shape}, but the video ({num_frames} x {height} x {width} read, "
                f"eval.max_frames={ctx.params.max_frames}) gives {index.size} tokens and the case "
                f"{len(ctx.case.references)} references")
        value = routing_accuracy(routing.reshape(-1, routing.shape[-1]), index)
        if value is not None:
            result.values[f"routing_consistency/{n}"] = value
            values.append(value)
    if not values:
        raise MetricUnavailable(f"no face of any reference was found (backend {backend!r}) in the generated video: "
                                "no token to compare the routing with")
    result.values["routing_consistency"] = float(np.mean(values))
    result.values["routing_consistency/labelled_share"] = float(np.mean(index >= 0))
    return result
