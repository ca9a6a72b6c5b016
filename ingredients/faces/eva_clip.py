"""EVA-CLIP face features through open_clip: a pooled, L2-normalised embedding plus 5 token maps.

Two kinds:
- full: open_clip's `EVA02-L-14-336` (timm trunk `eva02_large_patch14_clip_336`, 24 blocks of
  width 1024, 577 tokens, embed 768) with weights from a local file, either in open_clip format
  (hub `timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k`) or the authors' original EVA-CLIP
  format (`EVA02_CLIP_L_336_psz14_s6B.pt`, keys `visual.*`), converted with timm's EVA filter;
- tiny: an untrained open_clip VisionTransformer (image 64, patch 8 -> 65 tokens, width 64,
  12 layers, 4 heads, embed 32) built deterministically from a seed, for the offline tiny profile.

Hidden states are the INPUTS of blocks 4, 8, 12, 16, 20 (0-based) of the full tower, as the
reference EVA code collects them (`0 < idx <= 20 and idx % 4 == 0`, appended before running block
idx); the tiny tower uses the same relative depths, blocks 2, 4, 6, 8, 10 of 12. They are taken with
forward-pre-hooks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ingredients.files.atomic import write_bytes
from ingredients.files.weights_file import read_weights

logger = logging.getLogger(__name__)

FULL_MODEL_NAME = "EVA02-L-14-336"
FULL_HUB_ID = "timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k"
EVA_ORIGINAL_FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"
# files looked for, in this order, when the full model is given as a folder
FULL_FILE_CANDIDATES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", EVA_ORIGINAL_FILE)
FULL_DEPTH = 24
FULL_SCALE_BLOCKS = (4, 8, 12, 16, 20)
# EVA-CLIP normalises with the OpenAI CLIP statistics (open_clip.constants.OPENAI_DATASET_MEAN/STD)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TINY_KIND = "tiny-open-clip-vit"
TINY_CONFIG = {"image_size": 64, "patch_size": 8, "width": 64, "layers": 12, "heads": 4, "embed_dim": 32}
TINY_WEIGHTS_FILE = "model.safetensors"
TINY_CONFIG_FILE = "config.json"


def scale_blocks_for_depth(depth: int) -> tuple[int, ...]:
    """The 5 block indices whose inputs are taken, at the full model's relative depths (4/24 ... 20/24)."""
    blocks = tuple(int(round(depth * b / FULL_DEPTH)) for b in FULL_SCALE_BLOCKS)
    if len(set(blocks)) != len(blocks) or not all(0 < b < depth for b in blocks):
        raise ValueError(f"a tower of depth {depth} is too shallow for 5 distinct scales (got {blocks})")
    return blocks


@dataclass
class ClipFeatures:
    """pooled: [N, embed_dim] L2-normalised; hidden: 5 tensors [N, tokens, width], coarse to fine."""

    pooled: torch.Tensor
    hidden: list[torch.Tensor]


