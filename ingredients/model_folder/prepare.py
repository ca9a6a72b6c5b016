"""Prepare stage: the model folder every later stage starts from.

    python -m ingredients.model_folder.prepare --params params.yaml --out models/base [--raw data/raw]

- tiny profile: build the toy model folder offline (`ingredients.model_folder.prepare_tiny_folder`)
  and fit its VAE briefly on clips of the tiny raw videos, so that decoded samples look like the data;
- full profile: check every weight file the profile needs and fail within seconds naming each missing
  one with the command that fetches it; then assemble the folder from CogVideoX-5B-I2V (backbone
  weights into IngredientsTransformer3DModel, identity modules newly initialised, or the authors'
  released transformer when `prepare.full.ingredients` is set).
The folder is built in a temporary sibling and renamed into place, so a killed run leaves nothing
that the next stage would take for a finished model.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from ingredients.files.atomic import atomic_dir, write_json
from ingredients.config import ParamsError, load_params, section, stage_parser, validate_model
from ingredients.faces.reference import FaceSettings

logger = logging.getLogger(__name__)


class FullFolders(BaseModel):
    """Where the full profile's weights live (see README, 'Full profile')."""

    model_config = ConfigDict(extra="forbid")
    backbone: str = "weights/CogVideoX-5b-I2V"   # or a CogVideoX-5b (text-to-video) folder with backbone_init t2v
    ingredients: str | None = None
    antelopev2: str = "weights/face_encoder/models/antelopev2"
    eva_clip: str = "weights/face_encoder/EVA02_CLIP_L_336_psz14_s6B.pt"
    curricularface: str = "weights/curricularface/glint360k_curricular_face_r101_backbone.bin"
    clip_score: str = "weights/open_clip/ViT-L-14/open_clip_pytorch_model.bin"


class PrepareParams(BaseModel):
    """Model preparation: `tiny` builds and saves the toy model (and fits its VAE briefly on the tiny
    clips); `full` checks the local weight folders and assembles the model folder."""

    model_config = ConfigDict(extra="forbid")
    profile: Literal["tiny", "full"] = "tiny"
    seed: int = 0
    # i2v: the image-to-video backbone as it is; t2v: a text-to-video backbone whose image-condition
    # input channels start at zero (the paper's text-to-video initialisation ablation)
    backbone_init: Literal["i2v", "t2v"] = "i2v"
    # IngredientsTransformer3DModel config keys replacing the profile's (e.g. cross_attn_interval)
    transformer: dict[str, Any] = Field(default_factory=dict)
    # tiny: AutoencoderKLCogVideoX config keys replacing the tiny VAE's (block_out_channels,
    # latent_channels...); the transformer follows its latent channels and grid
    vae: dict[str, Any] = Field(default_factory=dict)
    vae_fit_steps: int = Field(40, ge=0)
    vae_fit_lr: float = Field(2e-3, gt=0)
    vae_fit_videos: int = Field(6, ge=1)
    vae_fit_video_frames: int = Field(9, ge=1)  # frames read from the start of each fitted video
    vae_fit_frames: int = Field(9, ge=1)  # frames per fitted sample (1: single frames), 4 k + 1
    vae_fit_batch: int = Field(1, ge=1)
    full: FullFolders = Field(default_factory=FullFolders)

    @field_validator("vae")
    @classmethod
    def _vae_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        from ingredients.model_folder.tiny import tiny_vae_config

        try:
            tiny_vae_config(**value)
        except ValueError as exc:  # the stage would fail building the model
            raise ValueError(f"prepare.vae: {exc}") from None
        return value

    @field_validator("vae_fit_frames")
    @classmethod
    def _fit_frames(cls, value: int, info: Any) -> int:
        read = info.data.get("vae_fit_video_frames", 9)
        if (value - 1) % 4 or read % value:
            raise ValueError(f"prepare.vae_fit_frames: {value} must be 4 k + 1 (the VAE compresses time by 4) and "
                             f"divide prepare.vae_fit_video_frames ({read}), e.g. 1 (single frames) or {read}")
        return value

    @field_validator("transformer")
    @classmethod
    def _transformer_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        allowed = transformer_config_keys()
        unknown = sorted(set(value) - allowed)
        if unknown:  # the stage would fail building the model, after the stages before it ran
            raise ValueError(f"prepare.transformer.{unknown[0]}: unknown key; allowed keys here: {', '.join(sorted(allowed))}")
        return value


def transformer_config_keys() -> set[str]:
    """The config keys of IngredientsTransformer3DModel (what `prepare.transformer` may set)."""
    from ingredients.models import IngredientsTransformer3DModel

    return set(inspect.signature(IngredientsTransformer3DModel.__init__).parameters) - {"self"}


