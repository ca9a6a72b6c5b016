"""routing_acc: agreement of the ID router's argmax with a ground-truth identity mask (intrinsic; only
for methods that export routing maps together with the truth).

Generated videos have no ground truth, so for the sampling stage's files (routing logits only) this
metric is missing with that reason: the router's accuracy against ground truth is measured by the
training stage on held-out clips (`val_log.csv`), and `routing_consistency` compares the router with
the faces found in the generated video itself (a self-consistency measure, with its coverage).

File format: `{case_id}.routing.safetensors` beside the video, holding
- `routing.<n>`: float [..., K] routing logits or probabilities at injection point n (n = 0, 1, ...),
  K = number of references of the case, leading dims = the token layout (e.g. [T] or [F, h, w]);
- `index_mask`: int [...] with the same leading shape, values -1 (background, ignored) or 0..K-1
  (the identity whose face region the token lies in); `index_mask.<n>` overrides it per point.
Per point: accuracy over labelled tokens (`routing_acc/<n>`); `routing_acc` is the mean over points.
Missing when the file is absent or has no labelled token; a malformed file is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from eval.context import VideoContext
from eval.registry import MetricResult, MetricUnavailable, register

_POINT = re.compile(r"^routing\.(\d+)$")


def routing_accuracy(routing: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of labelled tokens (mask >= 0) where argmax over the last axis equals the mask;
    None when no token is labelled."""
    labelled = mask >= 0
    if not labelled.any():
        return None
    return float(np.mean(routing.argmax(axis=-1)[labelled] == mask[labelled]))


def routing_points(tensors: dict[str, np.ndarray], path: Path) -> dict[int, str]:
    """{injection point n: key} of the `routing.<n>` tensors of a routing file."""
    points = {int(m.group(1)): key for key in tensors if (m := _POINT.match(key))}
    if not points:
        raise ValueError(f"{path}: no 'routing.<n>' tensors (keys: {sorted(tensors)}); see eval/metrics/routing_acc.py")
    return dict(sorted(points.items()))


def has_truth(path: Path) -> bool:
    """Whether a routing file carries a ground-truth index mask."""
    with safe_open(str(path), framework="numpy") as f:
        return any(key == "index_mask" or key.startswith("index_mask.") for key in f.keys())


def read_routing(path: Path, n_refs: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{point: (routing [..., K], mask [...])} from a routing file, validated."""
    tensors = load_file(str(path))
    points = routing_points(tensors, path)
    out = {}
    for n, key in sorted(points.items()):
        mask_key = f"index_mask.{n}" if f"index_mask.{n}" in tensors else "index_mask"
        if mask_key not in tensors:
            raise ValueError(f"{path}: no 'index_mask' (or '{mask_key}') for {key}")
        routing, mask = tensors[key], tensors[mask_key]
        if routing.shape[-1] != n_refs:
            raise ValueError(f"{path}: {key} has {routing.shape[-1]} identities on its last axis, the case has {n_refs} references")
        if mask.shape != routing.shape[:-1]:
            raise ValueError(f"{path}: {mask_key} shape {mask.shape} must equal {key} shape without its last axis {routing.shape[:-1]}")
        if not np.issubdtype(mask.dtype, np.integer) or mask.min() < -1 or mask.max() >= n_refs:
            raise ValueError(f"{path}: {mask_key} must be integers in [-1, {n_refs - 1}], got {mask.dtype} in [{mask.min()}, {mask.max()}]")
        out[n] = (routing, mask)
    return out


def routing_file(ctx: VideoContext) -> Path:
    """The video's routing file; MetricUnavailable when the method wrote none."""
    path = ctx.routing_path
    if not path.is_file():
        raise MetricUnavailable(f"no routing maps for this method ({path.name} not in {path.parent})")
    return path


@register("routing_acc")
def compute(ctx: VideoContext) -> MetricResult:
    path = routing_file(ctx)
    if not has_truth(path):
        raise MetricUnavailable(
            f"{path.name} holds no ground-truth index mask (a generated video has none); see routing_consistency "
            "(self-consistency with the faces found in the video) and the training stage's held-out routing_acc")
    result = MetricResult()
    accs = []
    for n, (routing, mask) in read_routing(path, len(ctx.case.references)).items():
        acc = routing_accuracy(routing, mask)
        if acc is None:
            result.missing[f"routing_acc/{n}"] = f"{path.name}: no labelled token at injection point {n}"
            continue
        result.values[f"routing_acc/{n}"] = acc
        accs.append(acc)
    if accs:
        result.values["routing_acc"] = float(np.mean(accs))
    else:
        result.missing["routing_acc"] = f"{path.name}: no labelled token at any injection point"
    return result
