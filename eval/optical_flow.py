"""Dense optical flow between consecutive frames: OpenCV Farneback (default, no weights) or
torchvision RAFT (only with a local weights file; never downloaded)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from eval.registry import MetricUnavailable
from ingredients.files.weights_file import read_weights

logger = logging.getLogger(__name__)

# OpenCV's commonly used Farneback settings (pyramid 0.5, 3 levels, window 15, 3 iterations, poly 5/1.2).
FARNEBACK_ARGS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def farneback_flow(frames: np.ndarray) -> np.ndarray:
    """Flow [F-1, H, W, 2] (dx, dy in pixels) between consecutive uint8 RGB frames [F, H, W, 3]."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK_ARGS) for a, b in zip(gray[:-1], gray[1:])]
    if not flows:
        return np.zeros((0, *frames.shape[1:3], 2), dtype=np.float32)
    return np.stack(flows).astype(np.float32)


@functools.lru_cache(maxsize=2)
def load_raft(model_name: str, weights: str | None) -> torch.nn.Module:
    """torchvision RAFT (`raft_small` or `raft_large`) with a local state dict; MetricUnavailable when
    no weights file is configured or found."""
    from torchvision.models import optical_flow

    if weights is None:
        raise MetricUnavailable(
            "flow.method is 'raft' but flow.raft_weights is not set; download torchvision's "
            f"{model_name} weights (e.g. Raft_Small_Weights.DEFAULT.url) and give the file path"
        )
    path = Path(weights)
    if not path.is_file():
        raise MetricUnavailable(f"RAFT weights file not found: {path} (flow.raft_weights)")
    if model_name not in ("raft_small", "raft_large"):
        raise MetricUnavailable(f"flow.raft_model must be 'raft_small' or 'raft_large', got {model_name!r}")
    model = getattr(optical_flow, model_name)(weights=None, progress=False)
    model.load_state_dict(read_weights(path))
    return model.eval()


@torch.no_grad()
def raft_flow(frames: np.ndarray, model: torch.nn.Module) -> np.ndarray:
    """Flow [F-1, H, W, 2] with RAFT; frames are padded to a multiple of 8 as RAFT requires.
    RAFT's correlation pyramid needs frames of at least 128 x 128."""
    if min(frames.shape[1:3]) < 128:
        raise MetricUnavailable(f"RAFT needs frames of at least 128 x 128, got {frames.shape[2]} x {frames.shape[1]}; use flow.method farneback")
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [F, H, W, 3] -> [F, 3, H, W]
    h, w = x.shape[-2:]
    ph, pw = (-h) % 8, (-w) % 8
    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    out = []
    for a, b in zip(x[:-1], x[1:]):
        flow = model(a[None], b[None])[-1][0]  # [2, H', W']
        out.append(flow[:, :h, :w].permute(1, 2, 0).numpy())  # -> [H, W, 2]
    if not out:
        return np.zeros((0, h, w, 2), dtype=np.float32)
    return np.stack(out).astype(np.float32)