@dataclass(frozen=True)
class RequiredFile:
    """A file the full profile needs, and how to get it on a machine with internet."""

    path: Path
    what: str
    fetch: str


def required_full_files(params: PrepareParams) -> list[RequiredFile]:
    """Every file the full profile reads (CogVideoX-5B-I2V, antelopev2, EVA-CLIP, CurricularFace, CLIP)."""
    f = params.full
    backbone = Path(f.backbone)
    fetch_backbone = f"hf download THUDM/CogVideoX-5b-I2V --local-dir {backbone}"
    files = [
        RequiredFile(backbone / "model_index.json", "CogVideoX-5B-I2V pipeline index", fetch_backbone),
        RequiredFile(backbone / "transformer" / "config.json", "CogVideoX-5B-I2V transformer config", fetch_backbone),
        RequiredFile(backbone / "vae" / "config.json", "CogVideoX VAE config", fetch_backbone),
        RequiredFile(backbone / "text_encoder" / "config.json", "T5-XXL text encoder config", fetch_backbone),
        RequiredFile(backbone / "tokenizer" / "spiece.model", "T5 tokenizer", fetch_backbone),
        RequiredFile(backbone / "scheduler" / "scheduler_config.json", "scheduler config", fetch_backbone),
        RequiredFile(Path(f.antelopev2) / "scrfd_10g_bnkps.onnx", "insightface antelopev2 SCRFD detector",
                     f"hf download DIAMONIK7777/antelopev2 --local-dir {f.antelopev2}"),
        RequiredFile(Path(f.antelopev2) / "glintr100.onnx", "insightface antelopev2 glintr100 recognizer",
                     f"hf download DIAMONIK7777/antelopev2 --local-dir {f.antelopev2}"),
        RequiredFile(Path(f.eva_clip), "EVA02-CLIP-L-14-336 weights",
                     f"hf download QuanSun/EVA-CLIP EVA02_CLIP_L_336_psz14_s6B.pt --local-dir {Path(f.eva_clip).parent}"),
        RequiredFile(Path(f.curricularface), "CurricularFace IR-101 weights (FaceSim-Cur metric)",
                     f"hf download BestWishYsh/ConsisID-preview face_encoder/glint360k_curricular_face_r101_backbone.bin "
                     f"--local-dir {Path(f.curricularface).parent}"),
        RequiredFile(Path(f.clip_score), "open_clip ViT-L-14 weights (clip_score metric)",
                     f"hf download laion/CLIP-ViT-L-14-laion2B-s32B-b82K open_clip_pytorch_model.bin "
                     f"--local-dir {Path(f.clip_score).parent}"),
    ]
    if f.ingredients is not None:
        fetch = f"hf download feizc/Ingredients --local-dir {f.ingredients}"
        files.append(RequiredFile(Path(f.ingredients) / "transformer" / "config.json", "released Ingredients transformer", fetch))
    return files


def check_full_profile(params: PrepareParams) -> None:
    """Raise FileNotFoundError listing every missing file of the full profile with its fetch command."""
    missing = [r for r in required_full_files(params) if not r.path.is_file()]
    if missing:
        lines = [f"  {r.path}  ({r.what})\n      fetch: {r.fetch}" for r in missing]
        raise FileNotFoundError(
            f"the full profile needs {len(missing)} file(s) that are missing:\n" + "\n".join(lines)
            + "\nset the folders in params (prepare.full.*) if they live elsewhere"
        )


