"""The CurricularFace recognizer (IR-101, 512-d): the model behind FaceSim-Cur in the ConsisID and
Ingredients papers.

The recognizer only embeds. Detection and landmarks come from another registered backend (`dlib`
offline, or `insightface` given its `model_dir`), and alignment is the 5-point ArcFace-template warp.

Weights. The released file `glint360k_curricular_face_r101_backbone.bin` (TFace's IR-101 trained
with the CurricularFace loss on Glint360K; ConsisID ships it in `face_encoder/`) is a plain torch
state dict. It is read with `ingredients.files.weights_file.read_weights` (no pickled code) and loaded with
strict key matching.

Architecture. There are two public layouts of the same IR-101, and this file builds both:
- "tface": TFace's `BasicBlockIR` as copied into ConsisID and UniPortrait. Their evaluation code
  loads the glint360k file into this layout with strict=True. The residual branch is BN, conv3x3,
  BN, PReLU, conv3x3(stride), BN (`res_layer.0..5`).
- "evolve": face.evoLVe's `bottleneck_IR`, used for the original CurricularFace release
  (`CurricularFace_Backbone.pth`, MS1MV2). Its branch has no BN between the first conv and the
  PReLU (`res_layer.0..4`).
Both share the input layer (conv3x3 3->64, BN, PReLU) and the units [3, 13, 30, 3] of widths
64/128/256/512, each stage starting with a stride-2 unit. They also share the output layer: BN2d,
Dropout, Flatten, Linear(512*7*7 -> 512), and a BatchNorm1d without affine parameters (so its keys
are only running_mean / running_var / num_batches_tracked). `layout="auto"` picks the layout from
the state dict's keys.

Preprocessing (as in ConsisID's FaceSim-Cur code, and in TFace training, which decodes images to
RGB): an RGB crop on the ArcFace template, resized to 112 x 112 with bilinear interpolation,
scaled to [-1, 1] as (x / 255 - 0.5) / 0.5. ConsisID crops at 224 (`norm_crop(..., 224)`) and then
resizes to 112. `embed_face` does the same by default (`crop_size=224`), while `embed(align(image,
face))` warps straight to 112.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from ingredients.faces.alignment import align_to_template
from ingredients.faces.base import Face
from ingredients.faces.image_io import check_rgb_array
from ingredients.files.hashing import model_file_digests
from ingredients.files.weights_file import read_weights

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "glint360k_curricular_face_r101_backbone.bin"
FETCH_HINT = (
    "get it with `hf download BestWishYsh/ConsisID-preview "
    f"face_encoder/{WEIGHTS_FILE} --local-dir <dir>` and pass weights=<dir>/face_encoder/{WEIGHTS_FILE} "
    "(the original MS1MV2 release, CurricularFace_Backbone.pth from github.com/HuangYG123/CurricularFace, "
    "loads too)"
)

INPUT_SIZE = 112
EMBEDDING_DIM = 512
IR101_UNITS = (3, 13, 30, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
LAYOUTS = ("tface", "evolve")
REFERENCE_CROP_SIZE = 224  # ConsisID aligns at 224 and resizes to 112

# Same-person cosine threshold. NOT calibrated: no real CurricularFace weights are available on the
# development machine. 0.3 is the value this project uses for glintr100 (see insightface_backend).
# That model is also an IR-100 trained on Glint360K with an additive angular margin (ArcFace),
# and CurricularFace uses the same margin (0.5) and scale (64) at its curriculum's end. Calibrate
# on your own data before relying on it for verification.
CURRICULARFACE_COSINE_THRESHOLD = 0.3


class CheckpointMismatchError(RuntimeError):
    """A weights file whose keys or shapes do not fit the IR-101 backbone."""


class IRUnit(nn.Module):
    """One residual unit of the IR network: `res_layer(x) + shortcut_layer(x)`.

    The shortcut is identity (a 1x1 max-pool with the unit's stride) when the width is unchanged,
    else a strided 1x1 conv + BN. `bn_before_prelu` selects the TFace layout (see module docstring).
    """

    def __init__(self, in_channels: int, depth: int, stride: int, bn_before_prelu: bool = True) -> None:
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth))
        branch: list[nn.Module] = [nn.BatchNorm2d(in_channels),
                                   nn.Conv2d(in_channels, depth, (3, 3), (1, 1), 1, bias=False)]
        if bn_before_prelu:
            branch.append(nn.BatchNorm2d(depth))
        branch += [nn.PReLU(depth), nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False), nn.BatchNorm2d(depth)]
        self.res_layer = nn.Sequential(*branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """IR-ResNet face recognizer for 112 x 112 inputs: [B, 3, 112, 112] in [-1, 1] -> [B, 512] (not normalised).

    units: residual units per stage ((3, 13, 30, 3) = IR-101). layout: "tface" or "evolve".
    """

    def __init__(self, units: Sequence[int] = IR101_UNITS, layout: str = "tface",
                 embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"IR backbone layout must be one of {LAYOUTS}, got {layout!r}")
        if len(units) != len(STAGE_WIDTHS) or any(int(n) < 1 for n in units):
            raise ValueError(f"units must give >= 1 unit for each of the {len(STAGE_WIDTHS)} stages, got {units}")
        self.layout = layout
        self.input_layer = nn.Sequential(nn.Conv2d(3, STAGE_WIDTHS[0], (3, 3), 1, 1, bias=False),
                                         nn.BatchNorm2d(STAGE_WIDTHS[0]), nn.PReLU(STAGE_WIDTHS[0]))
        body = []
        in_channels = STAGE_WIDTHS[0]
        for n_units, depth in zip(units, STAGE_WIDTHS):
            for i in range(int(n_units)):
                body.append(IRUnit(in_channels, depth, 2 if i == 0 else 1, bn_before_prelu=layout == "tface"))
                in_channels = depth
        self.body = nn.Sequential(*body)
        side = INPUT_SIZE // 2 ** len(STAGE_WIDTHS)  # 112 / 16 = 7
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.Dropout(0.4), nn.Flatten(),
            nn.Linear(in_channels * side * side, embedding_dim), nn.BatchNorm1d(embedding_dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"IR backbone expects [B, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {tuple(x.shape)}")
        x = self.input_layer(x)  # [B, 64, 112, 112]
        x = self.body(x)  # [B, 512, 7, 7]
        return self.output_layer(x)  # [B, 512]


def build_ir101(layout: str = "tface") -> IRBackbone:
    """IR-101 (units [3, 13, 30, 3]) in the given key layout, randomly initialised."""
    return IRBackbone(IR101_UNITS, layout=layout)


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """"tface" or "evolve", from the first unit's residual branch (6 vs 5 modules)."""
    if "body.0.res_layer.5.weight" in state_dict:
        return "tface"
    if "body.0.res_layer.4.weight" in state_dict:
        return "evolve"
    sample = ", ".join(sorted(state_dict)[:5]) or "none"
    raise CheckpointMismatchError(
        "not an IR backbone state dict: no 'body.0.res_layer.4.weight' or 'body.0.res_layer.5.weight' key "
        f"(first keys: {sample})")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a torch state dict read with weights_only=True.

    A uniform 'module.' prefix (DataParallel checkpoints) is removed; floating tensors become float32.
    """
    path = Path(path)
    try:
        state = read_weights(path)
    except ValueError as exc:  # pickle refusals, truncated or foreign files: the message names the path
        raise CheckpointMismatchError(str(exc)) from exc
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointMismatchError(
            f"{path} is not a state dict (a non-empty mapping of parameter names to tensors); got "
            f"{type(state).__name__}. Expected the IR-101 backbone weights ({WEIGHTS_FILE})")
    prefix = "module." if all(k.startswith("module.") for k in state) else ""
    # half-precision copies of the weights run in float32 like the original
    return {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in state.items()}


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointMismatchError naming every missing, unexpected or mis-shaped key.

    A missing `num_batches_tracked` is allowed (old checkpoints lack it; BatchNorm fills it in).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return

    def listing(label: str, items: list[str]) -> str:
        more = f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
        return f"{label} ({len(items)}): {', '.join(items[:8])}{more}"

    parts = [listing(label, items) for label, items in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
    layout = getattr(model, "layout", "?")
    raise CheckpointMismatchError(
        f"{source} does not match the IR-101 backbone ({layout} layout): {'; '.join(parts)}. "
        f"Expected the CurricularFace IR-101 state dict ({WEIGHTS_FILE}, keys input_layer.*, body.0-48.*, "
        f"output_layer.*); {FETCH_HINT}")


def resolve_weights(weights: str | Path) -> Path:
    """The weights file: `weights` itself, or WEIGHTS_FILE inside it or inside its face_encoder/."""
    path = Path(weights).expanduser()
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILE, path / "face_encoder" / WEIGHTS_FILE):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"CurricularFace weights file missing: no {WEIGHTS_FILE} in {path} "
                                f"or {path / 'face_encoder'}; {FETCH_HINT}")
    if not path.is_file():
        raise FileNotFoundError(f"CurricularFace weights file missing: {path}; {FETCH_HINT}")
    return path


def load_ir101(weights: str | Path, layout: str = "auto") -> IRBackbone:
    """IR-101 with the weights of `weights` (strict key match), in eval mode on CPU."""
    path = resolve_weights(weights)
    state = load_state_dict_file(path)
    if layout == "auto":
        layout = detect_layout(state)
    with torch.device("meta"):  # no random init: every tensor comes from the file
        model = build_ir101(layout)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointMismatchError(f"{path}: tensors not set by the file: {', '.join(left[:8])}")
    return model.eval()


def to_network_input(crops: Sequence[np.ndarray]) -> torch.Tensor:
    """Aligned square RGB uint8 crops -> [N, 3, 112, 112] float32 in [-1, 1] (bilinear resize if needed)."""
    batch = []
    for i, crop in enumerate(crops):
        crop = check_rgb_array(crop, f"aligned crop {i}")
        if crop.shape[0] != crop.shape[1]:
            raise ValueError(f"aligned crop {i} must be square, got {crop.shape}; use align(image, face)")
        if crop.shape[0] != INPUT_SIZE:
            crop = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        batch.append(crop)
    if not batch:
        raise ValueError("no crops to embed")
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()  # [N, H, W, 3] -> [N, 3, H, W]
    return (x / 255.0 - 0.5) / 0.5



class CurricularFaceAnalyzer:
    """FaceAnalyzer with CurricularFace IR-101 identity vectors; detection is delegated.

    weights: the state-dict file (or a folder holding WEIGHTS_FILE, directly or in face_encoder/).
    detector / detector_options: the registered backend that finds faces and their 5 landmarks, and
    its keyword options (e.g. {"model_dir": ...} for insightface). device: torch device string.
    layout: "auto", "tface" or "evolve" (see module docstring). crop_size: the template crop that
    `embed_face` warps to before resizing to 112 (224 = ConsisID's metric code).

    In the evaluation (FaceSim-Cur = `face_sim/curricularface`), params.yaml sets
    `eval.face_backends: [curricularface]` and `eval.face_backend_options: {curricularface: {weights: FILE}}`
    (plus `detector: insightface, detector_options: {model_dir: DIR}` for SCRFD detection).
    """

    name = "curricularface"
    embedding_dim = EMBEDDING_DIM
    verification_threshold = CURRICULARFACE_COSINE_THRESHOLD

    def __init__(self, weights: str | Path, detector: str = "dlib", detector_options: dict | None = None,
                 device: str = "cpu", layout: str = "auto", crop_size: int = REFERENCE_CROP_SIZE) -> None:
        from ingredients.faces.registry import build_analyzer

        if detector == self.name:
            raise ValueError(f"detector must be another face backend than {self.name!r} (it only embeds); "
                             "use 'dlib' or 'insightface'")
        if layout not in ("auto", *LAYOUTS):
            raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")
        if int(crop_size) < INPUT_SIZE:
            raise ValueError(f"crop_size must be >= {INPUT_SIZE}, got {crop_size}")
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device: not a torch device string: {device!r}") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device; use device='cpu'")
        self.weights = resolve_weights(weights)
        self.crop_size = int(crop_size)
        self.detector = build_analyzer(detector, **dict(detector_options or {}))
        self.model = load_ir101(self.weights, layout).to(self.device)
        self.layout = self.model.layout
        logger.info("CurricularFace IR-101 (%s layout) from %s on %s; detector %r",
                    self.layout, self.weights, self.device, detector)

    @property
    def identity(self) -> dict:
        """What determines this backend's outputs (for cache keys); hashes the weights once."""
        detector_identity = getattr(self.detector, "identity", None)
        return {"backend": self.name, "weights": model_file_digests({"weights": self.weights})["weights"], "layout": self.layout, "crop_size": self.crop_size,
                "detector": dict(detector_identity) if detector_identity is not None else self.detector.name}

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces with 5 landmarks, as the detector backend finds them."""
        return self.detector.detect(image)

    def align(self, image: np.ndarray, face: Face, size: int = INPUT_SIZE) -> np.ndarray:
        """5-point similarity warp onto the ArcFace template scaled to `size`; uint8 [size, size, 3]."""
        return align_to_template(check_rgb_array(image), face.landmarks, size)

    @torch.inference_mode()
    def embed_batch(self, crops: Sequence[np.ndarray], normalize: bool = True) -> np.ndarray:
        """[N, 512] float32 vectors of aligned square RGB crops (any size; resized to 112)."""
        x = to_network_input(crops).to(self.device)
        out = self.model(x).float()  # [N, 512]
        norms = out.norm(dim=1)
        if not torch.isfinite(out).all() or (norms == 0).any():
            raise RuntimeError(f"CurricularFace network ({self.weights}) returned non-finite or zero vectors")
        if normalize:
            out = out / norms[:, None]
        return out.cpu().numpy().astype(np.float32)

    def embed(self, aligned: np.ndarray) -> np.ndarray:
        """L2-normalised 512-d vector of an ArcFace-aligned RGB crop."""
        return self.embed_batch([aligned])[0]

    def embed_face(self, image: np.ndarray, face: Face, normalize: bool = True) -> np.ndarray:
        """Vector of `face` as ConsisID's FaceSim-Cur computes it: template crop at `crop_size`, resized to 112."""
        return self.embed_batch([self.align(image, face, self.crop_size)], normalize=normalize)[0]
