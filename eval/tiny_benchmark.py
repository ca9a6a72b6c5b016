"""The tiny profile's benchmark: cases built from the identities the tiny data held out of training
(the `tiny` source of the benchmark stage, `python -m eval.build_benchmark`).

Reads `split.json` (written by `ingredients.data.synth`: held-out identity names and their reference
photos), copies the photos into `OUT/refs/` (a benchmark's references stay inside its folder) and
writes `OUT/tiny.jsonl`: one case per subset of 1..`benchmark.max_identities` held-out identities x
prompt, with a deterministic seed per case.

Targets (for the copy-paste metric): per held-out identity, face crops from the held-out videos
(`split.json`'s `heldout_videos`, whose ground truth gives each face's box), the first and the last
frame where the face is fully visible: the person as the clip renders them (scaled, moving, over a
scene), frames far apart and not the reference photo. Written to `OUT/targets/`; an identity that
appears in no held-out video has no target (its copy-paste is missing with that reason).

Ground truth (for the vae_roundtrip baseline): each shot of a held-out video is a real clip of the
held-out people it shows; a case whose identity set equals a shot's gets that shot, written to
`OUT/ground_truth/` (the first such shot in video and shot order); other cases have none.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from ingredients.files.atomic import write_png
from ingredients.files.video_io import read_video, write_video
from ingredients.sampling.benchmark import Case, write_benchmark

TARGET_MARGIN = 0.5  # crop side = box side x (1 + 2 x margin), like the oracle's reference crops
MIN_VISIBLE = 0.999

logger = logging.getLogger(__name__)


def build_cases(names: list[str], refs: dict[str, Path], prompts: list[str], max_identities: int, seed: int,
                targets: dict[str, tuple[Path, ...]] | None = None,
                ground_truth: dict[frozenset[str], Path] | None = None) -> list[Case]:
    """Every identity subset of size 1..max_identities (sorted names) x every prompt; `targets`
    {name: photos} gives each case its per-identity targets (none when None), `ground_truth`
    {identity set: clip} its real clip."""
    cases = []
    for k in range(1, min(max_identities, len(names)) + 1):
        for subset in itertools.combinations(sorted(names), k):
            for p, prompt in enumerate(prompts):
                case_id = "-".join(subset) + f"__p{p}"
                case_targets = tuple(targets.get(n, ()) for n in subset) if targets is not None else ()
                clip = (ground_truth or {}).get(frozenset(subset))
                cases.append(Case(case_id, prompt, tuple(refs[n] for n in subset), seed + len(cases), case_targets, clip))
    return cases


def crop_box(image: np.ndarray, box: list[float], margin: float = TARGET_MARGIN) -> np.ndarray:
    """Square crop [S, S, 3] centred on box (x0, y0, x1, y1), side = box side x (1 + 2 margin),
    edge-padded where it leaves the image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    left, top, size = int(round(cx - half)), int(round(cy - half)), max(int(round(2 * half)), 1)
    pad = max(0, -left, -top, left + size - w, top + size - h)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return padded[top + pad:top + pad + size, left + pad:left + pad + size].copy()


def target_frames(gt: dict, name: str) -> list[tuple[int, list[float]]]:
    """(frame, box) of the first and the last frame where `name` is fully visible in a clip's ground truth."""
    seen = [(t, face["box"]) for t, faces in enumerate(gt["frames"]) for face in faces
            if face["identity"] == name and face["visible"] >= MIN_VISIBLE]
    return [seen[0], seen[-1]] if len(seen) > 1 else seen


def write_targets(split: Path, data: dict, names: list[str], out: Path) -> dict[str, tuple[Path, ...]]:
    """{name: target crops written to OUT/targets/} from the held-out videos of `split.json`."""
    targets: dict[str, list[Path]] = {n: [] for n in names}
    for rel in data.get("heldout_videos", []):
        video = split.parent / rel
        gt_path = video.with_suffix(".gt.json")
        if not video.is_file() or not gt_path.is_file():
            raise FileNotFoundError(f"{video} or its ground truth {gt_path.name} is missing (named in {split})")
        gt = json.loads(gt_path.read_text())
        frames = None
        for name in names:
            for t, box in target_frames(gt, name):
                frames = frames if frames is not None else read_video(video)[0]
                dst = out / "targets" / f"{name}__{video.stem}_f{t:03d}.png"
                write_png(dst, crop_box(frames[t], box))
                targets[name].append(dst.resolve())
    return {n: tuple(paths) for n, paths in targets.items()}


def write_ground_truth(split: Path, data: dict, out: Path) -> dict[frozenset[str], Path]:
    """{identity set: shot clip written to OUT/ground_truth/} from the held-out videos' shots."""
    clips: dict[frozenset[str], Path] = {}
    for rel in data.get("heldout_videos", []):
        video = split.parent / rel
        gt = json.loads(video.with_suffix(".gt.json").read_text())
        frames = None
        for j, shot in enumerate(gt["shots"]):
            people = frozenset(shot["identities"])
            if not people or people in clips:
                continue
            frames = frames if frames is not None else read_video(video)[0]
            dst = out / "ground_truth" / f"{video.stem}_s{j:02d}.mp4"
            write_video(dst, frames[shot["start"]:shot["end"]], fps=float(gt["fps"]))
            clips[people] = dst.resolve()
    return clips


def build_tiny_benchmark(split: Path, prompts: list[str], max_identities: int, seed: int, out: Path,
                         target: Path | None = None) -> Path:
    """Copy the held-out reference photos into OUT/refs and write the cases to `target`
    (default OUT/tiny.jsonl)."""
    data = json.loads(split.read_text())
    names = list(data["heldout_identities"])
    if not names:
        raise ValueError(f"{split}: no held-out identities (set synth.num_heldout >= 1)")
    refs = {}
    for name in names:
        src = split.parent / data["heldout_references"][name]
        if not src.is_file():
            raise FileNotFoundError(f"{src}: reference photo of held-out identity {name!r} is missing (named in {split})")
        dst = out / "refs" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        refs[name] = dst.resolve()
    targets = write_targets(split, data, names, out)
    clips = write_ground_truth(split, data, out)
    path = write_benchmark(target or out / "tiny.jsonl",
                           build_cases(names, refs, prompts, max_identities, seed, targets, clips))
    logger.info("wrote %s from held-out identities %s; target photos per identity: %s; ground-truth clips for %s",
                path, names, {n: len(t) for n, t in targets.items()}, sorted("+".join(sorted(k)) for k in clips))
    return path