def fit_tiny_vae(vae, clips: np.ndarray, steps: int, lr: float, seed: int, batch_size: int = 1) -> list[float]:
    """Fit the tiny VAE to reconstruct clips [N, F, H, W, 3] uint8 (L1 + MSE + a tiny KL); returns the losses."""
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(clips).float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3)  # [N, F, H, W, 3] -> [N, 3, F, H, W]
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc="fitting the tiny VAE"):
        batch = data[torch.randint(len(data), (batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = (recon - batch).abs().mean() + (recon - batch).square().mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    vae.eval()
    return losses


def tiny_clips(raw: Path, num_videos: int, num_frames: int, size: int) -> np.ndarray:
    """Centre-cropped, resized clips [N, F, size, size, 3] from the first videos of a raw folder."""
    from PIL import Image

    from ingredients.files.video_io import read_video

    videos = sorted(raw.glob("*.mp4"))[:num_videos]
    if not videos:
        raise FileNotFoundError(f"no .mp4 videos in {raw} to fit the tiny VAE on (run the synth stage first)")
    clips = []
    for path in videos:
        frames, _ = read_video(path, 0, num_frames)
        if len(frames) < num_frames:
            continue
        h, w = frames.shape[1:3]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        clips.append(np.stack([np.asarray(Image.fromarray(f[y : y + s, x : x + s]).resize((size, size), Image.BICUBIC)) for f in frames]))
    if not clips:
        raise ValueError(f"no video in {raw} has {num_frames} frames")
    return np.stack(clips)


def zero_image_channels(transformer_dir: Path) -> None:
    """Zero the image-condition input channels of a saved transformer (text-to-video initialisation)."""
    from ingredients.models import IngredientsTransformer3DModel

    model = IngredientsTransformer3DModel.from_pretrained(transformer_dir)
    with torch.no_grad():
        weight = model.patch_embed.proj.weight  # [D, 2C, p, p]: noisy latents first, image latents second
        weight[:, weight.shape[1] // 2 :] = 0
    model.save_pretrained(transformer_dir)


def prepare_tiny(params: PrepareParams, out: Path, raw: Path | None, face_settings: dict | None = None) -> dict:
    """Build the tiny model folder into `out` (atomically) and fit its VAE on `raw` videos."""
    from ingredients.model_folder.folder import prepare_tiny_folder
    from ingredients.model_folder.tiny import TINY_HEIGHT

    with atomic_dir(out) as tmp:
        prepare_tiny_folder(tmp, seed=params.seed, face_settings=face_settings, vae=params.vae, **params.transformer)
        summary: dict = {"profile": "tiny", "seed": params.seed, "backbone_init": params.backbone_init}
        if params.backbone_init == "t2v":
            zero_image_channels(tmp / "transformer")
        if params.vae_fit_steps and raw is not None:
            from diffusers import AutoencoderKLCogVideoX

            vae = AutoencoderKLCogVideoX.from_pretrained(tmp / "vae")
            clips = tiny_clips(raw, params.vae_fit_videos, params.vae_fit_video_frames, TINY_HEIGHT)  # [N, Fv, H, W, 3]
            clips = clips.reshape(-1, params.vae_fit_frames, *clips.shape[2:])  # [N * Fv / f, f, H, W, 3]
            torch.manual_seed(params.seed)
            started = time.perf_counter()
            losses = fit_tiny_vae(vae, clips, params.vae_fit_steps, params.vae_fit_lr, params.seed, params.vae_fit_batch)
            logger.info("VAE fit: %d steps of %d x %s frames in %.0f s, loss %.4f -> %.4f", params.vae_fit_steps,
                        params.vae_fit_batch, clips.shape[1:], time.perf_counter() - started, losses[0], losses[-1])
            vae.save_pretrained(tmp / "vae")
            summary["vae_fit"] = {"steps": params.vae_fit_steps, "clips": len(clips), "first_loss": losses[0], "last_loss": losses[-1]}
        write_json(tmp / "prepare.json", summary)
    return summary


FACE_PATH_KEYS = ("model_dir", "clip_dir", "facexlib_dir")


def full_face_settings(params: PrepareParams, faces: Mapping[str, Any]) -> dict[str, Any]:
    """The `faces:` section as the folder's face settings: every key kept, paths made absolute.

    faces.model_dir / faces.clip_dir default to prepare.full.antelopev2 / eva_clip (the files the
    stage checked); a different path is an error naming both keys.
    """
    settings = dict(faces)
    validate_model(FaceSettings, settings, "faces")  # unknown keys and bad values name themselves
    checked = {"model_dir": ("antelopev2", params.full.antelopev2)}
    if settings.get("clip", "tiny") == "full":
        checked["clip_dir"] = ("eva_clip", params.full.eva_clip)
    for key, (full_key, path) in checked.items():
        if settings.get(key) is None:
            settings[key] = path
        elif Path(settings[key]).resolve() != Path(path).resolve():
            raise ParamsError(f"faces.{key}: {settings[key]!r} differs from prepare.full.{full_key} {path!r}, "
                              f"the file the prepare stage checks; set both to the same path")
    for key in FACE_PATH_KEYS:
        if settings.get(key) is not None:
            settings[key] = str(Path(settings[key]).resolve())
    return settings


def _backbone_is_t2v(transformer_dir: Path) -> bool:
    config = json.loads((transformer_dir / "config.json").read_text())
    return config["in_channels"] == config.get("out_channels", config["in_channels"])


def transformer_from_backbone(params: PrepareParams, dtype: torch.dtype):
    """Our transformer from the CogVideoX backbone, honouring backbone_init and prepare.transformer."""
    from ingredients.models import IngredientsTransformer3DModel

    folder = Path(params.full.backbone) / "transformer"
    if params.backbone_init == "i2v" and _backbone_is_t2v(folder):
        raise ParamsError(f"prepare.backbone_init: 'i2v' needs an image-to-video backbone, but prepare.full.backbone "
                          f"{params.full.backbone!r} is text-to-video (in_channels == out_channels); set "
                          f"backbone_init 't2v' or point prepare.full.backbone at CogVideoX-5b-I2V")
    model = IngredientsTransformer3DModel.from_backbone(folder, torch_dtype=dtype, **params.transformer)
    if params.backbone_init == "t2v":  # a T2V backbone arrives with zero image channels already
        with torch.no_grad():
            weight = model.patch_embed.proj.weight  # [D, 2C, p, p]: noisy latents first, image latents second
            weight[:, weight.shape[1] // 2 :] = 0
    return model


def transformer_from_release(params: PrepareParams, dtype: torch.dtype):
    """The authors' released transformer (converted), with prepare.transformer's keys applied.

    A key that changes its weights' names or shapes cannot be honoured: an error naming it.
    """
    from safetensors.torch import load_file

    from ingredients.models import IngredientsTransformer3DModel
    from ingredients.models.reference_format import config_from_reference

    folder = Path(params.full.ingredients) / "transformer"
    if params.backbone_init != "i2v":
        raise ParamsError(f"prepare.backbone_init: {params.backbone_init!r} cannot apply to the authors' released "
                          f"transformer (prepare.full.ingredients {params.full.ingredients!r}); use "
                          f"prepare.full.ingredients: null to start from a backbone")
    config = config_from_reference(json.loads((folder / "config.json").read_text()))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}: download the released Ingredients transformer")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for key, value in params.transformer.items():  # keys validated by PrepareParams
        with torch.device("meta"):
            probe = IngredientsTransformer3DModel(**{**config, key: value})
        probe_shapes = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
        if probe_shapes != shapes:
            changed = sorted(set(probe_shapes) ^ set(shapes) | {k for k in shapes if probe_shapes.get(k, shapes[k]) != shapes[k]})
            raise ParamsError(f"prepare.transformer.{key}: {value!r} changes the weights of the released transformer "
                              f"in {folder} (e.g. {changed[:3]}); only settings that keep its weights can be changed")
    model = IngredientsTransformer3DModel(**{**config, **params.transformer})
    model.load_state_dict(state, strict=True)
    return model.to(dtype=dtype)


def prepare_full(params: PrepareParams, out: Path, faces: Mapping[str, Any] | None = None,
                 dtype: torch.dtype = torch.bfloat16) -> dict:
    """Check the full profile's files, then assemble its model folder (backbone + face encoder).

    The transformer comes from the backbone (prepare.backbone_init) or the authors' release
    (prepare.full.ingredients), with prepare.transformer's keys; face_encoder/face_settings.json
    is the `faces:` section (`faces`, None = the reference's setup, RELEASED_FACE_SETTINGS).
    """
    check_full_profile(params)
    from ingredients.model_folder.folder import FACE_SETTINGS_FILE, RELEASED_FACE_SETTINGS

    f = params.full
    defaults = {k: v for k, v in RELEASED_FACE_SETTINGS.items() if k not in FACE_PATH_KEYS}
    settings = full_face_settings(params, defaults if faces is None else faces)
    with atomic_dir(out) as tmp:
        backbone = Path(f.backbone)
        for name in ("model_index.json", "vae", "text_encoder", "tokenizer", "scheduler"):
            src = backbone / name
            (tmp / name).symlink_to(src.resolve(), target_is_directory=src.is_dir())
        if f.ingredients is not None:
            model = transformer_from_release(params, dtype)
        else:
            model = transformer_from_backbone(params, dtype)
        model.save_pretrained(tmp / "transformer")
        face_dir = tmp / "face_encoder"
        face_dir.mkdir()
        write_json(face_dir / FACE_SETTINGS_FILE, settings)
        summary = {"profile": "full", "backbone": str(backbone), "ingredients": f.ingredients,
                   "backbone_init": params.backbone_init, "transformer": dict(params.transformer)}
        write_json(tmp / "prepare.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("ingredients.model_folder.prepare", __doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--raw", type=Path, help="tiny raw videos to fit the tiny VAE on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    all_params = load_params(args.params)
    params = validate_model(PrepareParams, section(all_params, "prepare", args.params), "prepare")
    validate_model(FaceSettings, section(all_params, "faces", args.params), "faces")  # checked here, written into the folder
    if params.profile == "full":
        try:
            check_full_profile(params)
        except FileNotFoundError as err:
            raise SystemExit(str(err)) from None
        summary = prepare_full(params, args.out, section(all_params, "faces", args.params))
        logger.info("full model folder at %s: %s", args.out, summary)
    else:
        summary = prepare_tiny(params, args.out, args.raw, section(all_params, "faces", args.params))
        logger.info("tiny model folder at %s: %s", args.out, summary)


if __name__ == "__main__":
    main()
