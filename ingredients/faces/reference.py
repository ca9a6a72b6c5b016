"""Reference photos -> identity conditioning: aligned crops, id_cond, multi-scale ViT tokens, canvas.

For each of K photos (one identity each, in order): read it (any mode, as RGB), detect faces and
keep the largest, embed it with the backend's recognizer, align it onto the ArcFace template at
`crop_size`, and run EVA-CLIP (or the tiny stand-in) on the crop (`alignment: facexlib` crops as
the reference code does instead, see below). Then

    id_cond[k]       = recognizer vector (rec_dim) ⊕ pooled, L2-normalised CLIP embedding (clip_dim)
    id_vit_hidden[s] = CLIP block inputs at scale s, [K, tokens, width], s = 0..4 (coarse to fine)
    canvas           = white W x H image with the K crops pasted side by side (see canvas_layout:
                       the authors' placement by default, `canvas_layout: authors`)

Results are cached on disk by content: sha256 of the photo bytes, the backend's and the CLIP
tower's identity (names, model files, weight digest) and the settings that change the output.
A cache entry is `<key>.safetensors` (tensors) + `<key>.json` (faces, warnings, provenance), each
written atomically; the json is written last and marks the entry complete.

Two alignments (`FaceSettings.alignment`):
- `arcface` (default): the backend's detector and the ArcFace template at `crop_size`; works with
  every backend (dlib in the tiny profile); the background is kept.
- `facexlib`: the reference code's crop (see facexlib_alignment): RetinaFace-ResNet50, facexlib's
  512 px FFHQ template, optionally BiSeNet background whitening, from local weight files. The
  recognizer vector comes from the backend on the photo (`id_source: photo`, ConsisID: the largest
  face's raw insightface `embedding`, falling back to glintr100 on the facexlib crop when insightface
  finds no face) or always from the crop (`id_source: crop`, the Ingredients code).
The two reference recipes, as settings: CONSISID_FACE_SETTINGS and INGREDIENTS_FACE_SETTINGS.
`clip_gray=True` (default) feeds EVA-CLIP the grayscale crop as ConsisID does; the canvas keeps colour.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ingredients.faces.base import Face, FaceAnalyzer, box_iou
from ingredients.faces.embedding import embed_detected_face
from ingredients.faces.errors import FaceQualityWarning, ImageReadError, NoFaceError
from ingredients.faces.eva_clip import ClipFaceEncoder, build_clip
from ingredients.faces.facexlib_alignment import (
    DETECTION_THRESHOLD,
    FacexlibFaces,
    align_facexlib,
    resize_long_edge,
    resolve_facexlib_dir,
    select_facexlib_face,
)
from ingredients.faces.image_io import load_rgb
from ingredients.faces.registry import build_analyzer

from ingredients.config import validate_model
from ingredients.files import hashing
from ingredients.files.atomic import write_bytes

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: EVA-CLIP input grayed before the resize, not clamped (as the reference)
# the 'centred' layout: faces of 3/4 of the canvas height (360 px on 480), fewer when K faces need it
FACE_TO_CANVAS_HEIGHT = 0.75
CanvasLayout = Literal["authors", "centred"]
CANVAS_LAYOUTS: tuple[str, ...] = get_args(CanvasLayout)

# The reference code's face processing as settings (merge over a profile's faces: section).
# ConsisID, models/consisid_utils.py::process_face_embeddings(_infer) + prepare_face_models:
# photo shrunk to a 1024 px long edge; insightface antelopev2 (det_size 640) on the photo, largest
# face, raw `embedding`; facexlib crop of the face nearest the centre; BiSeNet whitening; gray EVA input.
CONSISID_FACE_SETTINGS: dict[str, Any] = {
    "alignment": "facexlib", "facexlib_face": "center", "face_parsing": True, "id_source": "photo",
    "id_vector": "raw", "clip_gray": True, "crop_size": 512, "max_long_edge": 1024,
}
# The Ingredients authors' inference, feizc/Ingredients infer.py + models/utils.py::
# process_face_embeddings_split: the same crop of the first (highest-score) RetinaFace face, glintr100
# `get_feat` on that crop always (FaceAnalysis is built but never called), no parsing, colour EVA input.
INGREDIENTS_FACE_SETTINGS: dict[str, Any] = {
    "alignment": "facexlib", "facexlib_face": "first", "face_parsing": False, "id_source": "crop",
    "id_vector": "raw", "clip_gray": False, "crop_size": 512, "max_long_edge": 1024,
}


# ------------------------------------------------------------------------------------------ settings

class FaceSettings(BaseModel):
    """The `faces:` section of params.yaml: settings of the face conditioner. Validate plain data with
    `validate_model(FaceSettings, data, "faces")` (errors name `faces.<key>`).

    backend: face backend name (registry); backend_options: its keyword options; model_dir: the
    insightface model folder (`.../models/antelopev2`), passed to backends that take one.
    clip: 'tiny' or 'full'; clip_dir: tiny folder (None = build from clip_seed) or the full model's
    weight file / folder. crop_size: side of the aligned crops. canvas_width / canvas_height: the
    image condition. clip_gray: grayscale CLIP input (reference behaviour). id_vector: 'normalized'
    (unit recognizer vector) or 'raw' (the recognizer's unnormalised output, which the reference
    concatenates for insightface). min_face_size: faces smaller than this (px) are warned about.
    cache_dir: cache folder (None = no cache). device: where the CLIP tower (and facexlib's models) run.
    alignment: 'arcface' or 'facexlib' (see the module doc). With facexlib: facexlib_dir, the folder
    with detection_Resnet50_Final.pth / parsing_bisenet.pth (None = derived from model_dir: the
    released face_encoder/ above models/antelopev2); facexlib_face: 'center' (ConsisID) or 'first'
    (Ingredients) RetinaFace face; face_parsing: whiten the background with BiSeNet (EVA input and
    canvas crops); id_source: 'photo' (the backend on the photo, the crop when it finds no face) or
    'crop' (the recognizer on the facexlib crop); both of these need alignment 'facexlib'.
    max_long_edge: shrink photos whose longer side is larger before detection (the reference uses
    1024; None = never).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = "dlib"
    backend_options: dict[str, Any] = Field(default_factory=dict)
    model_dir: str | None = None
    clip: Literal["tiny", "full"] = "tiny"
    clip_dir: str | None = None
    clip_seed: int = 0
    crop_size: int = Field(512, gt=0)
    canvas_width: int = Field(720, gt=0)
    canvas_height: int = Field(480, gt=0)
    canvas_layout: CanvasLayout = "authors"
    clip_gray: bool = True
    id_vector: Literal["normalized", "raw"] = "normalized"
    min_face_size: float = 64.0
    cache_dir: str | None = None
    device: str = "cpu"
    alignment: Literal["arcface", "facexlib"] = "arcface"
    facexlib_dir: str | None = None
    facexlib_face: Literal["center", "first"] = "center"
    face_parsing: bool = False
    id_source: Literal["photo", "crop"] = "photo"
    max_long_edge: int | None = Field(None, gt=0, description="None = never shrink")

    @field_validator("backend_options", mode="before")
    @classmethod
    def _null_options(cls, value: Any) -> Any:
        return {} if value is None else value  # `backend_options:` left empty in YAML

    # the cross-field rules: a field validator sees the fields declared above it (here `alignment`)
    @field_validator("face_parsing")
    @classmethod
    def _parsing_needs_facexlib(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("alignment", "facexlib") != "facexlib":
            raise ValueError(f"face_parsing needs alignment 'facexlib' (BiSeNet runs on its crops); with alignment "
                             f"{info.data['alignment']!r} only false is allowed")
        return value

    @field_validator("id_source")
    @classmethod
    def _crop_needs_facexlib(cls, value: str, info: ValidationInfo) -> str:
        if value == "crop" and info.data.get("alignment", "facexlib") != "facexlib":
            raise ValueError(f"id_source 'crop' needs alignment 'facexlib' (the recognizer embeds the facexlib "
                             f"crop); with alignment {info.data['alignment']!r} only 'photo' is allowed")
        return value

    def output_settings(self) -> dict:
        """The settings that change the conditioning (part of the cache key)."""
        out = {"crop_size": int(self.crop_size), "canvas": [int(self.canvas_width), int(self.canvas_height)],
               "canvas_layout": self.canvas_layout,
               "clip_gray": bool(self.clip_gray), "id_vector": self.id_vector, "alignment": self.alignment,
               "max_long_edge": None if self.max_long_edge is None else int(self.max_long_edge)}
        if self.alignment == "facexlib":
            out.update(facexlib_face=self.facexlib_face, face_parsing=bool(self.face_parsing), id_source=self.id_source)
        return out


# ------------------------------------------------------------------------------------------- result

@dataclass
class ReferenceConditioning:
    """The conditioning of K reference identities, in the order of the photos.

    crops: uint8 [K, S, S, 3] aligned faces (the background white when face_parsing);
    id_cond: float32 [K, rec_dim + clip_dim]; id_vit_hidden: 5 x float32 [K, tokens, width];
    canvas: RGB PIL image (the image condition);
    faces: the face used in each photo (photo pixel coordinates); warnings: doubts about the photos.
    """

    crops: np.ndarray
    id_cond: torch.Tensor
    id_vit_hidden: list[torch.Tensor]
    canvas: Image.Image
    faces: list[Face]
    paths: list[str]
    warnings: list[str]
    cache_key: str
    from_cache: bool = False

    @property
    def num_identities(self) -> int:
        return int(self.id_cond.shape[0])


# ---------------------------------------------------------------------------------- pure functions

def select_face(faces: Sequence[Face], path: str | Path, image_shape: tuple[int, ...], backend: str,
                min_face_size: float) -> tuple[Face, list[str]]:
    """The largest face, and messages about doubts (several faces, tiny face, face cut by the border).

    Largest by box area, and on equal areas the later face in the backend's order, as ConsisID's
    `sorted(face_info, key=lambda x: (x1 - x0) * (y1 - y0))[-1]` (models/consisid_utils.py::
    process_face_embeddings) picks it.
    """
    if not faces:
        raise NoFaceError(path, backend)
    areas = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in faces]
    face = faces[max(range(len(faces)), key=lambda i: (areas[i], i))]
    return face, face_messages(faces, face, path, image_shape, min_face_size)


def face_messages(faces: Sequence[Face], face: Face, path: str | Path, image_shape: tuple[int, ...],
                  min_face_size: float, chosen: str = "the largest") -> list[str]:
    """Doubts about the chosen `face` among `faces`: several faces, a tiny face, a face cut by the border."""
    height, width = image_shape[:2]
    x0, y0, x1, y1 = (float(v) for v in face.box)
    box_text = f"box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}), {x1 - x0:.0f}x{y1 - y0:.0f} px"
    messages = []
    if len(faces) > 1:
        messages.append(f"{path}: {len(faces)} faces detected; using {chosen} ({box_text})")
    if face.size < min_face_size:
        messages.append(f"{path}: the face is tiny, {face.size:.0f} px ({box_text}), below min_face_size "
                        f"{min_face_size:.0f} px; its identity features are unreliable, use a larger photo")
    marks = np.asarray(face.landmarks)
    outside = bool(((marks < 0) | (marks >= [width, height])).any())
    if x0 <= 0 or y0 <= 0 or x1 >= width or y1 >= height or outside:
        messages.append(f"{path}: the face touches or crosses the image border ({box_text}, image {width}x{height}); "
                        f"it may be cut off, use a photo with the whole face inside the frame")
    return messages


def canvas_layout(num_faces: int, width: int, height: int, layout: str = "authors") -> list[tuple[int, int, int]]:
    """(x, y, size) of each face on the canvas.

    'authors': the Ingredients inference pipeline (feizc/Ingredients models/utils.py,
    `process_face_embeddings_infer`): line 278 `Image.new("RGB", (720, 480), color=(255, 255, 255))`,
    line 340 `img.resize((360, 360))` (PIL's default filter, bicubic), line 341
    `new_img.paste(img, (360*i, 60))` for identity i = 0, 1, ... (line 342 `i += 1`). So K = 1 sits at
    x = 0 (not centred) and on 720 x 480 a third face (x = 720) falls off the canvas, as there (PIL's
    paste clips). On another canvas the same geometry scaled by the width: size = min(W // 2, H),
    x = size x i, y = (H - size) // 2 (exactly 360, 360 i, 60 on 720 x 480).
    'centred': a centred row of equal squares, size = min(3/4 of the height, W / K), centred
    horizontally and vertically (K = 2 on 720 x 480 equals 'authors'; K = 1 at x = 180).
    """
    if num_faces < 1:
        raise ValueError(f"need at least one face, got {num_faces}")
    if layout not in CANVAS_LAYOUTS:
        raise ValueError(f"canvas layout must be one of {CANVAS_LAYOUTS}, got {layout!r}")
    if layout == "authors":
        size = min(width // 2, height)
        if size < 1:
            raise ValueError(f"canvas {width}x{height} is too small for a face")
        return [(size * i, (height - size) // 2, size) for i in range(num_faces)]
    size = min(int(height * FACE_TO_CANVAS_HEIGHT), width // num_faces)
    if size < 1:
        raise ValueError(f"canvas {width}x{height} is too small for {num_faces} faces")
    x0 = (width - num_faces * size) // 2
    y = (height - size) // 2
    return [(x0 + i * size, y, size) for i in range(num_faces)]


def make_canvas(crops: np.ndarray, width: int, height: int, layout: str = "authors") -> Image.Image:
    """White RGB canvas with crops [K, S, S, 3] resized (bicubic) and pasted per canvas_layout
    (a face placed past the right edge is clipped, as PIL's paste does in the authors' pipeline)."""
    canvas = Image.new("RGB", (int(width), int(height)), (255, 255, 255))
    for crop, (x, y, size) in zip(crops, canvas_layout(len(crops), int(width), int(height), layout)):
        face = Image.fromarray(np.ascontiguousarray(crop))
        if face.size != (size, size):
            face = face.resize((size, size), Image.Resampling.BICUBIC)
        canvas.paste(face, (x, y))
    return canvas


def file_sha256(path: str | Path) -> str:
    """sha256 of a photo's bytes; ImageReadError when it cannot be read."""
    try:
        return hashing.file_sha256(path)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror or exc})") from exc


# ------------------------------------------------------------------------------------- conditioner

def analyzer_identity(analyzer: FaceAnalyzer) -> dict:
    """A backend's identity for cache keys: its own `identity` when it has one."""
    identity = getattr(analyzer, "identity", None)
    if identity is not None:
        return dict(identity)
    cls = type(analyzer)
    return {"backend": analyzer.name, "class": f"{cls.__module__}.{cls.__qualname__}"}


class FaceConditioner:
    """A face backend + a CLIP tower + settings: turns reference photos into ReferenceConditioning."""

    def __init__(self, analyzer: FaceAnalyzer, clip: ClipFaceEncoder, settings: FaceSettings,
                 facexlib: FacexlibFaces | None = None) -> None:
        if settings.id_vector == "raw" and getattr(analyzer, "embed_face", None) is None:
            raise ValueError(f"id_vector 'raw' needs a backend with embed_face; {analyzer.name!r} has none")
        if settings.alignment == "facexlib" and facexlib is None:
            raise ValueError("alignment 'facexlib' needs facexlib's models (build_face_conditioner loads them)")
        if settings.face_parsing and facexlib is not None and facexlib.parser is None:
            raise ValueError("face_parsing needs facexlib's BiSeNet: build FacexlibFaces with parsing=True")
        if settings.id_source == "crop" and getattr(analyzer, "embed_crop", None) is None:
            raise ValueError(f"id_source 'crop' needs a backend that embeds facexlib crops (embed_crop, e.g. "
                             f"insightface); {analyzer.name!r} has none")
        self.analyzer = analyzer
        self.clip = clip
        self.settings = settings
        self.facexlib = facexlib if settings.alignment == "facexlib" else None

    @property
    def rec_dim(self) -> int:
        return int(self.analyzer.embedding_dim)

    @property
    def id_embed_dim(self) -> int:
        """Width of id_cond: recognizer dim + CLIP embed dim (1280 full, 160 dlib + tiny)."""
        return self.rec_dim + int(self.clip.embed_dim)

    @property
    def vit_dim(self) -> int:
        """Width of each id_vit_hidden tensor (1024 full, 64 tiny)."""
        return int(self.clip.width)

    @property
    def vit_tokens(self) -> int:
        """Tokens of each id_vit_hidden tensor (577 full, 65 tiny)."""
        return int(self.clip.num_tokens)

    @property
    def identity(self) -> dict:
        identity = {"analyzer": analyzer_identity(self.analyzer), "clip": self.clip.identity,
                    "settings": self.settings.output_settings()}
        if self.facexlib is not None:
            identity["facexlib"] = self.facexlib.identity
        return identity

    def __call__(self, photo_paths: Sequence[str | Path], use_cache: bool = True) -> ReferenceConditioning:
        return process_references(photo_paths, self, use_cache=use_cache)


def build_face_conditioner(settings: Mapping[str, Any] | FaceSettings) -> FaceConditioner:
    """FaceConditioner from a plain dict of settings (see FaceSettings)."""
    if not isinstance(settings, FaceSettings):
        settings = validate_model(FaceSettings, settings, "faces")
    options = dict(settings.backend_options)
    if settings.model_dir is not None:
        if "model_dir" in options and str(options["model_dir"]) != str(settings.model_dir):
            raise ValueError(f"face settings give model_dir twice: {settings.model_dir!r} and "
                             f"backend_options.model_dir {options['model_dir']!r}; keep one")
        options["model_dir"] = settings.model_dir
    analyzer = build_analyzer(settings.backend, **options)
    facexlib = None
    if settings.alignment == "facexlib":
        folder = resolve_facexlib_dir(settings.facexlib_dir, options.get("model_dir"))
        facexlib = FacexlibFaces(folder, parsing=settings.face_parsing, device=settings.device)
    clip = build_clip(settings.clip, settings.clip_dir, seed=settings.clip_seed, device=settings.device)
    return FaceConditioner(analyzer, clip, settings, facexlib)


# ------------------------------------------------------------------------------------------- cache


def _face_to_json(face: Face) -> dict:
    return {"box": [float(v) for v in face.box], "landmarks": np.asarray(face.landmarks, float).tolist(),
            "score": float(face.score)}


def _face_from_json(values: Mapping[str, Any]) -> Face:
    return Face(box=np.asarray(values["box"], dtype=np.float64),
                landmarks=np.asarray(values["landmarks"], dtype=np.float64), score=float(values["score"]))


def _write_cache(cache_dir: Path, result: ReferenceConditioning, meta: dict) -> None:
    from safetensors.torch import save

    cache_dir.mkdir(parents=True, exist_ok=True)
    tensors = {"crops": torch.from_numpy(np.ascontiguousarray(result.crops)),
               "id_cond": result.id_cond.contiguous(),
               "canvas": torch.from_numpy(np.array(result.canvas, dtype=np.uint8))}
    for i, hidden in enumerate(result.id_vit_hidden):
        tensors[f"id_vit_hidden.{i}"] = hidden.contiguous()
    write_bytes(cache_dir / f"{result.cache_key}.safetensors", save(tensors))
    write_bytes(cache_dir / f"{result.cache_key}.json", (json.dumps(meta, indent=1) + "\n").encode())


def _read_cache(cache_dir: Path, key: str, identity: dict) -> ReferenceConditioning | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path, tensor_path = cache_dir / f"{key}.json", cache_dir / f"{key}.safetensors"
    if not (meta_path.is_file() and tensor_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
        hidden = [tensors[f"id_vit_hidden.{i}"] for i in range(len(meta["hidden_shapes"]))]
        missing = [name for name in ("crops", "id_cond", "canvas") if name not in tensors]
        if missing:
            raise KeyError(f"tensors {missing} missing")
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        logger.warning("ignoring unreadable reference cache entry %s: %s", tensor_path, exc)
        return None
    if meta.get("version") != CACHE_VERSION or meta.get("identity") != identity:
        logger.warning("ignoring reference cache entry %s: written by different models or settings", meta_path)
        return None
    return ReferenceConditioning(
        crops=tensors["crops"].numpy(), id_cond=tensors["id_cond"], id_vit_hidden=hidden,
        canvas=Image.fromarray(tensors["canvas"].numpy()),
        faces=[_face_from_json(f) for f in meta["faces"]], paths=list(meta["paths"]),
        warnings=list(meta["warnings"]), cache_key=key, from_cache=True)


# -------------------------------------------------------------------------------------------- main

def _arcface_reference(conditioner: FaceConditioner, photo: np.ndarray, path: str):
    """(face, recognizer vector, crop, None, messages): the backend's largest face on the ArcFace template."""
    settings, analyzer = conditioner.settings, conditioner.analyzer
    image, (sx, sy) = resize_long_edge(photo, settings.max_long_edge)
    face, messages = select_face(analyzer.detect(image), path, image.shape, analyzer.name, settings.min_face_size)
    vector = embed_detected_face(analyzer, image, face, normalize=settings.id_vector == "normalized")
    crop = analyzer.align(image, face, settings.crop_size)
    return _to_photo(face, sx, sy), vector, crop, None, messages


def _facexlib_reference(conditioner: FaceConditioner, photo: np.ndarray, path: str):
    """(face, recognizer vector, crop, background mask or None, messages), as the reference code does it.

    PKU-YuanGroup/ConsisID models/consisid_utils.py::process_face_embeddings (id_source 'photo'):
    `app.get(image_bgr)`, the largest face's raw `embedding`; facexlib `get_face_landmarks_5` +
    `align_warp_face` -> 512 crop; `face_helper_2.get_feat(align_face)` when insightface found no
    face; BiSeNet parsing. feizc/Ingredients models/utils.py::process_face_embeddings_split
    (id_source 'crop'): `handler_ante.get_feat(align_face)` always, the first facexlib face.
    """
    settings, analyzer, facexlib = conditioner.settings, conditioner.analyzer, conditioner.facexlib
    normalize = settings.id_vector == "normalized"
    image, (sx, sy) = resize_long_edge(photo, settings.max_long_edge)  # resize_numpy_image_long(image, 1024)
    vector, largest = None, None
    if settings.id_source == "photo":
        found = analyzer.detect(image)
        if found:
            largest, _ = select_face(found, path, image.shape, analyzer.name, settings.min_face_size)
            vector = embed_detected_face(analyzer, image, largest, normalize=normalize)
    candidates = facexlib.detect(image)
    if not candidates:
        raise NoFaceError(path, "facexlib RetinaFace", f"no face scored above the reference's threshold "
                                                       f"{DETECTION_THRESHOLD}")
    index = select_facexlib_face(candidates, image.shape[0], image.shape[1], settings.facexlib_face)
    face = candidates[index]
    chosen = "the face nearest the centre" if settings.facexlib_face == "center" else "the highest-scoring face"
    messages = face_messages(candidates, face, path, image.shape, settings.min_face_size, chosen=chosen)
    if largest is not None and box_iou(largest.box, face.box)[0, 0] < 0.3:
        messages.append(f"{path}: the {analyzer.name!r} recognizer embeds its largest face "
                        f"({np.round(largest.box).astype(int).tolist()}) but the crop shows another facexlib face "
                        f"({np.round(face.box).astype(int).tolist()}); the reference code does the same, use a "
                        f"photo with one face")
    crop = align_facexlib(image, face.landmarks, settings.crop_size)
    if vector is None:
        embed_crop = getattr(analyzer, "embed_crop", None)
        if embed_crop is None:
            raise NoFaceError(path, analyzer.name, "its recognizer cannot embed the facexlib crop instead")
        if settings.id_source == "photo":
            logger.info("%s: the %r backend found no face; embedding the facexlib crop, as the reference does",
                        path, analyzer.name)
        vector = embed_crop(crop, normalize=normalize)
    background = facexlib.background(crop[None])[0] if settings.face_parsing else None
    return _to_photo(face, sx, sy), vector, crop, background, messages


def _to_photo(face: Face, sx: float, sy: float) -> Face:
    """A face found on the shrunk photo, in the photo's pixel coordinates."""
    if sx == 1.0 and sy == 1.0:
        return face
    scale = np.array([sx, sy])
    return Face(box=np.asarray(face.box, np.float64) * np.tile(scale, 2),
                landmarks=np.asarray(face.landmarks, np.float64) * scale, score=face.score)


def process_references(photo_paths: Sequence[str | Path], conditioner: FaceConditioner,
                       use_cache: bool = True) -> ReferenceConditioning:
    """K photo paths (one identity each) -> ReferenceConditioning; cached under settings.cache_dir."""
    if isinstance(photo_paths, (str, Path)):
        raise TypeError("photo_paths must be a list of paths, one per identity, not a single path")
    paths = [str(p) for p in photo_paths]
    if not paths:
        raise ValueError("process_references needs at least one reference photo")
    settings = conditioner.settings
    identity = conditioner.identity
    digests = [file_sha256(p) for p in paths]
    key = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "photos": digests, "identity": identity},
                                    sort_keys=True).encode()).hexdigest()
    cache_dir = Path(settings.cache_dir) if (use_cache and settings.cache_dir) else None
    if cache_dir is not None:
        cached = _read_cache(cache_dir, key, identity)
        if cached is not None:
            logger.info("reference conditioning for %d photos read from cache %s", len(paths), cache_dir)
            # the stored messages name the files of the first run: name this run's files instead
            renamed = []
            for message in cached.warnings:
                for old, new in zip(cached.paths, paths):
                    if message.startswith(f"{old}: "):
                        message = f"{new}: " + message[len(old) + 2:]
                        break
                warnings.warn(message, FaceQualityWarning, stacklevel=2)
                renamed.append(message)
            cached.paths, cached.warnings = paths, renamed
            return cached

    rec_vectors, crops, backgrounds, faces, messages = [], [], [], [], []
    for path in paths:
        image = load_rgb(path)
        if conditioner.facexlib is None:
            face, vector, crop, background, face_messages_ = _arcface_reference(conditioner, image, path)
        else:
            face, vector, crop, background, face_messages_ = _facexlib_reference(conditioner, image, path)
        for message in face_messages_:
            warnings.warn(message, FaceQualityWarning, stacklevel=2)
            logger.warning(message)
        messages.extend(face_messages_)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape != (conditioner.rec_dim,) or not np.isfinite(vector).all() or not np.any(vector):
            raise RuntimeError(f"{path}: the {conditioner.analyzer.name!r} recognizer gave an unusable vector "
                               f"(shape {vector.shape}, finite {bool(np.isfinite(vector).all())})")
        rec_vectors.append(vector)
        crops.append(crop)
        backgrounds.append(background)
        faces.append(face)

    crops_arr = np.stack(crops).astype(np.uint8)  # [K, S, S, 3]
    background = np.stack(backgrounds) if settings.face_parsing else None  # bool [K, S, S]
    features = conditioner.clip.encode(crops_arr, gray=settings.clip_gray, background=background)
    rec = torch.from_numpy(np.stack(rec_vectors))  # [K, rec_dim]
    # id_cond = [recognizer vector, L2-normalised CLIP embedding], in that order (ConsisID
    # process_face_embeddings / Ingredients process_face_embeddings_split: torch.cat([id_ante_embedding, id_cond_vit]))
    id_cond = torch.cat([rec, features.pooled.float()], dim=-1).contiguous()  # [K, rec_dim + clip_dim]
    if background is not None:  # the canvas shows the whitened colour crops (ConsisID's return_face_features_image_2)
        crops_arr = np.where(background[..., None], np.uint8(255), crops_arr)
    canvas = make_canvas(crops_arr, settings.canvas_width, settings.canvas_height, settings.canvas_layout)
    result = ReferenceConditioning(crops=crops_arr, id_cond=id_cond, id_vit_hidden=features.hidden, canvas=canvas,
                                   faces=faces, paths=paths, warnings=messages, cache_key=key)
    if cache_dir is not None:
        meta = {"version": CACHE_VERSION, "identity": identity, "paths": paths, "photo_sha256": digests,
                "faces": [_face_to_json(f) for f in faces], "warnings": messages,
                "id_cond_shape": list(id_cond.shape), "hidden_shapes": [list(h.shape) for h in features.hidden]}
        _write_cache(cache_dir, result, meta)
    return result
