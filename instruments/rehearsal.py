"""A weights tree in every released layout the full profile reads, with tiny random weights.

    python -m instruments.rehearsal --out weights_rehearsal/ [--seed 0]

It mirrors `weights/` of profiles/full.yaml, so profiles/rehearsal.yaml points every `prepare.full`
key (and the faces / curate / eval paths) into it and the full profile runs on CPU through its own
code, exactly the code the real run uses:

    CogVideoX-5b-I2V/     diffusers CogVideoX-I2V folder: tiny CogVideoXTransformer3DModel (in_channels
                          32), AutoencoderKLCogVideoX, T5EncoderModel, T5 tokenizer (spiece.model, a
                          sentencepiece unigram model trained here), CogVideoXDPMScheduler, model_index.json
    Ingredients/          the authors' released folder: transformer/ in their parameter names and config
                          keys, the backbone's other components, face_encoder -> ../face_encoder
    face_encoder/         models/antelopev2/{scrfd_10g_bnkps,glintr100}.onnx (ONNX stand-ins with the real
                          signatures), EVA02_CLIP_L_336_psz14_s6B.pt (original EVA-CLIP keys), facexlib's
                          detection_Resnet50_Final.pth and parsing_bisenet.pth
    curricularface/       glint360k_curricular_face_r101_backbone.bin (IR-101 state dict, TFace keys)
    open_clip/ViT-L-14/   open_clip_pytorch_model.bin + rehearsal-clip.json (a tiny open_clip config)

Tiny where the loaders read the architecture from the files (backbone, VAE, T5, identity modules,
CLIP for clip_score). EVA-CLIP and IR-101 are written at their real architecture (random, float16):
their loaders build EVA02-L-14-336 and IR-101 by name, so nothing smaller would load.
Everything is deterministic in the seed.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm import tqdm

logger = logging.getLogger(__name__)

# sizes the rehearsal runs at (profiles/rehearsal.yaml): 9 frames of 64 x 96 -> latents 3 x 8 x 12
FRAMES, HEIGHT, WIDTH = 9, 64, 96
TEXT_DIM = 32
BACKBONE = "CogVideoX-5b-I2V"
INGREDIENTS = "Ingredients"
EVA_FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"
CURRICULARFACE_FILE = "glint360k_curricular_face_r101_backbone.bin"
CLIP_SCORE_MODEL = "rehearsal-clip"

# CogVideoX-5B-I2V's transformer config at toy width (learned positional embeddings fix the size)
BACKBONE_CONFIG: dict[str, Any] = {
    "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 32, "out_channels": 16,
    "time_embed_dim": 32, "text_embed_dim": TEXT_DIM, "num_layers": 4, "sample_width": WIDTH // 8,
    "sample_height": HEIGHT // 8, "sample_frames": FRAMES, "patch_size": 2, "temporal_compression_ratio": 4,
    "max_text_seq_length": 226, "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": True,
}
# identity modules at toy width (profiles/rehearsal.yaml prepare.transformer); id_embed_dim and vit_dim
# stay the full face stack's: glintr100 512 + EVA-CLIP 768, EVA-CLIP width 1024
FACE_CONFIG: dict[str, Any] = {
    "cross_attn_interval": 2, "id_embed_dim": 1280, "vit_dim": 1024, "mapping_hidden_dim": 64, "extractor_dim": 64,
    "extractor_depth": 5, "extractor_dim_head": 16, "extractor_heads": 4, "extractor_ff_mult": 2,
    "num_queries": 8, "id_token_dim": 64, "injector_dim_head": 16, "injector_heads": 2, "router_dim": 32,
}
# our config keys -> the released config.json's names (ingredients.models.reference_format)
RELEASED_NAMES = {"num_queries": "LFE_num_tokens", "id_token_dim": "LFE_output_dim", "extractor_heads": "LFE_heads"}
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["CogVideoXDownBlock3D"] * 4,
    "up_block_types": ["CogVideoXUpBlock3D"] * 4, "block_out_channels": [8, 8, 16, 16], "latent_channels": 16,
    "layers_per_block": 1, "norm_num_groups": 4, "temporal_compression_ratio": 4, "scaling_factor": 0.7,
    "sample_height": HEIGHT, "sample_width": WIDTH,
}
T5_CONFIG: dict[str, Any] = {"vocab_size": 160, "d_model": TEXT_DIM, "d_kv": 8, "d_ff": 64, "num_layers": 2,
                             "num_heads": 4, "relative_attention_num_buckets": 8, "feed_forward_proj": "gated-gelu"}
TOKENIZER_SENTENCES = (
    "a person talking in a park", "two people walking on a beach at sunset", "a woman smiles at the camera",
    "a man drives a car through the city", "two friends laugh together in a kitchen",
    "an old man reads a book by the window", "a girl and a boy dance at a party",
)
# a tiny open_clip CLIP for clip_score, registered under CLIP_SCORE_MODEL from its JSON file
CLIP_SCORE_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block on a forked RNG seeded with `seed` (the caller's RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------------------ backbone

def write_t5_tokenizer(folder: Path) -> None:
    """T5's tokenizer format: spiece.model (sentencepiece unigram, trained on a few sentences) + config."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TOKENIZER_SENTENCES * 3), model_writer=model, vocab_size=48, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
        seed_sentencepiece_size=1000, num_threads=1)
    (folder / "spiece.model").write_bytes(model.getvalue())
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 100, "model_max_length": 226, "eos_token": "</s>",
              "unk_token": "<unk>", "pad_token": "<pad>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def write_backbone(folder: Path, seed: int) -> Path:
    """A diffusers CogVideoX-I2V folder loadable by CogVideoXImageToVideoPipeline.from_pretrained."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from ingredients.model_folder.tiny import SCHEDULER_CONFIG

    tokenizer_dir = folder / "tokenizer"
    write_t5_tokenizer(tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if len(tokenizer) > T5_CONFIG["vocab_size"]:
        raise RuntimeError(f"the trained tokenizer has {len(tokenizer)} tokens, more than T5_CONFIG's vocab_size")
    with seeded(seed):
        transformer = CogVideoXTransformer3DModel(**BACKBONE_CONFIG)
        vae = AutoencoderKLCogVideoX(**VAE_CONFIG)
        text_encoder = T5EncoderModel(T5Config(**T5_CONFIG))
    pipe = CogVideoXImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(),
                                         transformer=transformer.eval(), scheduler=CogVideoXDPMScheduler(**SCHEDULER_CONFIG))
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(tokenizer_dir)  # the release ships spiece.model, not save_pretrained's tokenizer.json
    write_t5_tokenizer(tokenizer_dir)
    return folder


def write_ingredients_release(folder: Path, backbone: Path, seed: int) -> Path:
    """The authors' released folder: transformer/ in their format, the backbone's other components.

    config.json carries their face keys (is_train_face, cross_attn_interval, LFE_*, local_face_scale,
    is_kps) and, under our names, the identity sizes the reference hard-codes at full size.
    """
    from safetensors.torch import save_file

    from ingredients.models import IngredientsTransformer3DModel

    with seeded(seed + 1):
        model = IngredientsTransformer3DModel.from_backbone(backbone / "transformer", **FACE_CONFIG)
    transformer = folder / "transformer"
    transformer.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(transformer / "diffusion_pytorch_model.safetensors"))
    config: dict[str, Any] = {"_class_name": "CogVideoXTransformer3DModel", "_diffusers_version": "0.32.0",
                              **BACKBONE_CONFIG, "is_train_face": True, "is_kps": False, "local_face_scale": 1.0}
    for key, value in FACE_CONFIG.items():
        config[RELEASED_NAMES.get(key, key)] = value
    (transformer / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("vae", "text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(backbone / name, folder / name, dirs_exist_ok=True)
    shutil.copy2(backbone / "model_index.json", folder / "model_index.json")
    link = folder / "face_encoder"
    if not link.exists():
        link.symlink_to(Path("..") / "face_encoder", target_is_directory=True)
    return folder


# ------------------------------------------------------------------------------------------ face stack

def _trunk_key_to_original(key: str) -> str:
    """A timm Eva trunk key -> the original EVA-CLIP name (the inverse of timm's checkpoint_filter_fn)."""
    for ours, theirs in (("attn.norm.", "attn.inner_attn_ln."), ("mlp.norm.", "mlp.ffn_ln."),
                         ("mlp.fc1_g.", "mlp.w1."), ("mlp.fc1_x.", "mlp.w2."), ("mlp.fc2.", "mlp.w3."),
                         ("attn.q_proj.bias", "attn.q_bias"), ("attn.v_proj.bias", "attn.v_bias")):
        key = key.replace(ours, theirs)
    return "visual." + key


def eva_original_state(seed: int) -> dict[str, torch.Tensor]:
    """Random EVA02-CLIP-L-14-336 weights under the original EVA-CLIP keys (float16, as released)."""
    import open_clip

    from ingredients.faces.eva_clip import FULL_MODEL_NAME

    shapes = {k: v.shape for k, v in open_clip.create_model(FULL_MODEL_NAME, device="meta").visual.trunk.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in tqdm(shapes.items(), desc="EVA-CLIP (original keys)", leave=False):
        if len(shape) == 1 and "norm" in key and key.endswith(".weight"):
            value = torch.ones(shape)
        elif len(shape) == 1 and key.endswith("bias"):
            value = torch.zeros(shape)
        else:
            value = torch.randn(shape, generator=generator) * 0.02
        state[_trunk_key_to_original(key)] = value.half()
    grid = (336 // 14) ** 2
    state["visual.rope.freqs_cos"] = torch.zeros(grid, 64).half()  # recomputed on load, dropped by the converter
    state["visual.rope.freqs_sin"] = torch.zeros(grid, 64).half()
    state["text.positional_embedding"] = torch.zeros(77, 768).half()  # the text tower's keys are dropped too
    state["logit_scale"] = torch.tensor(4.6052)
    return state


def write_facexlib(folder: Path, seed: int) -> None:
    """facexlib's RetinaFace-ResNet50 and BiSeNet as the .pth state dicts it loads (random, seeded).

    RetinaFace's class head is set so that the 512 px anchors of stride 32 score 0.9999 on any image
    (one face survives NMS), as in tests/faces/facexlib_fakes.py.
    """
    import warnings

    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.bisenet import BiSeNet

    from ingredients.faces.facexlib_alignment import DETECTION_FILE, PARSING_FILE

    with seeded(seed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detector = RetinaFace(network_name="resnet50", half=False, device="cpu")
        parser = BiSeNet(num_class=19)
    state = {k: v.clone() for k, v in detector.state_dict().items()}
    for level in range(3):  # channels per anchor: class 2, box 4, landmarks 10; anchors (small, big)
        for head in ("ClassHead", "BboxHead", "LandmarkHead"):
            state[f"{head}.{level}.conv1x1.weight"].zero_()
            state[f"{head}.{level}.conv1x1.bias"].zero_()
        big = (-5.0, 5.0) if level == 2 else (5.0, -5.0)
        state[f"ClassHead.{level}.conv1x1.bias"].copy_(torch.tensor([5.0, -5.0, *big]))
    torch.save(state, folder / DETECTION_FILE)
    torch.save(parser.state_dict(), folder / PARSING_FILE)


def write_face_encoder(folder: Path, seed: int) -> Path:
    """face_encoder/: antelopev2 ONNX stand-ins, EVA-CLIP in its original format, facexlib's weights."""
    from instruments.onnx_stand_ins import BrightestCellSCRFD, write_fake_antelopev2

    folder.mkdir(parents=True, exist_ok=True)
    write_fake_antelopev2(folder, seed=seed, detector=BrightestCellSCRFD())
    torch.save(eva_original_state(seed), folder / EVA_FILE)
    write_facexlib(folder, seed)
    return folder


def write_curricularface(path: Path, seed: int) -> Path:
    """An IR-101 state dict in TFace's keys (float16; the loader reads it as float32)."""
    from ingredients.faces.curricularface_backend import build_ir101

    with seeded(seed):
        model = build_ir101("tface").eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    return path


def write_clip_score(path: Path, seed: int) -> Path:
    """A tiny open_clip CLIP: weights at `path`, its config beside it as `rehearsal-clip.json`."""
    import open_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    config_path = path.parent / f"{CLIP_SCORE_MODEL}.json"
    config_path.write_text(json.dumps(CLIP_SCORE_CONFIG, indent=2) + "\n")
    open_clip.add_model_config(config_path)
    with seeded(seed):
        model = open_clip.create_model(CLIP_SCORE_MODEL, pretrained=None, device="cpu")
    torch.save(model.state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------ the tree

def write_rehearsal_tree(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every layout under `out`; returns the paths of profiles/full.yaml's `prepare.full` keys."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "backbone": out / BACKBONE,
        "ingredients": out / INGREDIENTS,
        "antelopev2": out / "face_encoder" / "models" / "antelopev2",
        "eva_clip": out / "face_encoder" / EVA_FILE,
        "curricularface": out / "curricularface" / CURRICULARFACE_FILE,
        "clip_score": out / "open_clip" / "ViT-L-14" / "open_clip_pytorch_model.bin",
    }
    steps = [
        ("CogVideoX-I2V folder", lambda: write_backbone(paths["backbone"], seed)),
        ("face_encoder (antelopev2, EVA-CLIP, facexlib)", lambda: write_face_encoder(out / "face_encoder", seed)),
        ("authors' Ingredients folder", lambda: write_ingredients_release(paths["ingredients"], paths["backbone"], seed)),
        ("CurricularFace IR-101", lambda: write_curricularface(paths["curricularface"], seed)),
        ("open_clip for clip_score", lambda: write_clip_score(paths["clip_score"], seed)),
    ]
    for what, step in tqdm(steps, desc="rehearsal weights"):
        logger.info("writing %s", what)
        step()
    logger.info("rehearsal weights tree at %s", out)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instruments.rehearsal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("weights_rehearsal"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_rehearsal_tree(args.out, args.seed)


if __name__ == "__main__":
    main()
