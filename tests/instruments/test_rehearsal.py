"""The full profile's rehearsal: a weights tree in every released layout, prepared and loaded through
the full profile's own code (params.yaml + profiles/full.yaml + profiles/rehearsal.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from ingredients.config import ParamsError, load_merged
from ingredients.model_folder.folder import face_settings, load_face_conditioner, load_pipeline
from ingredients.model_folder.prepare import main
from instruments.onnx_stand_ins import BrightestCellSCRFD, write_fake_antelopev2
from instruments.rehearsal import (
    FRAMES,
    HEIGHT,
    WIDTH,
    write_backbone,
    write_clip_score,
    write_ingredients_release,
)
from instruments.rehearsal import main as rehearsal_main

REPO = Path(__file__).resolve().parents[2]
PREFIX = "weights_rehearsal"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """The tree without its two big files (EVA-CLIP, IR-101: empty placeholders, which the prepare
    stage only checks for); `full_tree` writes everything."""
    root = tmp_path_factory.mktemp("rehearsal") / PREFIX
    write_backbone(root / "CogVideoX-5b-I2V", 0)
    write_fake_antelopev2(root / "face_encoder", detector=BrightestCellSCRFD())
    (root / "face_encoder/EVA02_CLIP_L_336_psz14_s6B.pt").touch()
    write_ingredients_release(root / "Ingredients", root / "CogVideoX-5b-I2V", 0)
    (root / "curricularface").mkdir()
    (root / "curricularface/glint360k_curricular_face_r101_backbone.bin").touch()
    write_clip_score(root / "open_clip/ViT-L-14/open_clip_pytorch_model.bin", 0)
    return root


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rehearsal_full") / PREFIX
    rehearsal_main(["--out", str(root)])
    return root


def _into(value, root: Path):
    """Every `weights_rehearsal/...` string of the params, pointed into `root`."""
    if isinstance(value, dict):
        return {k: _into(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_into(v, root) for v in value]
    if isinstance(value, str) and value.startswith(PREFIX + "/"):
        return str(root / value[len(PREFIX) + 1:])
    return value


def merged_params(tmp_path: Path, root: Path, **sections) -> Path:
    """params.yaml + full.yaml + rehearsal.yaml merged, paths into `root`, `sections` merged on top."""
    params = _into(load_merged(REPO / "params.yaml", (REPO / "profiles/full.yaml", REPO / "profiles/rehearsal.yaml")), root)
    for name, values in sections.items():
        params[name] = {**params.get(name, {}), **values}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def prepare(tmp_path: Path, root: Path, name: str = "base", **sections) -> Path:
    out = tmp_path / name
    main(["--params", str(merged_params(tmp_path, root, **sections)), "--out", str(out)])
    return out


@pytest.mark.slow
def test_the_tree_has_every_layout_and_diffusers_loads_the_backbone(full_tree):
    from diffusers import CogVideoXImageToVideoPipeline

    params = yaml.safe_load((REPO / "profiles/rehearsal.yaml").read_text())
    for key, value in params["prepare"]["full"].items():
        if value is not None:
            assert (full_tree.parent / value).exists(), key
    tree = full_tree
    pipe = CogVideoXImageToVideoPipeline.from_pretrained(tree / "CogVideoX-5b-I2V", local_files_only=True)
    assert pipe.transformer.config.in_channels == 32 and pipe.tokenizer("a man").input_ids[-1] == 1  # </s>
    released = json.loads((tree / "Ingredients/transformer/config.json").read_text())
    assert {"is_train_face", "cross_attn_interval", "LFE_num_tokens", "LFE_output_dim", "LFE_heads",
            "local_face_scale", "is_kps"} <= set(released)
    for name in ("detection_Resnet50_Final.pth", "parsing_bisenet.pth", "models/antelopev2/glintr100.onnx"):
        assert (tree / "Ingredients/face_encoder" / name).is_file()


@pytest.mark.slow
def test_eva_clip_file_is_in_the_original_format_and_converts(full_tree):
    import open_clip

    from ingredients.faces.eva_clip import FULL_MODEL_NAME, checkpoint_format, convert_eva_original_visual, read_state_dict

    state = read_state_dict(full_tree / "face_encoder/EVA02_CLIP_L_336_psz14_s6B.pt")
    assert checkpoint_format(state) == "eva_original"
    trunk = open_clip.create_model(FULL_MODEL_NAME, device="meta").visual.trunk
    converted = convert_eva_original_visual(state, trunk)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in trunk.state_dict().items()}


def test_prepared_full_folder_loads_with_faces_settings_and_device(tree, tmp_path):
    out = prepare(tmp_path, tree, faces={"device": "cuda:1"})
    pipe = load_pipeline(out)
    assert pipe.transformer.config.vit_dim == 1024 and pipe.transformer.config.extractor_dim == 64
    assert pipe.transformer.config.sample_height == HEIGHT // 8 and pipe.transformer.config.sample_width == WIDTH // 8
    settings = face_settings(out)
    assert settings["device"] == "cuda:1" and settings["canvas_width"] == WIDTH
    assert settings["model_dir"] == str((tree / "face_encoder/models/antelopev2").resolve())
    assert json.loads((out / "prepare.json").read_text())["transformer"]["id_token_dim"] == 64


def test_backbone_init_t2v_zeroes_the_image_channels(tree, tmp_path):
    i2v = load_pipeline(prepare(tmp_path, tree, "i2v")).transformer.patch_embed.proj.weight
    t2v = load_pipeline(prepare(tmp_path, tree, "t2v", prepare={"backbone_init": "t2v"})).transformer.patch_embed.proj.weight
    half = i2v.shape[1] // 2  # [D, 2C, p, p]: noisy latents first, image latents second
    assert torch.count_nonzero(i2v[:, half:]) > 0 and torch.count_nonzero(t2v[:, half:]) == 0
    assert torch.equal(i2v[:, :half], t2v[:, :half])


def test_released_folder_loads_converted_and_prepares_with_honoured_overrides(tree, tmp_path):
    released = load_pipeline(tree / "Ingredients")
    assert type(released.transformer).__name__ == "IngredientsTransformer3DModel"
    out = prepare(tmp_path, tree, prepare={"full": {**yaml.safe_load(merged_params(tmp_path, tree).read_text())["prepare"]["full"],
                                                    "ingredients": str(tree / "Ingredients")},
                                           "transformer": {"local_face_scale": 0.5}})
    prepared = load_pipeline(out).transformer
    assert prepared.config.local_face_scale == 0.5
    state = released.transformer.state_dict()
    assert all(torch.equal(v.bfloat16(), state[k].bfloat16()) for k, v in prepared.state_dict().items()
               if k.startswith("router."))


def test_settings_the_stage_cannot_honour_name_their_key(tree, tmp_path):
    full = yaml.safe_load(merged_params(tmp_path, tree).read_text())["prepare"]["full"]
    release = {**full, "ingredients": str(tree / "Ingredients")}
    with pytest.raises(ParamsError, match=r"prepare\.transformer\.num_queries"):
        prepare(tmp_path, tree, "a", prepare={"full": release, "transformer": {"num_queries": 4}})
    with pytest.raises(ParamsError, match=r"prepare\.backbone_init"):
        prepare(tmp_path, tree, "b", prepare={"full": release, "backbone_init": "t2v"})
    with pytest.raises(ParamsError, match=r"faces\.model_dir"):
        prepare(tmp_path, tree, "c", faces={"model_dir": str(tmp_path)})
    assert not any((tmp_path / name).exists() for name in "abc")


@pytest.mark.slow
def test_prepared_face_stack_loads_and_conditions_a_photo(full_tree, tmp_path):
    """EVA-CLIP is written at its real size (its loader builds EVA02-L-14-336 by name): slow on CPU."""
    from ingredients.data.packaged_photos import photo_path

    out = prepare(tmp_path, full_tree)
    pipe = load_pipeline(out)
    faces = load_face_conditioner(out, pipe)
    photo = photo_path("hanks")
    conditioning = faces([photo], use_cache=False)
    assert conditioning.id_cond.shape == (1, 1280) and conditioning.id_vit_hidden[0].shape == (1, 577, 1024)
    assert conditioning.canvas.size == (WIDTH, HEIGHT) and FRAMES == 9