def to_gray(pixels: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB in [0, 1] -> luma replicated to 3 channels (the reference's `to_gray`)."""
    luma = 0.299 * pixels[:, 0:1] + 0.587 * pixels[:, 1:2] + 0.114 * pixels[:, 2:3]  # [N, 1, H, W]
    return luma.expand(-1, 3, -1, -1)


def module_digest(module: nn.Module) -> str:
    """sha256 over a module's state-dict names, shapes and bytes: its weight identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class ClipFaceEncoder(nn.Module):
    """A CLIP vision tower with the 5 block inputs hooked; `encode(crops)` -> ClipFeatures.

    visual: the tower (returns the projected embedding); blocks: its transformer blocks, in order.
    """

    def __init__(self, visual: nn.Module, blocks: nn.ModuleList, *, kind: str, image_size: int, width: int,
                 embed_dim: int, scale_blocks: tuple[int, ...], source: str,
                 mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> None:
        super().__init__()
        if len(scale_blocks) != 5 or max(scale_blocks) >= len(blocks):
            raise ValueError(f"need 5 block indices below {len(blocks)}, got {scale_blocks}")
        self.visual = visual.eval()
        self._blocks = list(blocks)
        self.kind = kind
        self.image_size = int(image_size)
        self.width = int(width)
        self.embed_dim = int(embed_dim)
        self.scale_blocks = tuple(int(b) for b in scale_blocks)
        self.source = source
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._digest: str | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens per hidden state (patches + class token)."""
        patch = self.visual_patch_size
        return (self.image_size // patch) ** 2 + 1

    @property
    def visual_patch_size(self) -> int:
        trunk = getattr(self.visual, "trunk", None)
        if trunk is not None:
            return int(trunk.patch_embed.patch_size[0])
        return int(self.visual.patch_size[0])

    @property
    def identity(self) -> dict:
        """What determines the features (for cache keys): kind, sizes, hooked blocks, weight digest."""
        if self._digest is None:
            self._digest = module_digest(self.visual)
        return {"kind": self.kind, "image_size": self.image_size, "width": self.width, "embed_dim": self.embed_dim,
                "scale_blocks": list(self.scale_blocks), "weights_sha256": self._digest}

    def preprocess(self, crops: np.ndarray | torch.Tensor, gray: bool = False,
                   background: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """uint8 crops [N, H, W, 3] -> normalised pixels [N, 3, S, S], as the reference prepares EVA-CLIP's input.

        Line by line as PKU-YuanGroup/ConsisID models/consisid_utils.py::process_face_embeddings (and
        feizc/Ingredients models/utils.py::process_face_embeddings_split, which skips the gray and
        background steps): RGB / 255; `to_gray` at the crop's resolution when `gray`; pixels where
        `background` (bool [N, H, W]) is True set to white (1.0); torchvision `resize` to the tower's
        size (bicubic, antialiased, not clamped); `normalize` with the OpenAI CLIP mean/std.
        """
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.functional import resize

        if isinstance(crops, np.ndarray):
            if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
                raise ValueError(f"crops must be uint8 [N, H, W, 3], got {crops.dtype} {crops.shape}")
            crops = torch.from_numpy(np.ascontiguousarray(crops))
        pixels = crops.permute(0, 3, 1, 2).float() / 255.0  # [N, H, W, 3] -> [N, 3, H, W]
        if gray:
            pixels = to_gray(pixels)
        if background is not None:
            mask = background if torch.is_tensor(background) else torch.from_numpy(np.asarray(background, dtype=bool))
            if mask.shape != (pixels.shape[0], *pixels.shape[-2:]):
                raise ValueError(f"background mask must be [N, H, W] = {[pixels.shape[0], *pixels.shape[-2:]]}, "
                                 f"got {list(mask.shape)}")
            pixels = torch.where(mask.bool()[:, None], torch.ones_like(pixels), pixels)
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            pixels = resize(pixels, [self.image_size, self.image_size], InterpolationMode.BICUBIC, antialias=True)
        device = self.mean.device
        return ((pixels.to(device) - self.mean) / self.std).to(self._dtype())

    def _dtype(self) -> torch.dtype:
        return next(self.visual.parameters()).dtype

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> ClipFeatures:
        """Normalised pixels [N, 3, S, S] -> ClipFeatures."""
        taken: dict[int, torch.Tensor] = {}

        def make_hook(index: int):
            def hook(module, args, kwargs):
                taken[index] = args[0] if args else kwargs["x"]
            return hook

        handles = [self._blocks[i].register_forward_pre_hook(make_hook(i), with_kwargs=True) for i in self.scale_blocks]
        try:
            pooled = self.visual(pixels)
        finally:
            for handle in handles:
                handle.remove()
        if isinstance(pooled, tuple):  # towers built with output_tokens return (pooled, tokens)
            pooled = pooled[0]
        missing = [i for i in self.scale_blocks if i not in taken]
        if missing:
            raise RuntimeError(f"hooks on blocks {missing} did not fire; is the tower's block list right?")
        hidden = [taken[i].float() for i in self.scale_blocks]
        for i, h in zip(self.scale_blocks, hidden):
            if h.shape[1:] != (self.num_tokens, self.width):  # [N, T, W]
                raise RuntimeError(f"block {i} input has shape {tuple(h.shape)}, expected [N, {self.num_tokens}, {self.width}]")
        pooled = F.normalize(pooled.float(), dim=-1)  # the reference: torch.div(x, torch.norm(x, 2, 1, True))
        return ClipFeatures(pooled=pooled, hidden=hidden)

    def encode(self, crops: np.ndarray | torch.Tensor, gray: bool = False,
               background: np.ndarray | torch.Tensor | None = None) -> ClipFeatures:
        """uint8 face crops [N, H, W, 3] -> ClipFeatures (on CPU, float32); see preprocess."""
        features = self(self.preprocess(crops, gray=gray, background=background))
        return ClipFeatures(pooled=features.pooled.cpu(), hidden=[h.cpu() for h in features.hidden])


# ---------------------------------------------------------------------------------------------- tiny

def _tiny_tower(config: Mapping[str, int]) -> nn.Module:
    from open_clip.transformer import VisionTransformer

    if config["width"] % config["heads"]:
        raise ValueError(f"width {config['width']} is not divisible by heads {config['heads']}")
    return VisionTransformer(image_size=config["image_size"], patch_size=config["patch_size"], width=config["width"],
                             layers=config["layers"], heads=config["heads"], mlp_ratio=4.0,
                             output_dim=config["embed_dim"])


def _wrap_tiny(visual: nn.Module, config: Mapping[str, int], source: str) -> ClipFaceEncoder:
    return ClipFaceEncoder(visual, visual.transformer.resblocks, kind="tiny", image_size=config["image_size"],
                           width=config["width"], embed_dim=config["embed_dim"],
                           scale_blocks=scale_blocks_for_depth(config["layers"]), source=source)


def build_tiny_clip(seed: int = 0) -> ClipFaceEncoder:
    """The tiny, UNTRAINED stand-in for EVA-CLIP, identical for a given seed (open_clip's own init)."""
    logger.warning("tiny CLIP vision tower built from seed %d is UNTRAINED: its features are random projections, "
                   "not EVA-CLIP features", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        visual = _tiny_tower(TINY_CONFIG)
    encoder = _wrap_tiny(visual, TINY_CONFIG, source=f"seed:{int(seed)}")
    encoder.seed = int(seed)
    return encoder



def save_tiny_clip(encoder: ClipFaceEncoder, folder: str | Path) -> Path:
    """Write `model.safetensors` + `config.json` into `folder` (atomically, file by file)."""
    from safetensors.torch import save

    if encoder.kind != "tiny":
        raise ValueError(f"save_tiny_clip saves the tiny tower only, got kind {encoder.kind!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.visual.state_dict().items()}
    write_bytes(folder / TINY_WEIGHTS_FILE, save(state))
    config = {"kind": TINY_KIND, **TINY_CONFIG, "scale_blocks": list(encoder.scale_blocks),
              "seed": getattr(encoder, "seed", None), "trained": False}
    write_bytes(folder / TINY_CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return folder


def load_tiny_clip(folder: str | Path) -> ClipFaceEncoder:
    """Load a tower written by save_tiny_clip."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / TINY_CONFIG_FILE, folder / TINY_WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"tiny CLIP file missing: {path}; create the folder with "
                                    f"ingredients.faces.eva_clip.save_tiny_clip(build_tiny_clip(seed), '{folder}')")
    config = json.loads(config_path.read_text())
    if config.get("kind") != TINY_KIND:
        raise ValueError(f"{config_path}: kind is {config.get('kind')!r}, expected {TINY_KIND!r}")
    arch = {k: int(config[k]) for k in TINY_CONFIG}
    visual = _tiny_tower(arch)
    visual.load_state_dict(load_file(str(weights_path)), strict=True)
    if not config.get("trained", False):
        logger.warning("tiny CLIP vision tower at %s is UNTRAINED: its features are random projections", folder)
    encoder = _wrap_tiny(visual, arch, source=str(folder))
    if tuple(config.get("scale_blocks", encoder.scale_blocks)) != encoder.scale_blocks:
        raise ValueError(f"{config_path}: scale_blocks {config['scale_blocks']} differ from {list(encoder.scale_blocks)}")
    encoder.seed = config.get("seed")
    return encoder


# ---------------------------------------------------------------------------------------------- full

def _unwrap_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("model_ema", "model", "module", "state_dict"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
    return dict(state)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors via safetensors or torch.load(weights_only=True), never pickle."""
    state = read_weights(path)
    return state if Path(path).suffix == ".safetensors" else _unwrap_state_dict(state)


def checkpoint_format(state: Mapping[str, Any]) -> str:
    """'open_clip' (keys visual.trunk.*), 'eva_original' (keys visual.blocks.*), else ValueError."""
    if "visual.trunk.pos_embed" in state:
        return "open_clip"
    if "visual.pos_embed" in state and "visual.blocks.0.norm1.weight" in state:
        return "eva_original"
    sample = sorted(state)[:6]
    raise ValueError(f"unrecognised EVA-CLIP checkpoint layout (first keys: {sample}); expected open_clip keys "
                     f"'visual.trunk.*' or the original EVA-CLIP keys 'visual.blocks.*'")


def convert_eva_original_visual(state: Mapping[str, torch.Tensor], trunk: nn.Module) -> dict[str, torch.Tensor]:
    """Original EVA-CLIP `visual.*` weights -> a state dict for the timm Eva `trunk`.

    Renames (through timm.models.eva.checkpoint_filter_fn): q_bias / v_bias -> q_proj.bias /
    v_proj.bias, attn.inner_attn_ln -> attn.norm, mlp.w1 / w2 / w3 -> mlp.fc1_g / fc1_x / fc2 (gate,
    value, output of SwiGLU), mlp.ffn_ln -> mlp.norm; drops the rotary buffers (`rope.*`, recomputed)
    and every non-visual key (text tower, logit_scale). `visual.head` becomes the trunk's head, which
    open_clip's TimmModel uses as the projection when `timm_proj` is null.
    """
    from timm.models.eva import checkpoint_filter_fn

    visual = {k: v for k, v in _unwrap_state_dict(state).items() if k.startswith("visual.")}
    if "visual.pos_embed" not in visual:
        raise ValueError("not an original EVA-CLIP checkpoint: no 'visual.pos_embed' key")
    return checkpoint_filter_fn(visual, trunk)


def resolve_full_clip_file(path: str | Path) -> Path:
    """The weight file for the full model: `path` itself, or the first known file inside a folder."""
    path = Path(path)
    fetch = (f"fetch the open_clip weights with `hf download {FULL_HUB_ID} open_clip_model.safetensors "
             f"--local-dir <folder>`, or use the authors' original {EVA_ORIGINAL_FILE} (hub repo QuanSun/EVA-CLIP)")
    if path.is_dir():
        for name in FULL_FILE_CANDIDATES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no EVA02-L-14-336 weights in {path}: looked for {', '.join(FULL_FILE_CANDIDATES)}; {fetch}")
    if not path.is_file():
        raise FileNotFoundError(f"EVA02-L-14-336 weight file missing: {path}; {fetch}")
    return path


def load_full_clip(path: str | Path, device: str | torch.device = "cpu") -> ClipFaceEncoder:
    """open_clip EVA02-L-14-336 from a local open_clip or original EVA-CLIP checkpoint (file or folder)."""
    import open_clip

    file = resolve_full_clip_file(path)
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as f:
            fmt = checkpoint_format(dict.fromkeys(f.keys()))
        state = None
    else:
        state = read_state_dict(file)
        fmt = checkpoint_format(state)
    if fmt == "open_clip":
        model = open_clip.create_model(FULL_MODEL_NAME, pretrained=str(file), device=device)
    else:
        model = open_clip.create_model(FULL_MODEL_NAME, pretrained=None, device="cpu")
        converted = convert_eva_original_visual(state, model.visual.trunk)
        missing, unexpected = model.visual.trunk.load_state_dict(converted, strict=False)
        if missing or unexpected:
            raise ValueError(f"{file}: converted EVA-CLIP weights do not fit open_clip's {FULL_MODEL_NAME}: "
                             f"missing {missing[:8]}, unexpected {unexpected[:8]}")
        model = model.to(device)
    visual = model.visual
    trunk = visual.trunk
    encoder = ClipFaceEncoder(visual, trunk.blocks, kind="full", image_size=int(trunk.patch_embed.img_size[0]),
                              width=int(trunk.embed_dim), embed_dim=int(model.embed_dim if hasattr(model, "embed_dim")
                                                                       else trunk.num_classes),
                              scale_blocks=FULL_SCALE_BLOCKS, source=str(file))
    return encoder.to(device)


def build_clip(kind: str, path: str | Path | None = None, seed: int = 0,
               device: str | torch.device = "cpu") -> ClipFaceEncoder:
    """kind 'tiny' (path: saved folder, or None to build from `seed`) or 'full' (path: file or folder)."""
    if kind == "tiny":
        encoder = load_tiny_clip(path) if path is not None else build_tiny_clip(seed)
        return encoder.to(device)
    if kind == "full":
        if path is None:
            raise ValueError(f"clip kind 'full' needs a weight path (a file or folder with {' / '.join(FULL_FILE_CANDIDATES)})")
        return load_full_clip(path, device=device)
    raise ValueError(f"unknown clip kind {kind!r}; valid kinds: full, tiny")
